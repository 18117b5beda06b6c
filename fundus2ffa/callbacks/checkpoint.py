"""``RunCheckpoint``: Lightning's ModelCheckpoint with a last.ckpt that is never stale, atomic writes in
the run folder, a disk-space check before training and no pile-up of best files (issue 8, item 2).

Lightning's ModelCheckpoint rewrites ``last.ckpt`` only when a top-k file is saved in the same step:
with ``monitor: val/psnr, save_top_k: 1`` a run whose PSNR peaked at epoch 4 of 10 keeps epoch 4 in
last.ckpt, and a resume goes back to epoch 4. Here last.ckpt is written at the end of every epoch (at
the same point Lightning saves top-k: validation end, or train epoch end without validation) and at
the end of training (a clean stop: max_epochs, max_steps, early stopping). Best-K files follow
``monitor`` / ``mode`` / ``save_top_k`` as in Lightning; files of this run's ``filename`` pattern left by
a kill between saving a new best and removing the old one are removed at the next start.

Writes go through :class:`fundus2ffa.checkpoint.SafeCheckpointIO` (temp file beside the target, fsync,
os.replace; installed on the trainer in ``setup``); unfinished temp files of a killed run are removed at
fit start. Before training, the free space of ``dirpath``'s disk must hold ``min_free_checkpoints``
checkpoints (default 2: the new file is written before the old one is replaced), estimated as the
parameters and buffers plus the optimizer state (existing state, else two tensors per parameter as
Adam keeps); otherwise a CheckpointError names the folder and the bytes needed.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from fundus2ffa import checkpoint as ckpt_io
from fundus2ffa.errors import CheckpointError

log = logging.getLogger(__name__)


def estimate_checkpoint_bytes(pl_module: L.LightningModule, optimizers: list) -> int:
    """Bytes of one checkpoint: parameters + buffers + optimizer state (two tensors per parameter where
    the optimizer has no state yet, as Adam's exp_avg / exp_avg_sq)."""
    weights = sum(t.numel() * t.element_size() for t in pl_module.state_dict().values() if hasattr(t, "numel"))
    state = 0
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            for param in group["params"]:
                held = optimizer.state.get(param)
                if held:
                    state += sum(v.numel() * v.element_size() for v in held.values() if hasattr(v, "numel"))
                else:
                    state += 2 * param.numel() * param.element_size()
    return int(weights + state)


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint with last.ckpt every epoch, atomic writes and a disk-space check (module docstring).

    Args: those of ``lightning.pytorch.callbacks.ModelCheckpoint``, plus
        min_free_checkpoints: checkpoints' worth of free space required before training starts (0: no check).
    """

    def __init__(self, *args, min_free_checkpoints: float = 2, **kwargs):
        super().__init__(*args, **kwargs)
        self.min_free_checkpoints = float(min_free_checkpoints)
        self._last_written_step: int | None = None

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        ckpt_io.install(trainer)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self.dirpath is None:
            return
        folder = Path(self.dirpath)
        ckpt_io.remove_temp_files(folder)
        self._remove_untracked_best_files(trainer, folder)
        self.check_free_space(folder, estimate_checkpoint_bytes(pl_module, trainer.optimizers))

    def check_free_space(self, folder: Path, checkpoint_bytes: int) -> None:
        if self.min_free_checkpoints <= 0:
            return
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        free = shutil.disk_usage(existing).free
        needed = int(self.min_free_checkpoints * checkpoint_bytes)
        if free < needed:
            raise CheckpointError(
                f"not enough disk space for checkpoints in {folder}: {free} bytes free, {needed} bytes needed "
                f"({self.min_free_checkpoints:g} checkpoints of about {checkpoint_bytes} bytes: weights and optimizer "
                "state). Free space there, or write the run elsewhere (FUNDUS2FFA_ROOT=/bigger/disk or "
                "paths.root_dir=/bigger/disk)."
            )

    def _remove_untracked_best_files(self, trainer: L.Trainer, folder: Path) -> None:
        """Best files of this run's pattern that the restored state does not track (a kill between saving
        a new best and removing the old one); never the file being resumed from."""
        if not folder.is_dir() or self.save_top_k < 0 or self.monitor is None:
            return
        prefix = re.split(r"\{", self.filename or "", maxsplit=1)[0]
        if not prefix:
            return
        keep = {Path(p).resolve() for p in [*self.best_k_models, self.best_model_path] if p}
        if trainer.ckpt_path:
            keep.add(Path(trainer.ckpt_path).resolve())
        for path in folder.glob(f"{prefix}*{self.FILE_EXTENSION}"):
            if path.resolve() not in keep and not path.name.startswith(self.CHECKPOINT_NAME_LAST or "last"):
                log.warning("removing %s: a best checkpoint no longer among the top %d (left by an interrupted run)", path, self.save_top_k)
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ last.ckpt every epoch
    def _fitting(self, trainer: L.Trainer) -> bool:
        return not trainer.fast_dev_run and trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_written_step = trainer.global_step

    def _ensure_last(self, trainer: L.Trainer) -> None:
        if self.save_last and self._fitting(trainer) and self._last_written_step != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._ensure_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._ensure_last(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._ensure_last(trainer)
