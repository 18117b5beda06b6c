"""The one loader: a checkpoint file -> the trained model, its run config and its preprocessing
(issue 19, item 1). Every door that reads a checkpoint goes through here: training's resume, test,
predict, the web demo, export, transfer, the benches.

1. :func:`read`: the file through :func:`fundus2ffa.checkpoint.load_checkpoint` (``weights_only=True``:
   the pickle builds tensors and plain containers only), then every class name it carries is checked
   against the allow-list (:mod:`fundus2ffa.targets`) before anything is imported or built: the
   model-class fields, every ``_target_`` of the stored hyperparameters (generator, discriminator,
   losses, optimisers) and of the stored run config (model, data reader and transforms, trainer,
   callbacks, loggers). One name outside it refuses the file, naming the key and the target.
2. :func:`load`: the LightningModule class (a LightningModule, allow-listed), rebuilt from its stored
   hyperparameters, its weights loaded strictly, in eval mode; a :class:`LoadedModel` that also carries
   the stored run config and so the preprocessing the model was trained with
   (:meth:`LoadedModel.preprocess`).
3. :func:`run_config`: the config a run with ``ckpt_path`` uses. ``task=test`` / ``predict`` take the
   checkpoint's model and data settings; resuming (``task=train``) takes the whole stored run config
   (trainer, callbacks, loggers, seed too) and writes into the new run folder. The command line's
   own overrides change what they name; an override of a model-building key (model, generator,
   discriminator, loss) that contradicts the checkpoint is refused, naming both values; repeating the
   checkpoint's own choice (``model=fundus2video`` for a Fundus2Video checkpoint) is accepted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from fundus2ffa import checkpoint as ckpt_io
from fundus2ffa.errors import CheckpointError, ConfigError
from fundus2ffa.targets import check_target, check_targets, resolve_class

log = logging.getLogger(__name__)

MODEL_GROUPS = ("model", "generator", "discriminator", "loss")
# where a run writes and what it was asked to do: never taken from the checkpoint
RUN_LOCAL = ("hydra", "paths", "task", "ckpt_path")
TARGET_FIELDS = ("fundus2ffa_target", "fundus2ffa.model_target")


@dataclass
class Stored:
    """A checkpoint file read and checked: the dict (tensors memory-mapped unless loaded for weights),
    the model class it names and its stored run config (None for files written without one)."""

    path: Path
    checkpoint: dict
    target: str | None
    config: DictConfig | None

    @property
    def epoch(self) -> int:
        return int(self.checkpoint.get("epoch", -1))

    @property
    def global_step(self) -> int:
        return int(self.checkpoint.get("global_step", -1))


def read(path: str | Path, mmap: bool = True) -> Stored:
    """The checkpoint at ``path``, refused (UnsafeTargetError naming the key) when any class name in it
    is not allow-listed; ``mmap``: tensors are mapped, not read (metadata and config only)."""
    path = Path(path)
    checkpoint = ckpt_io.load_checkpoint(path, mmap=mmap)
    source = f"checkpoint {path}"
    record = checkpoint.get(ckpt_io.RECORD_KEY)
    fields = {"fundus2ffa_target": checkpoint.get(ckpt_io.TARGET_KEY)}
    if isinstance(record, dict):
        fields["fundus2ffa.model_target"] = record.get("model_target")
    for key, value in fields.items():
        if value is not None:
            check_target(value, key, source)
    check_targets(checkpoint.get("hyper_parameters") or {}, source, "hyper_parameters")
    config = None
    if isinstance(record, dict) and isinstance(record.get("config"), dict):
        check_targets(record["config"], source, "config")
        config = ckpt_io.stored_config(checkpoint, path)
    return Stored(path, checkpoint, ckpt_io.model_target(checkpoint), config)


@dataclass
class LoadedModel:
    """A trained model as its checkpoint implies it: the module (eval mode, on the CPU), the class
    name, the stored run config and where it came from."""

    path: Path
    model: Any
    target: str
    config: DictConfig | None
    epoch: int
    global_step: int

    @property
    def is_video(self) -> bool:
        return hasattr(self.model, "translate_video")

    @property
    def num_frames(self) -> int:
        return int(self.model.hparams.get("num_frames", 12))

    def stored(self, key: str, default: Any = None) -> Any:
        """A value of the stored run config (plain), e.g. ``data.image_size``; ``default`` when absent."""
        if self.config is None:
            return default
        value = OmegaConf.select(self.config, key, default=default)
        return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value

    def preprocess_settings(self) -> dict | None:
        """The stored ``data.preprocess`` (None for a checkpoint without its run config)."""
        settings = self.stored("data.preprocess")
        return dict(settings) if isinstance(settings, dict) else None

    def training_crop(self) -> tuple[int, int] | None:
        """(h, w) of the patches the model was evaluated on when they were cut at native scale
        (``data.eval_transform.crop_size``, e.g. Li et al.'s 288 x 360 quadrants), else None."""
        crop = self.stored("data.eval_transform.crop_size") or self.stored("data.train_transform.crop_size")
        if isinstance(crop, (list, tuple)) and len(crop) == 2:
            return int(crop[0]), int(crop[1])
        if isinstance(crop, int):
            return int(crop), int(crop)
        return None


def load(path: str | Path, expected: str | None = None) -> LoadedModel:
    """Rebuild the trained LightningModule of ``path`` (module notes, step 2). ``expected``: the class
    the caller's config builds (refused, naming both, when the checkpoint holds another)."""
    import lightning as L

    stored = read(path, mmap=False)
    path = stored.path
    target = ckpt_io.check_model_class(path, stored.checkpoint, expected)
    source = f"checkpoint {path}"
    cls = resolve_class(target, "model class", source)
    if not (isinstance(cls, type) and issubclass(cls, L.LightningModule)):
        raise CheckpointError(f"{source}: its model class {target} is not a LightningModule; refused")
    try:
        model = cls(**(stored.checkpoint.get("hyper_parameters") or {}))
    except TypeError as exc:
        raise CheckpointError(f"{source}: cannot rebuild {target} from its stored hyperparameters ({exc})") from None
    model.on_load_checkpoint(stored.checkpoint)
    try:
        model.load_state_dict(stored.checkpoint["state_dict"], strict=True)
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{source}: its weights do not fit {target} ({str(exc).splitlines()[0]})") from None
    return LoadedModel(path, model.eval(), target, stored.config, stored.epoch, stored.global_step)


# ------------------------------------------------------------------------------------ run configs
def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _rebase(node: Any, old: str | None, new: str | None) -> Any:
    """Every string leaf under the old run folder ``old`` moved under ``new`` (a resumed run writes
    its checkpoints, logs and samples into its own folder)."""
    if not old or not new or old == new:
        return node
    if isinstance(node, dict):
        return {k: _rebase(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_rebase(v, old, new) for v in node]
    if isinstance(node, str) and (node == old or node.startswith(old.rstrip("/") + "/")):
        return new + node[len(old):]
    return node


def run_config(cfg: DictConfig, overrides: list[str] | None) -> DictConfig:
    """``cfg`` (composed from the command line ``overrides``) with what ``cfg.ckpt_path`` implies
    (module notes, step 3). ``overrides`` None: a config composed in code (no command line), taken as
    complete for resuming; test / predict still take the checkpoint's model and data."""
    path = Path(cfg.ckpt_path)
    stored = read(path)
    if overrides is None and cfg.task == "train":
        return cfg
    if stored.config is None:
        # written without a run record (an older fundus2ffa, or trainer.save_checkpoint of a bare module)
        ckpt_io.check_model_class(path, stored.checkpoint, cfg.model.get("_target_") if cfg.task != "predict" else None)
        log.warning("checkpoint %s carries no run config: model and data settings come from the command line", path)
        return cfg
    target = ckpt_io.check_model_class(path, stored.checkpoint, None)
    keys = [_override_key(o) for o in overrides or [] if "=" in o]
    resume = cfg.task == "train"
    conflicts, changed = [], []
    for key in keys:
        if key.split(".", 1)[0] not in MODEL_GROUPS:
            continue
        compared = key if "." in key else f"{key}._target_"  # a group choice: compare the classes it builds
        now, then = _plain(OmegaConf.select(cfg, compared, default=None)), _plain(OmegaConf.select(stored.config, compared, default=None))
        if now != then:
            # resuming may change a value (a learning rate, a loss weight); never the classes built
            (changed if resume and "." in key else conflicts).append(f"{compared}={now!r} (the checkpoint has {then!r})")
    if conflicts:
        raise ConfigError(
            f"task={cfg.task} with ckpt_path={path} rebuilds the model from the checkpoint ({target}); these overrides "
            f"contradict it: {'; '.join(conflicts)}. Drop them (the checkpoint's settings are used), or use a checkpoint "
            "trained with them."
        )
    if changed:
        log.warning("resuming from %s with model settings that differ from the checkpoint's: %s", path, "; ".join(changed))
    taken = [k for k in stored.config if k not in RUN_LOCAL] if resume else [g for g in (*MODEL_GROUPS, "data") if g in stored.config]
    chosen = {k for k in keys if "." not in k}  # group choices (data=..., trainer=gpu): the command line's node
    ignored = sorted(k for k in chosen if k not in cfg and k not in stored.config)
    if ignored and resume:  # an overlay (experiment=, debug=) whose keys the checkpoint's config replaces
        log.warning(
            "%s on the command line changes nothing here: with ckpt_path the run's config comes from the checkpoint; "
            "name the keys to change instead (e.g. trainer.max_epochs=300)", ", ".join(f"{k}=..." for k in ignored),
        )
    old_dir = OmegaConf.select(stored.config, "paths.output_dir", default=None)
    try:
        new_dir = OmegaConf.select(cfg, "paths.output_dir", default=None, throw_on_missing=False)
    except Exception:  # noqa: BLE001 - ${hydra:...} outside a Hydra app: nothing to rebase onto
        new_dir = None
    out = cfg.copy()
    with open_dict(out):
        for key in taken:
            if key in chosen and key not in MODEL_GROUPS:
                continue
            value = _plain(stored.config[key])
            out[key] = _rebase(value, old_dir, new_dir) if resume else value
        for key in keys:  # the command line's values on top of the checkpoint's
            root = key.split(".", 1)[0]
            if "." in key and root in taken and root not in chosen and (root not in MODEL_GROUPS or resume):
                OmegaConf.update(out, key, _plain(OmegaConf.select(cfg, key, default=None)), force_add=True)
    then = OmegaConf.select(stored.config, "data.image_size", default=None)
    now = OmegaConf.select(out, "data.image_size", default=None)
    if then is not None and now != then:
        log.warning("data.image_size=%s differs from the checkpoint's %s (%s): the model runs at %s as asked", now, then, path, now)
    if resume:
        log.info("resuming from %s (epoch %d, step %d): the run's config comes from the checkpoint%s; this run writes to %s",
                 path, stored.epoch + 1, stored.global_step,
                 f", changed by {', '.join(k for k in keys if k not in ('ckpt_path', 'task'))}" if len(keys) > 1 else "", new_dir)
    return out


def check_weights_fit(path: str | Path, model, model_config: DictConfig) -> None:
    """Resume: the checkpoint is of this model class and its weights have this model's shapes; a misfit
    names the ``model`` keys that differ from the checkpoint's."""
    stored = read(path)
    ckpt_io.check_resumable(path, stored.checkpoint)  # a light best-K file has no optimizer state
    ckpt_io.check_model_class(path, stored.checkpoint, model_config.get("_target_"))
    differences = []
    if stored.config is not None and "model" in stored.config:
        differences = ckpt_io.config_differences(_plain(stored.config.model), _plain(model_config), "model")
    shown = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, a, b in differences[:6])
    mine = model.state_dict()
    theirs = stored.checkpoint.get("state_dict") or {}
    misfit = [k for k in mine if k not in theirs or tuple(theirs[k].shape) != tuple(mine[k].shape)]
    misfit += [k for k in theirs if k not in mine]
    if misfit:
        raise ConfigError(
            f"cannot resume from {path}: its weights do not fit this model ({len(misfit)} tensors differ, e.g. {misfit[0]}). "
            f"Config keys that differ from the checkpoint: {shown or 'none recorded'}. Resume with the settings it was "
            "trained with (drop the model overrides)."
        )
    if differences:
        log.warning("resuming from %s with model settings that differ from the checkpoint's: %s", path, shown)


def init_weights(path: str | Path, model) -> dict:
    """Fine-tuning (``init_from``): copy into ``model`` every network tensor of the checkpoint at ``path``
    whose name and shape fit, read with weights_only and the allow-list like every other door. The
    optimizer state, schedule and step are not taken (that is resuming: ``ckpt_path``). The generator must
    fit whole, or nothing is loaded (ConfigError naming the first tensor that does not); the other trained
    networks (the discriminator) are taken where they fit and named where they do not; the loss terms'
    fixed networks are this run's (``pretrained.*``). An EMA copy
    of the generator that the checkpoint lacks starts from the loaded generator. Returns
    ``{"loaded": n, "skipped": [names], "source": path}``."""
    stored = read(path, mmap=False)
    theirs = stored.checkpoint.get("state_dict") or {}
    mine = model.state_dict()
    # the loss terms' fixed nets (VGG19, LPIPS) come from ``pretrained.*`` of this run, never from the file
    fits = {k: v for k, v in theirs.items()
            if k in mine and not k.startswith("losses.") and tuple(v.shape) == tuple(mine[k].shape)}
    generator = [k for k in mine if k.startswith("generator.")]
    missing = [k for k in generator if k not in fits]
    if not fits or missing:
        first = missing[0] if missing else next(iter(mine), "-")
        why = "absent" if first not in theirs else f"shape {tuple(theirs[first].shape)} vs {tuple(mine[first].shape)}"
        raise ConfigError(
            f"init_from={path}: its weights do not fit this model's generator ({len(missing) or len(mine)} tensors, e.g. "
            f"{first}: {why}); fine-tune with the generator settings it was trained with"
        )
    ema_fresh = [k for k in mine if k.startswith("ema.") and k not in fits]
    model.load_state_dict(fits, strict=False)
    ema = getattr(model, "ema", None)
    if ema is not None and ema_fresh:
        for name, twin in ema.items():
            twin.load_state_dict(getattr(model, name).state_dict())
    skipped = [k for k in mine if k not in fits and not k.startswith(("ema.", "losses."))]
    if skipped:
        log.warning("init_from=%s: %d tensors do not fit and start fresh, e.g. %s", path, len(skipped), ", ".join(skipped[:3]))
    return {"loaded": len(fits), "skipped": skipped, "source": str(Path(path).resolve())}
