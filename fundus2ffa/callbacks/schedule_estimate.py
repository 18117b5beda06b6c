"""Say at the start of training how long it will run: epochs, iterations and a measured time estimate.

The number of epochs comes from the model's schedule (papers: pix2pix 100 + 100, reference_spec 5);
``data=synthetic`` shortens it to 3 + 2 so the demo finishes in minutes, and any other data config keeps
the paper schedule. A new user who switches to their own data should learn that at once, not after a
day: the first lines name the epoch count and, after ``measure`` timed iterations (the first
``warmup`` skipped: allocation and cuDNN autotuning), the estimated wall time of the whole run.
"""

import logging
import time

import lightning as L

log = logging.getLogger("fundus2ffa")


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


class ScheduleEstimate(L.Callback):
    """Log the epoch count at fit start and the estimated training time after a few iterations.

    Args:
        warmup: iterations not timed.
        measure: iterations timed for the estimate (the estimate is logged once, in the first epoch).
    """

    def __init__(self, warmup: int = 2, measure: int = 5):
        self.warmup, self.measure = int(warmup), int(measure)
        self.total_iterations: int | None = None
        self.seconds_per_iteration: float | None = None
        self.estimate_s: float | None = None
        self._start: float | None = None
        self._first = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        per_epoch = trainer.num_training_batches
        epochs = trainer.max_epochs
        start = trainer.current_epoch  # restored on resume: the epochs already done
        left = max(epochs - start, 0)
        self.total_iterations = int(per_epoch * left) if per_epoch != float("inf") else None
        if hasattr(pl_module, "schedule_summary"):
            origin = f" ({pl_module.schedule_summary(epochs)})"
        else:
            schedule = pl_module.hparams.get("schedule") if hasattr(pl_module, "hparams") else None
            origin = f" (model.schedule {dict(schedule)})" if schedule else ""
        span = f"epoch {epochs}" if left == 1 else f"epochs {start + 1}-{epochs}"
        where = f", {span} of {epochs} (resumed after epoch {start})" if start else ""
        limit = ""
        if trainer.max_steps is not None and trainer.max_steps > 0:
            # global_step counts optimizer steps: a GAN iteration steps G and D
            per_iteration = max(1, len(trainer.optimizers))
            by_steps = -(-max(trainer.max_steps - trainer.global_step, 0) // per_iteration)
            self.total_iterations = by_steps if self.total_iterations is None else min(self.total_iterations, by_steps)
            limit = f", at most trainer.max_steps={trainer.max_steps} optimizer steps ({per_iteration} per iteration)"
        log.info(
            "training %d epoch%s%s%s x %s iterations per epoch%s; override trainer.max_epochs, trainer.max_steps or "
            "model.schedule.* to change", left, "" if left == 1 else "s", where, origin, per_epoch, limit,
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        # a run shorter than the warmup is timed from its first iteration
        first_timed = self.warmup if trainer.num_training_batches > self.warmup else 0
        if self.estimate_s is None and self._start is None and batch_idx == first_timed:
            self._start = time.perf_counter()
            self._first = batch_idx

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.estimate_s is not None or self._start is None:
            return
        timed = batch_idx - self._first + 1
        last = batch_idx + 1 >= trainer.num_training_batches
        if timed < self.measure and not last:
            return
        self.seconds_per_iteration = (time.perf_counter() - self._start) / timed
        self.estimate_s = self.seconds_per_iteration * (self.total_iterations or 0)
        log.info(
            "measured %.3g s per iteration over %d iterations: about %s for %d iterations (training only, "
            "validation not included)", self.seconds_per_iteration, timed, _duration(self.estimate_s),
            self.total_iterations or 0,
        )
