"""Objects built from a composed run config: the trainer (with the safe checkpoint IO), its callbacks
and loggers, and any ``_target_`` node with errors that name the config key. Used by the training entry
(run.py), streaming prediction (inference/), transfer and the benches; it imports none of them."""

import logging

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from omegaconf.errors import MissingMandatoryValue

from fundus2ffa import checkpoint as ckpt_io
from fundus2ffa.errors import ConfigError

log = logging.getLogger("fundus2ffa")


def build(node: DictConfig, key: str, **kwargs):
    """Instantiate ``node``; a constructor that refuses its arguments becomes a ConfigError naming ``key``."""
    try:
        return instantiate(node, **kwargs)
    except MissingMandatoryValue as exc:
        missing = getattr(exc, "full_key", "") or key
        raise ConfigError(f"config value {missing} is not set (???); add {missing}=<value> to the command line") from None
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, (ConfigError,)) or type(cause).__name__ in ("DataError", "WeightsError"):
            raise cause from None
        raise ConfigError(
            f"cannot build config '{key}' ({node.get('_target_')}): {cause}. Check the keys under '{key}' "
            f"(python -m fundus2ffa.run --cfg job shows the composed config)"
        ) from cause


def build_callbacks(cfg: DictConfig, val_source: str | None = "val") -> list:
    """The configured callbacks. Monitors read validation metrics only (issue 15); without a validation
    split (``val_source`` None) the checkpoint callback keeps last.ckpt only and other monitoring callbacks
    (early stopping) are left out, with a warning."""
    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if not node:
            continue
        monitor = node.get("monitor") if isinstance(node, DictConfig) else None
        if monitor and str(monitor).startswith("test/"):
            raise ConfigError(
                f"callbacks.{name}.monitor={monitor} selects on the test split; monitor a validation metric "
                f"(callbacks.{name}.monitor=val/psnr), or validate on test explicitly with data.val_from=test"
            )
        if monitor and val_source is None:
            if str(node.get("_target_", "")).endswith(("ModelCheckpoint", "RunCheckpoint")):
                node = node.copy()
                with open_dict(node):
                    node.monitor, node.save_top_k = None, 0
                log.warning("no validation split: callbacks.%s keeps last.ckpt only (no %s to select on)", name, monitor)
            else:
                log.warning("no validation split: callbacks.%s (monitor %s) is left out", name, monitor)
                continue
        callbacks.append(build(node, f"callbacks.{name}"))
    return callbacks


def build_loggers(cfg: DictConfig) -> list:
    return [build(node, f"logger.{name}") for name, node in (cfg.get("logger") or {}).items() if node]


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list, validate: bool = True, **overrides) -> L.Trainer:
    """The trainer, with checkpoints written and read through fundus2ffa.checkpoint (atomic, weights_only);
    ``overrides``: Trainer arguments that replace the config's (predict: its own progress, in images)."""
    extra = {} if validate else {"limit_val_batches": 0, "num_sanity_val_steps": 0}
    extra.update(overrides)
    trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False, **extra)
    ckpt_io.install(trainer)
    return trainer
