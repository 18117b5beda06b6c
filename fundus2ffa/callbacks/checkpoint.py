"""``RunCheckpoint``: Lightning's ModelCheckpoint with a last.ckpt that is never stale, atomic writes in
the run folder, a disk-space check before training, a final last.ckpt on SIGTERM / SIGINT, and no
checkpoint deleted that this process did not write (issue 8 item 2, issue 21 items 1, 4 and 7).

Lightning's ModelCheckpoint rewrites ``last.ckpt`` only when a top-k file is saved in the same step:
with ``monitor: val/psnr, save_top_k: 1`` a run whose PSNR peaked at epoch 4 of 10 keeps epoch 4 in
last.ckpt, and a resume goes back to epoch 4. Here last.ckpt is written at the end of every epoch (at
the same point Lightning saves top-k: validation end, or train epoch end without validation) and at
the end of training (a clean stop: max_epochs, max_steps, early stopping). Best-K files follow
``monitor`` / ``mode`` / ``save_top_k`` as in Lightning.

Light best files (issue 23 item 1): last.ckpt keeps everything a resume needs (weights, optimizer and
scheduler states, loops, callbacks). A best-K file keeps what evaluation needs: the generator (and its
EMA copy), the run config, the callbacks' state and the epoch and step, without the optimizer and
scheduler states and, unless ``best_discriminator: true``, without the discriminators' weights
(``fundus2ffa.checkpoint.light_copy``; for pix2pix at 256 px about a third of last.ckpt). While the best
epoch is the last one written, the best file is a hard link to that last.ckpt (one file on disk, two
names; ``fundus2ffa.writers.hard_link``); when last.ckpt moves on to a later epoch (it is replaced
atomically, so the best name keeps the old content), the best file is rewritten light. Where the disk
has no hard links the light file is written at once. ``best_files: full`` keeps Lightning's full best
files. Resuming from a light file is refused, naming last.ckpt (``fundus2ffa.checkpoint.check_resumable``).

Nothing lost: a start deletes no checkpoint. A superseded best (or last) file is removed only when this
process wrote it; a file of an earlier process (the run being resumed, a kill between saving a new best
and removing the old one) is kept, with a log line. A fresh run (no ``ckpt_path`` in this folder) whose
checkpoint folder already holds checkpoints is refused before anything is written: it would overwrite
their last.ckpt. A resume from a checkpoint of this folder continues it.

Pre-emption: on SIGTERM (what SLURM sends; Lightning's signal connector sets ``trainer.received_sigterm``
and its loops raise ``SIGTERMException`` after the current batch) and on SIGINT (Ctrl+C, Lightning's
KeyboardInterrupt handling) during fitting, :meth:`RunCheckpoint.on_exception` writes last.ckpt
(atomically) with the state after the last finished batch, so at most that batch is lost; the process
then exits with status 143 (128 + SIGTERM; Lightning's own SIGTERMException would exit 0) or 1 (SIGINT).
A mid-epoch last.ckpt resumes in the same epoch: Lightning restarts the epoch's loader and ends the epoch
after its remaining batch count.

Writes go through :class:`fundus2ffa.checkpoint.SafeCheckpointIO` (temp file beside the target, fsync,
os.replace; installed on the trainer in ``setup``); unfinished temp files of a killed run are removed at
fit start. Before training, the free space of ``dirpath``'s disk must hold ``min_free_checkpoints``
checkpoints (default 2: the new file is written before the old one is replaced), estimated as the
parameters and buffers plus the optimizer state (existing state, else two tensors per parameter as
Adam keeps); otherwise a CheckpointError names the folder and the bytes needed. A disk that fills up
later (torch's zip writer then fails with "unexpected pos") is a CheckpointError "no space left in
<folder>: <n> bytes needed"; the files already there are intact (atomic writes).
"""

from __future__ import annotations

import errno
import logging
import shutil
import signal
from pathlib import Path
from weakref import proxy

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fundus2ffa import checkpoint as ckpt_io
from fundus2ffa.errors import CheckpointError
from fundus2ffa.writers import hard_link

log = logging.getLogger(__name__)
NO_SPACE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# what torch's zip writer says when a write comes up short (a full disk: the file's write raised ENOSPC)
NO_SPACE_TEXT = ("unexpected pos", "file write failed", "no space left")
SIGTERM_EXIT = 128 + int(signal.SIGTERM)


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
    """ModelCheckpoint with last.ckpt every epoch, atomic writes, a disk-space check, a last.ckpt on SIGTERM /
    SIGINT, and removal of superseded files only when this process wrote them (module docstring).

    Args: those of ``lightning.pytorch.callbacks.ModelCheckpoint``, plus
        min_free_checkpoints: checkpoints' worth of free space required before training starts (0: no check).
        best_files: light (default: best-K files without optimizer and scheduler state, a hard link to
            last.ckpt while they are the same epoch) | full (Lightning's: everything, a separate file).
        best_discriminator: keep the discriminators' weights in light best files (default false).
    """

    def __init__(self, *args, min_free_checkpoints: float = 2, best_files: str = "light", best_discriminator: bool = False,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if best_files not in ("light", "full"):
            raise CheckpointError(f"callbacks.model_checkpoint.best_files must be light or full, got {best_files!r}")
        self.min_free_checkpoints = float(min_free_checkpoints)
        self.best_files = best_files
        self.best_discriminator = bool(best_discriminator)
        self._last_written_step: int | None = None
        self._written: set[Path] = set()  # files this process saved (resolved paths): the only ones it may remove
        self._saving_last = False
        self._writing_light = False
        self._pending_best: str | None = None  # a best file due at this step, settled once last.ckpt is written
        self._pending_removals: list[str] = []  # superseded files, removed once the new best exists
        self._full_links: set[Path] = set()  # best files that are hard links to a last.ckpt (full state)

    # ------------------------------------------------------------------ state
    def load_state_dict(self, state_dict: dict) -> None:
        """Lightning's restore, minus best files the checkpoint names that are not on disk (a process killed
        between writing last.ckpt and linking its best file): they are forgotten, not looked for later."""
        super().load_state_dict(state_dict)
        missing = [p for p in self.best_k_models if not Path(p).is_file()]
        if not missing:
            return
        for path in missing:
            self.best_k_models.pop(path)
        log.info("the resumed checkpoint names best file(s) that are not on disk (%s): forgotten", ", ".join(map(str, missing)))
        if self.best_k_models:
            pick = min if self.mode == "min" else max
            self.best_model_path = pick(self.best_k_models, key=self.best_k_models.get)
            self.best_model_score = self.best_k_models[self.best_model_path]
            worst = max if self.mode == "min" else min
            self.kth_best_model_path = worst(self.best_k_models, key=self.best_k_models.get)
            self.kth_value = self.best_k_models[self.kth_best_model_path]
        else:
            import torch

            self.best_model_path, self.best_model_score, self.kth_best_model_path = "", None, ""
            self.kth_value = torch.tensor(float("inf") if self.mode == "min" else float("-inf"))

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        ckpt_io.install(trainer)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self.dirpath is None:
            return
        folder = Path(self.dirpath)
        self.check_folder(folder, trainer.ckpt_path)
        ckpt_io.remove_temp_files(folder)
        self.check_free_space(folder, estimate_checkpoint_bytes(pl_module, trainer.optimizers))

    def check_folder(self, folder: Path, ckpt_path) -> None:
        """A fresh run never writes into a folder of another run's checkpoints (it would overwrite their
        last.ckpt); resuming from a checkpoint of ``folder`` continues that run there."""
        if not folder.is_dir():
            return
        existing = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(self.FILE_EXTENSION))
        if not existing:
            return
        if ckpt_path and Path(ckpt_path).resolve().parent == folder.resolve():
            return
        shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        resumed = f" (this run resumes from {ckpt_path}, which is not in it)" if ckpt_path else ""
        raise CheckpointError(
            f"checkpoint folder {folder} already holds {len(existing)} checkpoint(s) of another run ({shown}){resumed}; "
            "a new run there would overwrite them, so nothing was written. Write this run to a new folder (leave "
            "hydra.run.dir and paths.output_dir at their defaults, or choose an empty folder), or continue that run "
            f"with ckpt_path={folder / (self.CHECKPOINT_NAME_LAST or 'last')}{self.FILE_EXTENSION}."
        )

    def check_free_space(self, folder: Path, checkpoint_bytes: int) -> None:
        if self.min_free_checkpoints <= 0:
            return
        free = _free_bytes(folder)
        needed = int(self.min_free_checkpoints * checkpoint_bytes)
        if free is not None and free < needed:
            raise CheckpointError(
                f"not enough disk space for checkpoints in {folder}: {free} bytes free, {needed} bytes needed "
                f"({self.min_free_checkpoints:g} checkpoints of about {checkpoint_bytes} bytes: weights and optimizer "
                "state). Free space there, or write the run elsewhere (FUNDUS2FFA_ROOT=/bigger/disk or "
                "paths.root_dir=/bigger/disk)."
            )

    # ------------------------------------------------------------------ writing and removing
    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if not self._saving_last and self.best_files == "light" and self._fitting(trainer):
            # a best-K file: linked to this step's last.ckpt once that is written (_settle_best), else light now
            self._last_global_step_saved = trainer.global_step
            self._last_checkpoint_saved = filepath
            if self.save_last:
                self._pending_best = filepath
            else:
                self._write_light(trainer, filepath)
            return
        self._guarded(trainer, filepath, lambda: super(RunCheckpoint, self)._save_checkpoint(trainer, filepath))

    def _guarded(self, trainer: L.Trainer, filepath: str, save) -> None:
        """Run ``save`` (which writes ``filepath``), turning a full disk into a CheckpointError naming the folder."""
        try:
            save()
        except (RuntimeError, OSError) as exc:  # CheckpointError (atomic_save's ENOSPC) is a ValueError: below
            raise self._no_space(trainer, Path(filepath), exc) from None
        except CheckpointError as exc:
            if "no space left" not in str(exc):
                raise
            raise self._no_space(trainer, Path(filepath), exc) from None
        self._written.add(Path(filepath).resolve())

    # ------------------------------------------------------------------ light best files
    def _drop_modules(self, pl_module) -> tuple[str, ...]:
        if self.best_discriminator or not hasattr(pl_module, "training_only_modules"):
            return ()
        return tuple(pl_module.training_only_modules())

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        """While a light best file is being written: strip the checkpoint Lightning dumped (in place)."""
        if self._writing_light:
            light = ckpt_io.light_copy(checkpoint, self._drop_modules(pl_module), self.last_model_path or None)
            checkpoint.clear()
            checkpoint.update(light)

    def _write_light(self, trainer: L.Trainer, filepath: str) -> None:
        """Write ``filepath`` as a light checkpoint of the state in memory (every rank dumps; rank 0 writes)."""

        def save():
            self._writing_light = True
            try:
                trainer.save_checkpoint(filepath)
            finally:
                self._writing_light = False

        self._guarded(trainer, filepath, save)

    def _settle_best(self, trainer: L.Trainer) -> None:
        """After last.ckpt was written: the best file due at this step becomes a hard link to it (or a light file
        where links fail); superseded files go; best files linked to an earlier last.ckpt are rewritten light."""
        pending, self._pending_best = self._pending_best, None
        last = Path(self.last_model_path) if self.last_model_path else None
        if pending is not None:
            linked = False
            if trainer.is_global_zero and last is not None and last.is_file():
                linked = hard_link(last, pending)
            linked = bool(trainer.strategy.broadcast(linked, src=0))
            if linked:
                self._written.add(Path(pending).resolve())
                self._full_links.add(Path(pending).resolve())
            else:
                self._write_light(trainer, pending)
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.after_save_checkpoint(proxy(self))
        removals, self._pending_removals = self._pending_removals, []
        for path in removals:
            self._remove_checkpoint(trainer, path)
        if trainer.is_global_zero and last is not None:
            self._lighten_parted_links(trainer, last)
        trainer.strategy.barrier("RunCheckpoint._settle_best")

    def _lighten_parted_links(self, trainer: L.Trainer, last: Path) -> None:
        """Best files that were linked to an earlier last.ckpt (now replaced): rewrite them light."""
        keep = {Path(p).resolve() for p in self.best_k_models} | ({Path(self.best_model_path).resolve()} if self.best_model_path else set())
        for path in sorted(self._full_links):
            if path not in keep or not path.is_file():
                self._full_links.discard(path)
                continue
            try:
                if path.samefile(last):
                    continue
            except OSError:
                continue
            drop = self._drop_modules(trainer.lightning_module) if trainer.lightning_module is not None else ()
            self._guarded(trainer, str(path), lambda: self._rewrite_light(path, drop, last))
            self._full_links.discard(path)

    @staticmethod
    def _rewrite_light(path: Path, drop, last: Path) -> None:
        """``path`` rewritten as a light copy of itself (the file it linked to is ``last``); the mapped
        checkpoint lives only in this call."""
        checkpoint = ckpt_io.load_checkpoint(path, mmap=True)
        ckpt_io.atomic_save(ckpt_io.light_copy(checkpoint, drop, str(last)), path)

    def _no_space(self, trainer: L.Trainer, target: Path, exc: BaseException) -> BaseException:
        """``exc`` (a failed save) as a CheckpointError naming the folder and the bytes needed, when the disk
        is full; ``exc`` itself otherwise."""
        folder = target.parent
        free = _free_bytes(folder)
        needed = estimate_checkpoint_bytes(trainer.lightning_module, trainer.optimizers) if trainer.lightning_module else 0
        needed = max([needed] + [p.stat().st_size for p in self._written if p.is_file()])
        text = str(exc).lower()
        full = (
            (isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS)
            or any(marker in text for marker in NO_SPACE_TEXT)
            or (free is not None and free < needed)
        )
        if not full:
            return exc
        kept = [p.name for p in sorted(folder.glob(f"*{self.FILE_EXTENSION}")) if p.is_file()] if folder.is_dir() else []
        last = folder / f"{self.CHECKPOINT_NAME_LAST or 'last'}{self.FILE_EXTENSION}"
        return CheckpointError(
            f"no space left in {folder}: {needed} bytes needed to write {target.name} "
            f"(epoch {trainer.current_epoch}, step {trainer.global_step}), {free if free is not None else 'unknown'} bytes free. "
            f"The checkpoints already there are intact ({', '.join(kept) or 'none yet'}; writes are atomic). Free space "
            "there, or move the run to a larger disk (FUNDUS2FFA_ROOT=/bigger/disk), then resume with "
            f"ckpt_path={last}."
        )

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        """Remove a superseded checkpoint only when this process wrote it (and only once its successor exists)."""
        if self._pending_best is not None:
            self._pending_removals.append(filepath)
            return
        path = Path(filepath).resolve()
        if path not in self._written:
            log.info("keeping %s: superseded, but written before this process started (a run removes only its own files)", filepath)
            return
        super()._remove_checkpoint(trainer, filepath)
        self._written.discard(path)

    # ------------------------------------------------------------------ last.ckpt every epoch
    def _fitting(self, trainer: L.Trainer) -> bool:
        return not trainer.fast_dev_run and trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        self._saving_last = True
        try:
            super()._save_last_checkpoint(trainer, monitor_candidates)
        finally:
            self._saving_last = False
        if self.save_last:
            self._last_written_step = trainer.global_step
            self._settle_best(trainer)

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

    # ------------------------------------------------------------------ SIGTERM / SIGINT
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """SIGTERM (pre-emption) or SIGINT (Ctrl+C) while fitting: write last.ckpt before the process exits."""
        if isinstance(exception, KeyboardInterrupt):
            name = "SIGINT (Ctrl+C)"
        elif isinstance(exception, SIGTERMException) or getattr(trainer, "received_sigterm", False):
            name = "SIGTERM"
        else:
            return
        if isinstance(exception, SIGTERMException) and exception.code is None:
            exception.code = SIGTERM_EXIT  # not 0: the run did not finish (SystemExit() exits 0)
        if not self.save_last or not self._fitting(trainer) or self.dirpath is None:
            return
        try:
            self._ensure_last(trainer)
        except Exception as exc:  # noqa: BLE001 - the signal ends the run either way; say why nothing was saved
            log.error("%s received, but the final last.ckpt could not be written: %s", name, exc)
            return
        if trainer.is_global_zero:
            log.warning(
                "%s received: stopped at epoch %d, step %d; %s holds this state. Resume with ckpt_path=%s",
                name, trainer.current_epoch, trainer.global_step, self.last_model_path, self.last_model_path,
            )


def _free_bytes(folder: Path) -> int | None:
    """Free bytes on the disk of ``folder`` (or of its nearest existing parent); None when unknown."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return shutil.disk_usage(existing).free
    except OSError:
        return None
