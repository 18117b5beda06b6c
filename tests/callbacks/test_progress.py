"""What a run says while it trains without a terminal (issue 23 item 2): the real command line with stdout
piped (as ``make train > log``, nohup or SLURM) prints a line per epoch and every log_every_n_steps steps,
to the console and run.log; history.csv keeps the same numbers; the first line names the epochs left and
the schedule used, also on resume; the progress bar carries G and D; the LR monitor names G and D."""

import csv
import os
import subprocess
import sys

import pytest

from conftest import REPO, compose_run
from fundus2ffa.callbacks.progress import EpochLog
from fundus2ffa.plots import read_history
from fundus2ffa.run import run

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["debug=smoke", "data.reader.num_pairs=8", "data.image_size=32", "generator.num_downs=5", "generator.ngf=4",
        "discriminator.ndf=4", "trainer.limit_train_batches=3", "trainer.log_every_n_steps=2", "callbacks.samples=null"]


def _cli(*args):
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "fundus2ffa.run", *args], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=600)


def _lines(text: str, marker: str) -> list[str]:
    return [line.split(" - ", 1)[-1] for line in text.splitlines() if marker in line]


def test_a_piped_run_logs_a_line_per_epoch_and_resumes_with_the_epochs_left(tmp_path):
    first = tmp_path / "first"
    result = _cli(*TINY, "trainer.max_epochs=2", f"hydra.run.dir={first}")
    assert result.returncode == 0, result.stderr[-3000:]
    log = (first / "run.log").read_text()
    history = read_history(first / "history.csv")
    assert [int(r["epoch"]) for r in history] == [0, 1]

    # the first line: the epochs this run trains and the schedule it really follows (max_epochs cuts 3 + 2)
    (start,) = _lines(log, "training 2 epochs")
    assert "trainer.max_epochs=2 instead of model.schedule 3 constant + 2 decay epochs = 5" in start
    assert "learning rate stays constant" in start

    # one line per epoch, in run.log and on the console, with the numbers history.csv holds
    epochs = _lines(log, "epoch ") and [line for line in _lines(log, "epoch ") if " s): " in line]
    assert [line.split(" (", 1)[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    for line, row in zip(epochs, history):
        assert f"G {row['train/g_total']:.3g} (gan {row['train/g_gan']:.3g}, l1 {row['train/g_l1']:.3g})" in line
        assert f"D {row['train/d_total']:.3g}" in line
        assert f"val psnr {row['val/psnr']:.3g}, ssim {row['val/ssim']:.3g}" in line
        assert f"lr G {row['lr-G']:.3g}, D {row['lr-D']:.3g}" in line
        assert line in result.stdout + result.stderr  # stdout is a pipe: the console gets them too
    # a step line every log_every_n_steps=2 iterations (not on an epoch's last, which the epoch line covers)
    steps = [line for line in _lines(log, " step ") if line.startswith("epoch ")]
    assert [line.split(":", 1)[0] for line in steps] == ["epoch 1/2 step 2/3", "epoch 2/2 step 2/3"]
    assert all(" G " in line and " D " in line and "s/it" in line for line in steps)

    # the learning-rate monitor names G and D (the CSV logger's columns)
    (metrics_csv,) = first.glob("csv/**/metrics.csv")
    columns = next(csv.reader(metrics_csv.open()))
    assert "lr-G" in columns and "lr-D" in columns and not [c for c in columns if c.startswith("lr-Adam")]

    # resuming for one more epoch says 1 epoch, and its history continues the first run's
    resumed = tmp_path / "resumed"
    result = _cli(*TINY, "trainer.max_epochs=3", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={resumed}")
    assert result.returncode == 0, result.stderr[-3000:]
    log = (resumed / "run.log").read_text()
    (start,) = _lines(log, "training 1 epoch")
    assert start.startswith("training 1 epoch, epoch 3 of 3 (resumed after epoch 2)")
    assert [line.split(" (", 1)[0] for line in _lines(log, "epoch ") if " s): " in line] == ["epoch 3/3"]
    again = read_history(resumed / "history.csv")
    assert [int(r["epoch"]) for r in again] == [0, 1, 2] and again[:2] == history


def test_the_progress_bar_shows_g_and_d(tmp_path, monkeypatch):
    seen = []
    original = EpochLog.on_train_epoch_end

    def spy(self, trainer, pl_module):
        seen.append(dict(trainer.progress_bar_metrics))
        original(self, trainer, pl_module)

    monkeypatch.setattr(EpochLog, "on_train_epoch_end", spy)
    run(compose_run([*TINY, "trainer.max_epochs=1"], tmp_path / "run"))
    (bar,) = seen
    assert {"G", "D", "val/psnr", "val/ssim"} <= set(bar)
    history = read_history(tmp_path / "run" / "history.csv")
    assert bar["val/psnr"] == pytest.approx(history[0]["val/psnr"])
