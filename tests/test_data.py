import gzip
import math
import struct

import numpy as np
import pytest
import torch

from cnnlab import data as D
from cnnlab.data import (
    BENCHMARK_README,
    DatasetUnavailableError,
    load_dataset,
    published_benchmarks,
    read_idx,
    stratified_indices,
)


def write_idx(path, array, gz=True):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    blob = header + array.tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(blob)
    else:
        path.write_bytes(blob)


def fake_mnist_dir(folder, n_train=300, n_test=100, gz=True):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for stem, arr in files.items():
        write_idx(folder / f"{stem}{suffix}", arr, gz=gz)
    return files


@pytest.fixture()
def no_local_mnist(tmp_path, monkeypatch):
    """MNIST neither in a system folder, nor named by CNNLAB_MNIST_DIR, nor in the data home."""
    monkeypatch.setitem(D._SYSTEM_DIRS, "mnist", tmp_path / "nowhere")
    monkeypatch.delenv("CNNLAB_MNIST_DIR", raising=False)
    monkeypatch.setenv("CNNLAB_DATA_HOME", str(tmp_path / "home"))
    D._raw_idx.cache_clear()


def test_digits_shapes_and_normalization(digits):
    x, y = digits.train
    assert digits.name == "digits"
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    assert len(digits.train[1]) + len(digits.val[1]) + len(digits.test[1]) == 1797
    torch.testing.assert_close(x.mean(), torch.tensor(0.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(), torch.tensor(1.0), atol=1e-3, rtol=0)
    # the test split is normalized with training statistics, not its own
    assert abs(float(digits.test[0].mean())) < 0.2


def test_splits_are_disjoint_and_deterministic():
    a, b, c = load_dataset(seed=1), load_dataset(seed=1), load_dataset(seed=2)
    torch.testing.assert_close(a.train[0], b.train[0])
    torch.testing.assert_close(a.test[1], b.test[1])
    assert not torch.equal(a.train[1], c.train[1])
    # the three splits partition the raw images: together they are exactly the 1,797 digits
    mean, std = a.mean[0], a.std[0]
    parts = torch.cat([a.train[0], a.val[0], a.test[0]]).flatten(1) * std + mean
    raw = torch.as_tensor(D._raw_digits()[0]).flatten(1)
    key = lambda t: sorted(map(tuple, t.round().long().tolist()))  # noqa: E731
    assert key(parts) == key(raw)
    # a training subset is stratified
    small = load_dataset(train_size=100, seed=3)
    counts = torch.bincount(small.train[1], minlength=10)
    assert int(counts.sum()) == 100 and int(counts.min()) >= 9 and int(counts.max()) <= 11


def test_stratified_indices_keep_class_shares():
    labels = torch.tensor([0] * 80 + [1] * 20)
    idx = stratified_indices(labels, 10, torch.Generator().manual_seed(0))
    assert len(idx) == 10 and len(set(idx.tolist())) == 10
    assert int((labels[idx] == 1).sum()) == 2
    with pytest.raises(ValueError, match="Invalid subset size: 0"):
        stratified_indices(labels, 0, torch.Generator())


@pytest.mark.parametrize("bad", [0, -5, 10**6, 2.5])
def test_invalid_train_size_names_the_value(bad):
    with pytest.raises(ValueError, match=f"Invalid train_size: {bad}"):
        load_dataset("digits", train_size=bad)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="Unknown dataset name: 'imagenet'"):
        load_dataset("imagenet")


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    path = tmp_path / ("a.gz" if gz else "a")
    write_idx(path, arr, gz=gz)
    np.testing.assert_array_equal(read_idx(path), arr)


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an unsigned-byte idx file"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(short)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_a_local_folder(tmp_path, monkeypatch, gz):
    files = fake_mnist_dir(tmp_path / "fm", gz=gz)
    monkeypatch.setenv("CNNLAB_FASHION_MNIST_DIR", str(tmp_path / "fm"))
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")
    D._raw_idx.cache_clear()
    ds = load_dataset("fashion_mnist", val_size=50, seed=0)
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert len(ds.train[1]) == 250 and len(ds.val[1]) == 50 and len(ds.test[1]) == 100
    assert ds.classes[0] == "T-shirt/top"
    # the test split is the file's test split, in order
    torch.testing.assert_close(ds.test[1], torch.as_tensor(files["t10k-labels-idx1-ubyte"]))
    raw0 = torch.as_tensor(files["t10k-images-idx3-ubyte"][0], dtype=torch.float32)
    torch.testing.assert_close(ds.test[0][0, 0] * ds.std[0] + ds.mean[0], raw0, atol=1e-3, rtol=0)


def test_missing_dataset_offline_explains_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(D._SYSTEM_DIRS, "fashion_mnist", tmp_path / "nowhere")
    monkeypatch.delenv("CNNLAB_FASHION_MNIST_DIR", raising=False)
    monkeypatch.setenv("CNNLAB_DATA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")
    with pytest.raises(DatasetUnavailableError) as err:
        load_dataset("fashion_mnist")
    msg = str(err.value)
    assert "'fashion_mnist'" in msg and "dataset-fashion-mnist" in msg and "'digits'" in msg


def test_failed_download_is_reported_not_raised_raw(tmp_path, monkeypatch, no_local_mnist):
    monkeypatch.setenv("CNNLAB_OFFLINE", "0")

    def no_network(name):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(D, "_torchvision_download", no_network)
    with pytest.raises(DatasetUnavailableError, match="name resolution"):
        load_dataset("mnist")


def test_download_goes_to_the_data_home(tmp_path, monkeypatch, no_local_mnist):
    """When online, torchvision's download fills CNNLAB_DATA_HOME and the loader reads it."""
    monkeypatch.setenv("CNNLAB_OFFLINE", "0")
    calls = []

    def fake_download(name):
        calls.append(name)
        fake_mnist_dir(tmp_path / "home" / "MNIST" / "raw")

    monkeypatch.setattr(D, "_torchvision_download", fake_download)
    D._raw_idx.cache_clear()
    ds = load_dataset("mnist", val_size=30)
    assert calls == ["mnist"] and len(ds.train[1]) == 270


@pytest.mark.skipif(not (D._SYSTEM_DIRS["fashion_mnist"] / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    ds = load_dataset("fashion_mnist", train_size=1000, seed=0)
    assert len(ds.test[1]) == 10_000 and len(ds.val[1]) == 2000 and len(ds.train[1]) == 1000
    assert torch.bincount(ds.test[1]).tolist() == [1000] * 10


def test_available_and_choose_dataset(tmp_path, monkeypatch, no_local_mnist):
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")
    assert D.available("digits") and not D.available("mnist")
    name, why = D.choose_dataset("mnist")
    assert name == "digits" and "mnist" in why and "CNNLAB_OFFLINE" in why
    with pytest.raises(D.DatasetUnavailableError) as raised:
        D.load_dataset("mnist")
    assert str(raised.value) == why  # the reason is what loading it would say
    fake_mnist_dir(tmp_path / "m")
    monkeypatch.setenv("CNNLAB_MNIST_DIR", str(tmp_path / "m"))
    assert D.choose_dataset("mnist") == ("mnist", "")
    with pytest.raises(ValueError, match="Unknown dataset name: 'svhn'"):
        D.available("svhn")


def test_choose_dataset_downloads_when_online(tmp_path, monkeypatch, no_local_mnist):
    """In Colab (online), the preferred dataset is downloaded rather than replaced by digits."""
    monkeypatch.setenv("CNNLAB_OFFLINE", "0")
    monkeypatch.setattr(D, "_torchvision_download",
                        lambda name: fake_mnist_dir(tmp_path / "home" / "MNIST" / "raw"))
    assert D.choose_dataset("mnist") == ("mnist", "")


def test_choose_dataset_falls_back_when_the_download_fails(tmp_path, monkeypatch, no_local_mnist):
    monkeypatch.setenv("CNNLAB_OFFLINE", "0")

    def no_network(name):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(D, "_torchvision_download", no_network)
    name, why = D.choose_dataset("mnist")
    assert name == "digits" and "Network is unreachable" in why and "page" not in why


# ----------------------------------------------------------------------------- published results

_README = """\
# Fashion-MNIST
## Benchmark
| Classifier | Preprocessing | Fashion test accuracy | MNIST test accuracy | Submitter| Code |
| --- | --- | --- | --- | --- |--- |
|2 Conv+pooling | None | 0.876 | - | [Kashif Rasul](https://twitter.com/krasul) | [:link:](x) |
|2 Conv <100K parameters | None | 0.925 | 0.992 |[@hardmaru](https://x.org/h) | [:link:](y)|

### Other Explorations of Fashion-MNIST
"""


@pytest.mark.parametrize("gz", [False, True])
def test_published_benchmarks_parses_the_readme_table(tmp_path, gz: bool) -> None:
    path = tmp_path / ("README.md.gz" if gz else "README.md")
    data = _README.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    rows = published_benchmarks(path)
    assert [r["classifier"] for r in rows] == ["2 Conv+pooling", "2 Conv <100K parameters"]
    assert rows[0]["fashion_acc"] == 0.876 and math.isnan(rows[0]["mnist_acc"])
    assert rows[1]["mnist_acc"] == 0.992
    assert rows[0]["submitter"] == "Kashif Rasul" and rows[0]["preprocessing"] == "None"


def test_published_benchmarks_without_a_table_or_file(tmp_path) -> None:
    (tmp_path / "r.md").write_text("# no table here\n")
    assert published_benchmarks(tmp_path / "r.md") == []
    with pytest.raises(FileNotFoundError):
        published_benchmarks(tmp_path / "missing.md")


@pytest.mark.skipif(not BENCHMARK_README.exists(), reason="dataset-fashion-mnist not installed")
def test_published_benchmarks_reads_the_debian_copy() -> None:
    rows = published_benchmarks()
    convs = [r for r in rows if "Conv" in r["classifier"]]
    assert len(convs) >= 5
    assert all(0.5 < r["fashion_acc"] < 1.0 for r in convs)


def test_noisy_labels_replace_the_asked_share_at_random():
    from cnnlab.data import noisy_labels
    y = torch.arange(10).repeat(100)  # 1,000 labels
    a = noisy_labels(y, 0.4, 10, torch.Generator().manual_seed(0))
    b = noisy_labels(y, 0.4, 10, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, y)
    assert torch.equal(y, torch.arange(10).repeat(100))  # the input is left as it was
    changed = int((a != y).sum())
    # 400 replaced; a replacement keeps its label with probability 1/10: about 360 change
    assert 320 <= changed <= 400
    assert int(a.min()) >= 0 and int(a.max()) <= 9
    assert torch.equal(noisy_labels(y, 0.0, 10, torch.Generator()), y)
    with pytest.raises(ValueError, match="Invalid label noise rate: 1.5"):
        noisy_labels(y, 1.5, 10, torch.Generator())


def test_label_noise_touches_the_training_labels_only():
    from cnnlab.config import RunConfig
    from cnnlab.experiments import load_for
    clean = load_for(RunConfig("digits", train_size=500), 3)
    noisy = load_for(RunConfig("digits", train_size=500, label_noise=0.4), 3)
    assert torch.equal(clean.train[0], noisy.train[0])  # the same images
    share = float((clean.train[1] != noisy.train[1]).float().mean())
    assert 0.3 <= share <= 0.4
    for split in ("val", "test"):
        assert torch.equal(getattr(clean, split)[1], getattr(noisy, split)[1])
    with pytest.raises(ValueError, match="Invalid label_noise value: 1.0"):
        RunConfig(label_noise=1.0).validate()
