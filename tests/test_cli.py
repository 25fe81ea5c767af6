import csv

import pytest

from cnnlab.cli import build_parser, main, parse_value


def test_parse_value():
    assert parse_value("none") is None and parse_value("3") == 3
    assert parse_value("1e-3") == 1e-3 and parse_value("true") is True
    assert parse_value("sgd") == "sgd"


def test_help_explains(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "--help"])
    out = capsys.readouterr().out
    assert "--param" in out and "--values" in out and "--seeds" in out


def test_sweep_writes_csv_and_png(tmp_path, tmp_cache, capsys):
    out = tmp_path / "res"
    code = main(["sweep", "--param", "dropout", "--values", "0", "0.5", "--seeds", "2",
                 "--epochs", "1", "--width", "4", "--out", str(out)])
    assert code == 0
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(rows) == 4 and {r["dropout"] for r in rows} == {"0", "0.5"}
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert len(summary) == 2 and float(summary[0]["test_acc"]) > 0.2
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "dropout = 0.5: test_acc" in capsys.readouterr().out


def test_bad_value_is_a_clear_error(tmp_path, tmp_cache, capsys):
    code = main(["sweep", "--param", "dropout", "--values", "1.5", "--out", str(tmp_path)])
    assert code == 2 and "Invalid dropout value: 1.5" in capsys.readouterr().err


def test_unknown_dataset_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--dataset", "imagenet", "--param", "lr", "--values", "0.1"])
    assert "imagenet" in capsys.readouterr().err


def test_one_seed_claims_no_interval(tmp_path, tmp_cache, capsys):
    code = main(["sweep", "--param", "dropout", "--values", "0", "--seeds", "1", "--epochs", "1",
                 "--width", "4", "--workers", "1", "--out", str(tmp_path)])
    assert code == 0
    assert "(1 seed: no interval) over 1 seed." in capsys.readouterr().out
    with (tmp_path / "summary.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["n"] == "1" and row["test_acc"] != ""
    assert row["test_acc_low"] == row["test_acc_high"] == ""  # empty, not a copy of the mean
