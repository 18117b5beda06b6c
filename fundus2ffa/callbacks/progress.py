"""What a run says while it trains, where no progress bar is seen (issue 23 item 2): ``make train > log``,
``nohup``, a SLURM job.

:class:`EpochLog` writes one plain line per epoch, with the mean G and D losses (each term), the
validation metrics of that epoch, the learning rates and the epoch's time::

    epoch 3/5 (41 s): G 12.3 (gan 0.712, l1 0.116) | D 0.521 (real 0.49, fake 0.553) | val psnr 18.2, ssim 0.612 | lr G 0.0002, D 0.0002

and, every ``trainer.log_every_n_steps`` iterations, a shorter step line (``epoch 3/5 step 20/36: G 12.1 D 0.53
(0.81 s/it)``). The lines go to the console and run.log when stdout is not a terminal or the progress bar
is off; in a terminal the bar shows the losses (``G`` / ``D``) and validation metrics, and the epoch lines
go to run.log only. Every epoch's row (epoch, step, seconds, each ``train/*`` mean, ``val/*``, ``lr-*``) is
also kept in ``history.csv`` in the run folder (``epoch`` 0-based there, as in ``samples/epoch_XXXX.png``
and metrics.json; the lines count from 1), rewritten atomically after each epoch: the results page
draws its loss and metric curves from it, and ``python -m fundus2ffa.report`` a sweep's. A resumed run
starts its history with the rows of the run it resumes (from the history.csv beside the checkpoint's
folder), so its curves are whole.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

from fundus2ffa.plots import read_history
from fundus2ffa.writers import write_csv

log = logging.getLogger("fundus2ffa")

HISTORY_FILE = "history.csv"
TERM = re.compile(r"^train/([a-z])_(.+?)(_epoch)?$")
SKIPPED_VAL = ("count", "fov_empty")


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def console_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


class EpochLog(L.Callback):
    """A line per epoch (and every ``log_every_n_steps`` iterations) and ``history.csv`` (module docstring).

    Args:
        history_file: where the per-epoch rows go (null: none).
        every_n_steps: iterations between step lines (null: ``trainer.log_every_n_steps``; 0: no step lines).
        console: auto (the console gets the lines when stdout is not a terminal or there is no progress bar)
            | always | never (run.log only).
    """

    def __init__(self, history_file: str | None = None, every_n_steps: int | None = None, console: str = "auto"):
        if console not in ("auto", "always", "never"):
            raise ValueError(f"callbacks.epoch_log.console must be auto, always or never, got {console!r}")
        self.history_file = Path(history_file) if history_file else None
        self.every_n_steps = every_n_steps
        self.console = console
        self.rows: list[dict] = []
        self._epoch_start = 0.0
        self._step_start: float | None = None
        self._steps_timed = 0
        self._validated = False

    # ------------------------------------------------------------------ where the lines go
    def _to_console(self, trainer: L.Trainer) -> bool:
        if self.console != "auto":
            return self.console == "always"
        return not console_is_terminal() or trainer.progress_bar_callback is None

    def _emit(self, trainer: L.Trainer, line: str) -> None:
        if self._to_console(trainer):
            log.info(line)
            return
        # a terminal with a progress bar: run.log only (the bar shows the same numbers)
        record = log.makeRecord(log.name, logging.INFO, __file__, 0, line, None, None)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.rows = []
        if trainer.ckpt_path and self.history_file is not None:
            earlier = Path(trainer.ckpt_path).resolve().parent.parent / HISTORY_FILE
            if earlier.resolve() != self.history_file.resolve():
                self.rows = [r for r in read_history(earlier) if float(r.get("epoch", -1)) < trainer.current_epoch]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        self._step_start, self._steps_timed = time.perf_counter(), 0
        self._validated = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._validated = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._step_start is None:  # a resume in the middle of an epoch starts here, not at an epoch start
            self._step_start, self._steps_timed = time.perf_counter(), 0
        self._steps_timed += 1
        every = trainer.log_every_n_steps if self.every_n_steps is None else int(self.every_n_steps)
        if not trainer.is_global_zero or not every or (batch_idx + 1) % every or not self._to_console(trainer):
            return
        if batch_idx + 1 >= trainer.num_training_batches:  # the epoch line follows
            return
        metrics = trainer.callback_metrics
        losses = " ".join(f"{side.upper()} {_fmt(float(metrics[key]))}" for side in ("g", "d")
                          if (key := f"train/{side}_total_step") in metrics)
        per_it = (time.perf_counter() - self._step_start) / max(self._steps_timed, 1)
        self._step_start, self._steps_timed = time.perf_counter(), 0
        total = trainer.num_training_batches
        self._emit(trainer, f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} step {batch_idx + 1}/{total}: "
                            f"{losses} ({per_it:.3g} s/it)")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        seconds = time.perf_counter() - self._epoch_start
        row = self.epoch_row(trainer, pl_module, seconds)
        self.rows.append(row)
        self._emit(trainer, self.epoch_line(trainer, row))
        if self.history_file is not None:
            write_csv(self.history_file, self.rows)

    # ------------------------------------------------------------------ content
    def epoch_row(self, trainer: L.Trainer, pl_module, seconds: float) -> dict:
        """epoch (0-based, as Lightning, metrics.json and the file names samples/epoch_XXXX.png count), step,
        seconds, train/<g|d>_<term> (epoch means), val/*, lr-*."""
        metrics = trainer.callback_metrics
        row: dict = {"epoch": trainer.current_epoch, "step": trainer.global_step, "seconds": round(seconds, 3)}
        for key, value in metrics.items():
            match = TERM.match(key)
            if match and not key.endswith("_step") and (match.group(3) or f"{key}_epoch" not in metrics):
                row[f"train/{match.group(1)}_{match.group(2)}"] = float(value)
        if self._validated:
            for key, value in metrics.items():
                if key.startswith("val/") and key.split("/", 1)[1] not in SKIPPED_VAL:
                    row[key] = float(value)
        labels = pl_module.optimizer_labels(len(trainer.optimizers)) if hasattr(pl_module, "optimizer_labels") else ()
        for index, optimizer in enumerate(trainer.optimizers):
            label = labels[index] if index < len(labels) else str(index)
            row[f"lr-{label}"] = float(optimizer.param_groups[0]["lr"])
        return row

    @staticmethod
    def epoch_line(trainer: L.Trainer, row: dict) -> str:
        parts = []
        for side in ("g", "d"):
            terms = {k.split("_", 1)[1]: v for k, v in row.items() if k.startswith(f"train/{side}_")}
            total = terms.pop("total", None)
            if total is None and not terms:
                continue
            inner = ", ".join(f"{name} {_fmt(value)}" for name, value in terms.items())
            parts.append(f"{side.upper()} {_fmt(total) if total is not None else ''}" + (f" ({inner})" if inner else ""))
        # overall validation metrics (per-category ones, val/psnr/abnormal, are in history.csv)
        val = [f"{k.split('/', 1)[1]} {_fmt(v)}" for k, v in row.items() if k.startswith("val/") and k.count("/") == 1]
        if val:
            parts.append("val " + ", ".join(val))
        lrs = [f"{k[3:]} {v:.3g}" for k, v in row.items() if k.startswith("lr-")]
        if lrs:
            parts.append("lr " + ", ".join(lrs))
        return f"epoch {int(row['epoch']) + 1}/{trainer.max_epochs} ({row['seconds']:.0f} s): " + " | ".join(parts)
