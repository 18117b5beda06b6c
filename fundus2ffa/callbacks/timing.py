"""Per-iteration wall time and FLOPs of training, measured from inside a normal ``fit``.

An iteration is measured from one ``on_train_batch_start`` to the next, so the time includes the
data loader, the G and D steps, every loss and logging: everything the framework adds. FLOPs of one
iteration are counted once with ``torch.utils.flop_counter`` (matmuls and convolutions, forward and
backward), on an iteration that is then left out of the timings.
"""

import time

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class IterationTimer(L.Callback):
    """Records ``times`` (seconds per iteration after ``warmup``) and ``flops`` (one iteration)."""

    def __init__(self, warmup: int = 3, count_flops_at: int = 1):
        self.warmup, self.count_flops_at = warmup, count_flops_at
        self.times: list[float] = []
        self.flops: int | None = None
        self._last: float | None = None
        self._counter: FlopCounterMode | None = None
        self.batch_size: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        _sync(pl_module.device)
        now = time.perf_counter()
        if self._last is not None and batch_idx - 1 >= self.warmup and batch_idx - 1 != self.count_flops_at:
            self.times.append(now - self._last)
        self._last = now
        self.batch_size = int(batch["cf"].shape[0])
        if batch_idx == self.count_flops_at:
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops = int(self._counter.get_total_flops())
            self._counter = None
