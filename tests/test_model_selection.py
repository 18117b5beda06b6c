"""No model selection on the test set (issue 15).

Data with train and test splits only (a manifest with a split column, as the UWF folders): validation
is carved from the training records by group, the same in every run, and never holds a test record;
best-checkpoint selection reads that carved split; ``data.val_from=test`` is marked in metrics.json and
in the report."""

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import compose_run
from fundus2ffa.report import main as report
from fundus2ffa.builders import build
from fundus2ffa.run import run

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["data.image_size=32", "data.train_transform.load_size=36", "generator.num_downs=5", "generator.ngf=4",
        "discriminator.ndf=4", "trainer.limit_train_batches=1", "model.schedule.constant_epochs=1",
        "model.schedule.decay_epochs=2"]


def _manifest(root: Path, train: int, test: int) -> Path:
    """A manifest over the paired_folder fixture: two eyes per patient, categories alternating by patient."""
    rows = []
    for i in range(train + test):
        rows.append({"cf": f"cf/eye{i:02d}.png", "ffa": f"ffa/eye{i:02d}.png", "id": f"eye{i:02d}",
                     "group": f"patient{i // 2}", "category": "abnormal" if (i // 2) % 2 else "normal",
                     "split": "train" if i < train else "test"})
    path = root / f"manifest_{train}_{test}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _data(root, manifest, *overrides):
    cfg = compose_run(["debug=smoke", "data=paired_folder", f"data.reader.root={root}",
                       f"data.reader.manifest={manifest}", "++data.verify=header", *TINY, *overrides])
    datamodule = build(cfg.data, "data")
    datamodule.setup("fit")
    return datamodule


def test_train_and_test_only_never_validates_on_test(paired_folder_root):
    manifest = _manifest(paired_folder_root, train=6, test=2)
    datamodule = _data(paired_folder_root, manifest, "data.val_fraction=0.34")
    ids = {name: {r.id for r in part} for name, part in datamodule.splits.items()}
    assert datamodule.val_source == "val_carved_from_train"
    assert ids["test"] == {"eye06", "eye07"} and not ids["val"] & ids["test"]
    assert ids["val"] and ids["train"] | ids["val"] == {f"eye{i:02d}" for i in range(6)} and not ids["train"] & ids["val"]
    groups = {name: {r.split_group for r in part} for name, part in datamodule.splits.items()}
    assert not groups["train"] & groups["val"]  # a patient is never in both
    # the same carve in every run (seeded by data.split_seed, not by the training seed)
    torch.manual_seed(123)
    again = _data(paired_folder_root, manifest, "data.val_fraction=0.34", "seed=7")
    assert {r.id for r in again.splits["val"]} == ids["val"]

    explicit = _data(paired_folder_root, manifest, "data.val_from=test")
    assert explicit.val_source == "test" and {r.id for r in explicit.splits["val"]} == ids["test"]

    few = _data(paired_folder_root, _manifest(paired_folder_root, train=4, test=4))  # 2 patients: too few to carve
    assert few.val_source is None and "val" not in few.datasets and few.val_dataloader() == []


def _epochs_of(metrics_csv: Path, key: str) -> dict[int, float]:
    with metrics_csv.open() as handle:
        return {int(r["epoch"]): float(r[key]) for r in csv.DictReader(handle) if r.get(key)}


def test_best_checkpoint_is_selected_on_the_carved_validation_split(paired_folder_root, tmp_path):
    manifest = _manifest(paired_folder_root, train=6, test=2)
    out = tmp_path / "carved"
    run(compose_run(["debug=smoke", "data=paired_folder", f"data.reader.root={paired_folder_root}",
                     f"data.reader.manifest={manifest}", "data.val_fraction=0.34", *TINY, "trainer.max_epochs=3",
                     "eval_ckpt=best"], out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validated_on"] == metrics["selected_on"] == "val_carved_from_train" and "warning" not in metrics
    # per-epoch val/psnr of training (the final evaluation after fit logs one more row, at epoch 3)
    val_psnr = {e: v for e, v in _epochs_of(out / "csv" / "metrics.csv", "val/psnr").items() if e < 3}
    assert sorted(val_psnr) == [0, 1, 2]
    best_epoch = max(val_psnr, key=val_psnr.get)
    assert Path(metrics["checkpoint"]).name == f"best-epoch_{best_epoch:04d}.ckpt" and metrics["epoch"] == best_epoch
    state = next(v for k, v in torch.load(metrics["checkpoint"], weights_only=True)["callbacks"].items() if "Checkpoint" in k)
    assert float(state["best_model_score"]) == pytest.approx(val_psnr[best_epoch], abs=1e-4)
    assert "selected on the" not in report([str(out)])  # no selection mark ((!) also flags losing to a baseline)


def test_val_from_test_is_marked_in_metrics_and_report(paired_folder_root, tmp_path):
    manifest = _manifest(paired_folder_root, train=6, test=2)
    out = tmp_path / "on_test"
    run(compose_run(["debug=smoke", "data=paired_folder", f"data.reader.root={paired_folder_root}",
                     f"data.reader.manifest={manifest}", "data.val_from=test", *TINY, "trainer.max_epochs=1",
                     "eval_ckpt=best"], out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validated_on"] == metrics["selected_on"] == "test"
    assert "TEST split" in metrics["warning"] and metrics["val"] == metrics["test"]
    text = report([str(out)])
    assert "| PairedGAN (!) |" in text and "checkpoint selected on the test split it reports" in text
