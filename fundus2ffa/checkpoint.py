"""The checkpoint file: read and written here (issue 8, items 1 to 3); a model is rebuilt from it by the
one loader, :mod:`fundus2ffa.loader`, which also checks every class name the file carries.

Reading: every checkpoint goes through :func:`load_checkpoint`, ``torch.load(..., weights_only=True)``:
a file whose pickle would build anything but tensors and plain containers is refused before any of its
code runs, and the error names the file and the globals it asked for. ``SAFE_GLOBALS`` is the
allow-list of extra types; it is empty because nothing this project stores needs one: Lightning stores
dicts, lists, strings, numbers and tensors (ModelCheckpoint's state, loops, optimizer and LambdaLR
states), the models store their hyperparameters as plain containers (``GANModule.store_hparams``), and
the RNG and image-pool states are tensors and lists. Loaded with weights_only in the tests: pix2pix
(tests/test_checkpoint.py, tests/test_resume.py), CycleGAN's pools (tests/models/test_cycle_gan.py),
Fundus2Video (prediction in tests/models/test_autoregressive_gan.py). A missing, empty, truncated or corrupt file is a :class:`CheckpointError`
naming the path and what is wrong with it.

Writing: :func:`atomic_save` writes through :func:`fundus2ffa.writers.atomic_write` (a temporary file
beside the target, flushed and fsynced, then ``os.replace``d over it), so a checkpoint name always
holds either the previous complete file or the new complete one. The temporary file is removed on any
error (also ``KeyboardInterrupt``); a kill -9 can leave one, which :func:`remove_temp_files` removes at
the next start (``RunCheckpoint.on_fit_start``). A full disk (ENOSPC, EDQUOT) becomes a
:class:`CheckpointError` naming the folder. :class:`SafeCheckpointIO` routes Lightning's own saves and
loads (resume, ``trainer.test(ckpt_path=...)``) through these two functions; :func:`install` puts it on a
trainer. Lightning's own writer serialises into memory, then moves a file written in ``$TMPDIR``, which
is neither atomic across filesystems nor cleaned up after a kill.

What a checkpoint carries (format 1), besides Lightning's keys (``state_dict``, ``optimizer_states``,
``lr_schedulers``, ``loops``, ``callbacks``, ``hyper_parameters``, ``epoch``, ``global_step``)::

    checkpoint["fundus2ffa_target"] = "fundus2ffa.models.PairedGAN"      # the LightningModule class
    checkpoint["fundus2ffa"] = {
        "format": 1,
        "config": {...},        # the whole resolved run config (OmegaConf.to_container(cfg, resolve=True))
        "model_target": "fundus2ffa.models.PairedGAN",
    }

A best-K file (``RunCheckpoint``) is *light*: the same keys without ``optimizer_states`` and
``lr_schedulers`` and, unless asked, without the discriminators' weights (what evaluation, prediction,
export and the demo need: generator, EMA copy, run config). It says so under ``checkpoint["fundus2ffa_light"]``
(:func:`light_copy`): ``{"dropped": [...], "dropped_modules": ["discriminator"], "resume_from": <last.ckpt>}``.
The model refills dropped modules with their initial weights when it loads one (``GANModule.on_load_checkpoint``);
resuming training from a light file is refused (:func:`check_resumable`).

``config`` holds plain containers only, so it loads with ``weights_only=True``. ``config["model"]``
rebuilds the module; ``config["data"]`` holds the data settings the model was trained with (image size,
transforms, reader options; a ``data.preprocess`` node where the data config has one), which
``task=test`` and ``task=predict`` reuse (:func:`checkpoint_config` reads it as a DictConfig). The record
is written by ``GANModule.on_save_checkpoint`` from ``module.fundus2ffa_record``, which ``run`` sets to
:func:`run_record` of the run's config.
"""

from __future__ import annotations

import logging
import pickle
import signal
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, ListConfig, OmegaConf

from fundus2ffa import writers
from fundus2ffa.errors import CheckpointError, ConfigError, OutputError
from fundus2ffa.writers import TEMP_SUFFIX, atomic_write  # noqa: F401 - TEMP_SUFFIX: the temporary files' names

log = logging.getLogger(__name__)

FORMAT = 1
RECORD_KEY = "fundus2ffa"
TARGET_KEY = "fundus2ffa_target"
LIGHT_KEY = "fundus2ffa_light"
# what a light (evaluation-only) checkpoint leaves out: the state only training needs
TRAINING_STATE_KEYS = ("optimizer_states", "lr_schedulers")
# Extra types torch.load may build besides tensors and plain containers: none is needed (see above).
SAFE_GLOBALS: list = []


# ----------------------------------------------------------------------------------------- reading
def load_checkpoint(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict:
    """Load a checkpoint with ``weights_only=True``; any problem is a CheckpointError naming ``path``.

    ``mmap=True`` maps the tensors instead of reading them (cheap when only metadata is needed).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; point ckpt_path to a .ckpt file (e.g. <run dir>/checkpoints/last.ckpt)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file; point ckpt_path to a .ckpt file inside <run dir>/checkpoints/")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): a save that never completed; use another checkpoint of the run")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        unsafe = _unsafe_globals(path)
        if unsafe or "Weights only load failed" in str(exc):
            raise CheckpointError(
                f"refused to load checkpoint {path}: it asks to build Python objects ({', '.join(unsafe) or 'see below'}) "
                "that could run code when loaded, and fundus2ffa only loads tensors and plain containers "
                "(torch.load weights_only=True). Use a checkpoint written by fundus2ffa; a file from elsewhere "
                f"must be converted to a plain state_dict where you trust it. ({str(exc).splitlines()[0]})"
            ) from None
        raise _corrupt(path, exc) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as exc:
        raise _corrupt(path, exc) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a checkpoint dict; is it a Lightning .ckpt?")
    return checkpoint


# the start of PyTorch's legacy (non-zip, before 1.6) format: its pickled magic number 0x1950a86a20f9469cfc6c
_LEGACY_MAGIC = b"l\xfc\x9cF\xf9 j\xa8P\x19"


def _legacy_format(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(32)
    except OSError:
        return False
    return head[:1] == b"\x80" and _LEGACY_MAGIC in head and not zipfile.is_zipfile(path)


def _corrupt(path: Path, exc: BaseException) -> CheckpointError:
    if _legacy_format(path):
        converted = path.with_name(f"{path.stem}.zip{path.suffix}")
        return CheckpointError(
            f"checkpoint {path} is in PyTorch's legacy format (the non-zip format of torch.save before PyTorch 1.6, or "
            "_use_new_zipfile_serialization=False), which fundus2ffa does not read: it maps checkpoints (mmap), which "
            "needs the zip format. Convert it once (tensors and plain containers only) with "
            f"python -c \"import torch; torch.save(torch.load('{path}', weights_only=True), '{converted}')\" "
            f"and use {converted} (if that fails too, the file is damaged: use another checkpoint of the run)."
        )
    return CheckpointError(
        f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): "
        "the file is incomplete (e.g. a copy or a save that did not finish) or not a torch checkpoint; "
        "use another checkpoint of the run (last.ckpt or best-*.ckpt) or copy it again"
    )


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - a legacy (non-zip) pickle: the error message says enough
        return []


def checkpoint_meta(path: str | Path) -> dict:
    """{"checkpoint", "epoch", "global_step"} read from the file itself (mmap: tensors are not read)."""
    checkpoint = load_checkpoint(path, mmap=True)
    return {"checkpoint": str(path), "epoch": int(checkpoint.get("epoch", -1)), "global_step": int(checkpoint.get("global_step", -1))}


def model_target(checkpoint: dict) -> str | None:
    """The LightningModule class (dotted path) a checkpoint was written by."""
    record = checkpoint.get(RECORD_KEY) or {}
    return record.get("model_target") or checkpoint.get(TARGET_KEY)


def stored_config(checkpoint: dict, path: str | Path) -> DictConfig:
    """The run config stored in a loaded checkpoint; CheckpointError when it holds none."""
    record = checkpoint.get(RECORD_KEY)
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise CheckpointError(
            f"checkpoint {path} does not carry its run config (written before fundus2ffa stored it, or by another "
            "tool); retrain, or rebuild it by hand with the model and data configs it was trained with"
        )
    if int(record.get("format", 0)) > FORMAT:
        raise CheckpointError(f"checkpoint {path} has config format {record['format']}, newer than this fundus2ffa ({FORMAT}); update fundus2ffa")
    return OmegaConf.create(record["config"])


def checkpoint_config(path: str | Path) -> DictConfig:
    """The resolved run config a checkpoint was trained with (``config["data"]``, ``config["model"]``, ...)."""
    return stored_config(load_checkpoint(path, mmap=True), path)


def run_record(cfg: DictConfig) -> dict:
    """What ``checkpoint["fundus2ffa"]`` holds for a run of ``cfg`` (plain containers only)."""
    plain = {}
    for key in cfg:
        if key == "hydra":  # Hydra's own settings (present with return_hydra_config): not the run's
            continue
        value = cfg[key]
        plain[key] = OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
    return {"format": FORMAT, "config": plain, "model_target": OmegaConf.select(cfg, "model._target_")}


def check_model_class(path: str | Path, checkpoint: dict, expected: str | None) -> str:
    """The checkpoint's model class; ConfigError naming both when ``expected`` is another class."""
    target = model_target(checkpoint)
    if not target:
        if not expected:
            raise ConfigError(f"checkpoint {path} does not name its model class; pass model=<the model it was trained with>")
        return expected
    if expected and _short(expected) != _short(target):
        raise ConfigError(
            f"checkpoint {path} holds a {_short(target)} model ({target}), but the config builds a {_short(expected)} "
            f"({expected}); choose the model config it was trained with, or drop the model override"
        )
    return target


def _short(target: str) -> str:
    return str(target).rsplit(".", 1)[-1]


def config_differences(stored: Any, current: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(key, stored value, current value) for every leaf that differs between two plain configs."""
    if isinstance(stored, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(stored) | set(current), key=str):
            out += config_differences(stored.get(key, "<absent>"), current.get(key, "<absent>"), f"{prefix}.{key}" if prefix else str(key))
        return out
    return [] if stored == current else [(prefix, stored, current)]


# ----------------------------------------------------------------------------------------- light files
def light_copy(checkpoint: dict, drop_modules: tuple[str, ...] = (), resume_from: str | None = None) -> dict:
    """``checkpoint`` without its training-only state: optimizer and learning-rate scheduler states and the
    weights of the submodules ``drop_modules`` (e.g. ``("discriminator",)``), marked under :data:`LIGHT_KEY`.
    A shallow copy: the tensors are shared, nothing is cloned."""
    prefixes = tuple(f"{name}." for name in drop_modules)
    light = {k: v for k, v in checkpoint.items() if k not in TRAINING_STATE_KEYS}
    state = checkpoint.get("state_dict") or {}
    light["state_dict"] = {k: v for k, v in state.items() if not k.startswith(prefixes)} if prefixes else dict(state)
    dropped_modules = sorted({name for name in drop_modules if any(k.startswith(f"{name}.") for k in state)})
    light[LIGHT_KEY] = {
        "dropped": [k for k in TRAINING_STATE_KEYS if k in checkpoint],
        "dropped_modules": dropped_modules,
        "resume_from": resume_from,
    }
    return light


def is_light(checkpoint: dict) -> bool:
    return isinstance(checkpoint.get(LIGHT_KEY), dict)


def check_resumable(path: str | Path, checkpoint: dict) -> None:
    """Resuming needs the optimizer and scheduler states: a light (best-K) file is refused, naming the
    run's last.ckpt."""
    if not is_light(checkpoint):
        return
    path = Path(path)
    info = checkpoint[LIGHT_KEY]
    last = path.parent / "last.ckpt"
    named = str(last) if last.is_file() else (info.get("resume_from") or f"{path.parent / 'last.ckpt'}")
    left_out = ", ".join(info.get("dropped") or []) + (
        f" and the weights of {', '.join(info['dropped_modules'])}" if info.get("dropped_modules") else "")
    raise CheckpointError(
        f"cannot resume training from {path}: it is a best-K checkpoint that holds only what evaluation needs "
        f"(no {left_out or 'training state'}), so training cannot continue exactly from it. Resume from the run's "
        f"last.ckpt: ckpt_path={named}. (This file still serves task=test, task=predict, export and the demo.)"
    )


# ----------------------------------------------------------------------------------------- writing
@contextmanager
def _ctrl_c_deferred():
    """Ctrl+C (SIGINT) during the block is held until the block ends, then raised as usual. A
    KeyboardInterrupt in the middle of ``torch.save`` made its zip writer fail with "file write failed",
    so the save was lost and the error read like a full disk (seen under load: the signal landed in the
    epoch-end save); deferred, the save completes and the interrupt then writes the final last.ckpt.
    Only in the main thread (the only one Python delivers signals to)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    received = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


def atomic_save(obj: Any, target: str | Path) -> None:
    """``torch.save(obj)`` to ``target`` atomically and durably (fundus2ffa.writers.atomic_write: temporary
    file beside it, fsync, os.replace); a full disk is a CheckpointError naming the folder. Ctrl+C waits
    for the save to finish (:func:`_ctrl_c_deferred`)."""
    target = Path(target)
    try:
        with _ctrl_c_deferred(), atomic_write(target, fsync=True, what="the checkpoint") as tmp:
            with open(tmp, "xb") as handle:
                torch.save(obj, handle)
                handle.flush()
    except OutputError as exc:
        raise CheckpointError(
            f"{exc} Then resume with ckpt_path=<its last.ckpt> (move the run with FUNDUS2FFA_ROOT / paths.root_dir)."
        ) from None


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Remove temporary files left in ``folder`` by an interrupted save (e.g. a kill -9)."""
    return writers.remove_temp_files(folder)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO through :func:`atomic_save` and :func:`load_checkpoint`.

    ``mmap``: map the files it loads instead of reading them (evaluation after training sets it: only the
    weights are paged in, never the optimizer state; a resume reads, so no replaced file stays mapped)."""

    mmap = False

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO takes no storage_options")
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_checkpoint(path, map_location=map_location if map_location is not None else "cpu", mmap=self.mmap)


def install(trainer) -> None:
    """Give ``trainer`` the safe checkpoint IO, unless it was configured with another custom one."""
    current = getattr(trainer.strategy, "_checkpoint_io", None)
    if current is None or type(current) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = SafeCheckpointIO()
