"""Metrics against scikit-learn, k-fold splits, cross-validation, named-config comparisons and
the published-benchmark reader."""

from __future__ import annotations

import math
from dataclasses import fields, replace
from pathlib import Path
from types import ModuleType

import pytest
import torch
from sklearn import metrics as skm
from torch import nn
from torch.testing import assert_close

from cnnlab.config import RunConfig
from cnnlab.evaluation import (
    ablation_configs,
    accuracy,
    compare_configs,
    confusion_matrix,
    cross_validate,
    per_class_precision,
    per_class_recall,
    predict,
    stratified_k_fold,
)
from cnnlab.models import build_model

from .scripts import load_script

CALLS: list[tuple[float, int]] = []


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: the tensors are tiny, and two threads on a busy 2-core machine make
    each training step many times slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fake_runner(config, seed):
    """Stand-in for training: accuracy depends on the config's dropout and on the seed."""
    CALLS.append((config.dropout, seed))
    acc = 0.8 + config.dropout / 10 + seed / 1000
    return {**config.to_dict(), "seed": seed, "test_acc": acc, "train_acc": acc + 0.1,
            "gap": 0.1, "diverged": False, "train_time": 1.0 + seed}


def _labels(n: int = 200, k: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    p = torch.where(torch.rand(n, generator=g) < 0.7, y, torch.randint(0, k, (n,), generator=g))
    return y, p


# ----------------------------------------------------------------------------- metrics


def test_confusion_matrix_and_scores_match_sklearn() -> None:
    y, p = _labels()
    cm = confusion_matrix(y, p, 4)
    assert cm.dtype == torch.int64
    assert_close(cm, torch.as_tensor(skm.confusion_matrix(y, p, labels=range(4))))
    assert accuracy(cm) == pytest.approx(skm.accuracy_score(y, p))
    assert_close(per_class_recall(cm), torch.as_tensor(skm.recall_score(y, p, average=None)))
    assert_close(per_class_precision(cm),
                 torch.as_tensor(skm.precision_score(y, p, average=None)))


def test_confusion_matrix_counts_absent_classes_as_nan_scores() -> None:
    cm = confusion_matrix(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    recall, precision = per_class_recall(cm), per_class_precision(cm)
    assert recall[:2].tolist() == [0.5, 1.0] and math.isnan(recall[2])
    assert math.isnan(precision[2])
    assert math.isnan(accuracy(torch.zeros(3, 3, dtype=torch.long)))


@pytest.mark.parametrize(
    "y_true, y_pred, k, match",
    [([0, 3], [0, 1], 3, "y_true"), ([0, 1], [0, -1], 3, "y_pred"),
     ([0, 1], [0], 3, "differ in length"), ([0], [0], 0, "num_classes")],
)
def test_confusion_matrix_rejects_bad_labels(y_true, y_pred, k, match) -> None:
    with pytest.raises(ValueError, match=match):
        confusion_matrix(torch.tensor(y_true), torch.tensor(y_pred), k)


def test_predict_is_argmax_in_eval_mode_and_restores_the_mode() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 3))
    x = torch.randn(10, 1, 4, 4)
    model.train()
    labels = predict(model, x, batch_size=3)
    model.eval()
    assert_close(labels, model(x).argmax(1))
    model.train()
    predict(model, x)
    assert model.training


# ----------------------------------------------------------------------------- k-fold


def test_stratified_k_fold_partitions_and_keeps_class_shares() -> None:
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 7)
    folds = stratified_k_fold(y, 5, torch.Generator().manual_seed(0))
    assert len(folds) == 5
    val_all = torch.cat([v for _, v in folds])
    assert sorted(val_all.tolist()) == list(range(len(y)))  # a partition
    for train, val in folds:
        assert set(train.tolist()).isdisjoint(val.tolist())
        assert len(train) + len(val) == len(y)
    for c in range(3):
        counts = [int((y[v] == c).sum()) for _, v in folds]
        assert max(counts) - min(counts) <= 1  # every fold keeps the class's share
    sizes = [len(v) for _, v in folds]
    assert max(sizes) - min(sizes) <= 1  # small classes do not all land in fold 0


def test_stratified_k_fold_is_seeded() -> None:
    y = torch.arange(40) % 4
    a = stratified_k_fold(y, 4, torch.Generator().manual_seed(1))
    b = stratified_k_fold(y, 4, torch.Generator().manual_seed(1))
    c = stratified_k_fold(y, 4, torch.Generator().manual_seed(2))
    assert all(torch.equal(x[1], z[1]) for x, z in zip(a, b))
    assert any(not torch.equal(x[1], z[1]) for x, z in zip(a, c))


@pytest.mark.parametrize("k", [1, 11, 2.0, True])
def test_stratified_k_fold_rejects_bad_k(k) -> None:
    with pytest.raises(ValueError, match="Invalid k value"):
        stratified_k_fold(torch.zeros(10, dtype=torch.long), k, torch.Generator())


def test_cross_validate_trains_one_model_per_fold(digits) -> None:
    built = []

    def make(i: int) -> nn.Module:
        built.append(i)
        return build_model(digits.input_shape, digits.num_classes, seed=i, width=8)

    cv = cross_validate(digits, make, k=3, seed=0, epochs=5, lr=0.05, progress=False)
    assert built == [0, 1, 2] and cv.k == 3 and len(cv.histories) == 3
    assert all(0.5 < a <= 1.0 for a in cv.fold_acc)  # well above chance (10%) on digits
    assert cv.low <= cv.mean <= cv.high
    assert cv.mean == pytest.approx(sum(cv.fold_acc) / 3)
    folds = stratified_k_fold(digits.train[1], 3, torch.Generator().manual_seed(0))
    steps = [5 * math.ceil(len(train) / 64) for train, _ in folds]  # trained on k-1 folds
    assert [h.steps for h in cv.histories] == steps


# ----------------------------------------------------------------------------- compare_configs


def test_compare_configs_summarizes_in_order_and_uses_the_cache(tmp_cache) -> None:
    CALLS.clear()
    configs = {"base": RunConfig(), "+dropout": RunConfig(dropout=0.5)}
    rows, summary = compare_configs(configs, 3, runner=fake_runner, workers=1)
    assert [s["name"] for s in summary] == ["base", "+dropout"]
    assert len(rows) == 6 and {r["name"] for r in rows} == {"base", "+dropout"}
    base, drop = summary
    assert base["n"] == 3 and base["test_acc"] == pytest.approx(0.801)
    assert drop["test_acc"] == pytest.approx(0.851)
    assert base["train_time"] == pytest.approx(2.0)
    assert base["train_time_low"] < 2.0 < base["train_time_high"]
    assert len(CALLS) == 6
    compare_configs(configs, 3, runner=fake_runner, workers=1)
    assert len(CALLS) == 6  # all cached


def test_compare_configs_validates_before_training(tmp_cache) -> None:
    CALLS.clear()
    with pytest.raises(ValueError, match="Invalid dropout"):
        compare_configs({"ok": RunConfig(), "bad": RunConfig(dropout=1.5)}, 2,
                        runner=fake_runner, workers=1)
    assert CALLS == []
    with pytest.raises(ValueError, match="at least one"):
        compare_configs({}, 2)


def test_ablation_configs_adds_one_technique_at_a_time() -> None:
    base = RunConfig("digits", 100, epochs=3)
    techniques = {"+BN": {"batch_norm": True}, "+dropout": {"dropout": 0.3},
                  "+wd and l2": {"weight_decay": 1e-3, "l2": 1e-4}}
    configs = ablation_configs(base, techniques)
    assert list(configs) == ["baseline", "+BN", "+dropout", "+wd and l2", "all together"]
    assert configs["baseline"] is base
    assert configs["+BN"] == RunConfig("digits", 100, epochs=3, batch_norm=True)
    assert configs["+dropout"] == RunConfig("digits", 100, epochs=3, dropout=0.3)
    assert configs["+wd and l2"] == RunConfig("digits", 100, epochs=3, weight_decay=1e-3, l2=1e-4)
    assert configs["all together"] == RunConfig(
        "digits", 100, epochs=3, batch_norm=True, dropout=0.3, weight_decay=1e-3, l2=1e-4)


@pytest.mark.parametrize(("techniques", "match"), [
    ({"+early stopping": {"early_stopping": 0}}, "Invalid early_stopping"),  # validated
    ({"+x": {"dropuot": 0.5}}, "Invalid field of technique '\\+x': 'dropuot'"),
    ({"baseline": {"dropout": 0.5}}, "Invalid technique name: 'baseline'"),
    ({"a": {"dropout": 0.5}, "b": {"dropout": 0.2}}, "'a' and 'b' both set 'dropout'"),
    ({}, "need at least one"),
])
def test_ablation_configs_rejects_bad_techniques(techniques, match) -> None:
    with pytest.raises(ValueError, match=match):
        ablation_configs(RunConfig(), techniques)


def _config_of(row: dict) -> RunConfig:
    """The RunConfig a stored row was trained with (a field added to RunConfig after the run is
    missing from the row: it had its default)."""
    return RunConfig(**{f.name: row[f.name] for f in fields(RunConfig) if f.name in row})


def _full_ablation_script() -> ModuleType:
    return load_script("choosing_full_ablation")


def test_the_full_ablation_script_reads_the_chapters_techniques() -> None:
    script = _full_ablation_script()
    techniques = script.chapter_literal(script.CHAPTER, "TECHNIQUES")
    assert techniques == {"+BN": {"batch_norm": True}, "+dropout": {"dropout": 0.5},
                          "+weight decay": {"weight_decay": 5e-4},
                          "+augmentation": {"augment": True},
                          "+early stopping": {"early_stopping": 3}}
    # the runs the chapter's ablation has always trained (their cache keys are these configs)
    small = RunConfig("digits", train_size=1000, width=8, epochs=12, lr=0.05, batch_size=64)
    every = replace(small, batch_norm=True, dropout=0.5, weight_decay=5e-4, augment=True,
                    early_stopping=3)
    assert ablation_configs(small, techniques) == {
        "baseline": small, "+BN": replace(small, batch_norm=True),
        "+dropout": replace(small, dropout=0.5), "+weight decay": replace(small, weight_decay=5e-4),
        "+augmentation": replace(small, augment=True),
        "+early stopping": replace(small, early_stopping=3), "all together": every}


def test_the_full_ablation_script_holds_out_the_chapters_validation_images(tmp_path) -> None:
    script = _full_ablation_script()
    assert script.chapter_val_size(script.CHAPTER) == 500  # the chapter's VAL_SIZE
    md = tmp_path / "ch.md"
    md.write_text('x\nVAL_SIZE = None if DATASET == "digits" else 750  # note\n')
    assert script.chapter_val_size(md) == 750
    md.write_text("VAL_SIZE = 500\n")
    with pytest.raises(ValueError, match="0 lines like"):
        script.chapter_val_size(md)


def test_the_stored_full_ablation_is_the_scripts_recipe_with_equal_seeds() -> None:
    import json
    script = _full_ablation_script()
    stored = json.loads((script.CHAPTER.parent / "data" / "ablation_full.json").read_text())
    base = replace(script.BASE, val_size=script.chapter_val_size(script.CHAPTER))
    configs = ablation_configs(base, script.chapter_literal(script.CHAPTER, "TECHNIQUES"))
    seeds = {name: sorted(r["seed"] for r in stored["rows"] if r["name"] == name)
             for name in configs}
    assert seeds == {name: list(range(stored["meta"]["seeds"])) for name in configs}
    n = stored["meta"]["seeds"]
    assert n >= 5 and len(stored["rows"]) == n * len(configs)  # no seed twice
    for row in stored["rows"]:  # each row is its configuration, trained as the script says
        assert _config_of(row) == configs[row["name"]], row["name"]
        assert 0 < row["train_eval_acc"] <= 1 and row["gap"] == pytest.approx(
            row["train_eval_acc"] - row["test_acc"])
    assert stored["meta"]["train_images"] == 60_000 - base.val_size


def test_the_stored_best_recipes_are_the_scripts_recipes_seed_by_seed() -> None:
    import json
    script = load_script("best_recipe_full")
    stored = json.loads((script.CHAPTER.parent / "data" / "best_recipe_full.json").read_text())
    recipes = script.recipes()
    assert {c.val_size for c in recipes.values()} == {script.chapter_val_size(script.CHAPTER)}
    assert all(c.lr_schedule == "cosine" and c.batch_norm and c.train_size is None
               for c in recipes.values())
    assert stored["meta"]["configs"] == {name: c.to_dict() for name, c in recipes.items()}
    for name, config in recipes.items():
        rows = [r for r in stored["rows"] if r["name"] == name]
        seeds = sorted(r["seed"] for r in rows)
        assert seeds == list(range(len(seeds))) and 1 <= len(seeds) <= stored["meta"]["seeds"]
        for row in rows:  # each row is its recipe, trained as the script says
            assert _config_of(row) == config
            assert len(row["history"]["val_loss"]) == config.epochs and not row["diverged"]
            assert row["gap"] == pytest.approx(row["train_eval_acc"] - row["test_acc"])
    assert {r["name"] for r in stored["rows"]} == set(recipes)
    assert stored["meta"]["train_images"] == 60_000 - script.chapter_val_size(script.CHAPTER)


def test_the_best_recipe_script_stores_each_run_and_resumes_from_the_cache(
        tmp_cache, tmp_path, monkeypatch, capsys) -> None:
    import json
    script = load_script("best_recipe_full")
    tiny = RunConfig("digits", width=4, epochs=2, batch_size=128, lr_schedule="cosine")
    monkeypatch.setattr(script, "RECIPES", {"a": tiny, "b": replace(tiny, lr=0.01)})
    out = tmp_path / "recipe.json"
    argv = ["--seeds", "2", "--workers", "1", "--out", str(out)]
    assert script.main(argv) == 0
    stored = json.loads(out.read_text())
    assert sorted((r["name"], r["seed"], r["lr"]) for r in stored["rows"]) == [
        ("a", 0, 0.05), ("a", 1, 0.05), ("b", 0, 0.01), ("b", 1, 0.01)]
    assert stored["meta"]["configs"] == {n: c.to_dict() for n, c in script.recipes().items()}
    assert stored["meta"]["command"] == "python scripts/best_recipe_full.py " + " ".join(argv)
    assert len(list(tmp_cache.glob("*.json"))) == 4  # every run cached
    first = capsys.readouterr().out
    assert script.main(argv) == 0
    again = json.loads(out.read_text())  # read back from the cache: the same rows
    assert sorted((r["name"], r["seed"], r["test_acc"]) for r in again["rows"]) == sorted(
        (r["name"], r["seed"], r["test_acc"]) for r in stored["rows"])
    assert first.count("] ") == 4 and len(list(tmp_cache.glob("*.json"))) == 4
    with pytest.raises(SystemExit):
        script.main(["--seeds", "0"])


def test_chapter_literal_finds_one_literal_assignment(tmp_path: Path) -> None:
    chapter_literal = _full_ablation_script().chapter_literal
    md = tmp_path / "ch.md"
    md.write_text('text\n```{code-cell}\n%matplotlib inline\nX = {  # a comment\n    "a": [1, 2],'
                  '\n    "b": {"c": None},\n}\nY = X\n```\nTHE X = 3 in prose\n')
    assert chapter_literal(md, "X") == {"a": [1, 2], "b": {"c": None}}
    with pytest.raises(ValueError, match="0 lines that start with 'Z = '"):
        chapter_literal(md, "Z")
    with pytest.raises(ValueError):  # not a literal
        chapter_literal(md, "Y")
    md.write_text("X = 1\nX = 2\n")
    with pytest.raises(ValueError, match="2 lines that start with 'X = '"):
        chapter_literal(md, "X")
    md.write_text("X = {1,\n")
    with pytest.raises(ValueError, match="does not parse"):
        chapter_literal(md, "X")


# ----------------------------------------------------------------------------- reporting


def _row(mean: float, low: float, high: float) -> dict:
    return {"test_acc": mean, "test_acc_low": low, "test_acc_high": high}


def test_compare_configs_needs_a_seed(tmp_path):
    with pytest.raises(ValueError, match="Invalid seeds: 0"):
        compare_configs({"base": RunConfig(epochs=1)}, 0, cache=tmp_path)
