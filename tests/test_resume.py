"""``ckpt_path=`` resumes exactly: epoch, step, LR schedule, optimizer states and RNG streams."""

from pathlib import Path

import csv
import pytest
import torch

from conftest import compose_run
from fundus2ffa.run import run

BASE = [
    "debug=smoke",
    "data.reader.num_pairs=8",
    "trainer.limit_train_batches=3",
    "model.schedule.constant_epochs=1",
    "model.schedule.decay_epochs=2",
]


def _ckpt(out: Path) -> dict:
    return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    full = compose_run([*BASE, "trainer.max_epochs=3"], tmp_path / "full")
    run(full)
    part = compose_run([*BASE, "trainer.max_epochs=2"], tmp_path / "part")
    run(part)
    middle = _ckpt(tmp_path / "part")
    resumed = compose_run(
        [*BASE, "trainer.max_epochs=3", f"ckpt_path={tmp_path / 'part' / 'checkpoints' / 'last.ckpt'}"],
        tmp_path / "resumed",
    )
    run(resumed)

    # the resumed run started where the checkpoint stopped: loggers count batches (global_step counts
    # optimizer steps, two per batch), and the first batch logged after resuming is batch 6
    with (tmp_path / "resumed" / "csv" / "metrics.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("train/g_total_step")]
    first_step = min(int(r["step"]) for r in rows)
    assert first_step == middle["global_step"] // 2
    assert middle["epoch"] == 1 and middle["global_step"] == 2 * 2 * 3  # 2 epochs x 3 batches x (G + D)

    a, b = _ckpt(tmp_path / "full"), _ckpt(tmp_path / "resumed")
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    for name, tensor in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"]):
        assert [g["lr"] for g in opt_a["param_groups"]] == pytest.approx([g["lr"] for g in opt_b["param_groups"]])
        for key, state in opt_a["state"].items():
            for field in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(opt_b["state"][key][field], state[field], rtol=1e-5, atol=1e-7)
    # the schedule was applied: epoch 2 runs at 1 - 2/3 of the base rate (constant 1, decay 2)
    assert a["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(2e-4 / 3)
