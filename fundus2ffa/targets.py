"""Which ``_target_`` a config may name when it comes from a file: the allow-list (issue 19, item 1).

A checkpoint loads with ``torch.load(weights_only=True)``, so its pickle builds nothing but tensors and
plain containers; but the run config and the hyperparameters stored in it name classes by
``_target_``, and instantiating those names runs whatever they point to: a stored generator target of
``subprocess.Popen`` with ``shell: true`` ran a shell command in four doors before this module. So
every ``_target_`` read back from a file, at any depth, must resolve to

* a class defined inside the ``fundus2ffa`` package, or one of its functions marked :func:`factory`
  (checked on the object found, not on the string: ``fundus2ffa.app.os.system`` starts with
  ``fundus2ffa.`` and is ``os.system``), or
* one of the exact names in :data:`TRUSTED` (the optimisers, Lightning's trainer, callbacks, loggers and
  strategy that the shipped configs use, and torch.nn activations / norms),

else the whole config is refused, naming the key and the target, before anything is built (the way a
web framework never instantiates a class named in a request). The models check the targets they build
from their hyperparameters too (:func:`instantiate`), so ``Module.load_from_checkpoint`` outside the
project's loader is covered as well.

Your own classes: set ``FUNDUS2FFA_TRUSTED_TARGETS`` to a comma-separated list of module prefixes
(``mylab.nets.,mylab.losses.``) you trust; checkpoints of your runs then load with them.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Iterator
from typing import Any

from fundus2ffa.errors import UnsafeTargetError

PACKAGE = "fundus2ffa"
ENV = "FUNDUS2FFA_TRUSTED_TARGETS"
FACTORY_MARK = "__fundus2ffa_factory__"

TRUSTED = frozenset({
    # optimisers (model.optimizer_g / optimizer_d, _partial_)
    *(f"torch.optim.{name}" for name in ("Adam", "AdamW", "SGD", "RMSprop", "Adamax", "NAdam", "RAdam", "Adagrad")),
    # torch.nn building blocks a net config may name
    *(f"torch.nn.{name}" for name in ("ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Identity", "GELU", "SiLU", "ELU",
                                      "BatchNorm2d", "InstanceNorm2d", "GroupNorm", "Dropout")),
    # the trainer, callbacks, loggers and strategies of conf/ (a stored run config, used by resume)
    "lightning.Trainer", "lightning.pytorch.Trainer",
    *(f"lightning.pytorch.callbacks.{name}" for name in ("EarlyStopping", "LearningRateMonitor", "RichProgressBar",
                                                        "TQDMProgressBar", "ModelCheckpoint", "RichModelSummary",
                                                        "ModelSummary", "Timer", "DeviceStatsMonitor")),
    *(f"lightning.pytorch.loggers.{name}" for name in ("CSVLogger", "TensorBoardLogger", "WandbLogger", "MLFlowLogger")),
    *(f"lightning.pytorch.strategies.{name}" for name in ("DDPStrategy", "SingleDeviceStrategy", "FSDPStrategy")),
})


def _user_prefixes() -> tuple[str, ...]:
    return tuple(p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip())


def _locate(target: str) -> Any:
    """The object a dotted path names: the longest importable module prefix, then attributes."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(target)


def is_trusted(target: Any) -> bool:
    """Whether ``target`` (a dotted path) may be built from a file (module notes)."""
    if not isinstance(target, str) or not target or not all(p.isidentifier() for p in target.split(".")):
        return False
    if target in TRUSTED:
        return True
    user = _user_prefixes()
    if user and target.startswith(user):
        return True
    if not target.startswith(PACKAGE + "."):
        return False
    try:
        obj = _locate(target)  # imports only fundus2ffa's own modules
    except (ImportError, AttributeError):
        return False
    module = getattr(obj, "__module__", "") or ""
    own = module == PACKAGE or module.startswith(PACKAGE + ".")
    return own and (inspect.isclass(obj) or getattr(obj, FACTORY_MARK, False) is True)


def factory(function):
    """Mark a fundus2ffa function that configs name by ``_target_`` (e.g. a logger factory) as buildable
    from a stored config; other functions of the package are not."""
    setattr(function, FACTORY_MARK, True)
    return function


def targets_in(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(key, value) of every ``_target_`` in a plain or OmegaConf tree, with its dotted key."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(tree, (DictConfig, ListConfig)):
        tree = OmegaConf.to_container(tree, resolve=False)
    if isinstance(tree, dict):
        for key, value in tree.items():
            where = f"{prefix}.{key}" if prefix else str(key)
            if key == "_target_":
                yield where, value
            else:
                yield from targets_in(value, where)
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from targets_in(value, f"{prefix}[{i}]")


def check_targets(tree: Any, source: str, prefix: str = "") -> None:
    """Refuse ``tree`` (a config read from ``source``) when any ``_target_`` in it is not trusted,
    naming every offending key and target; nothing is built or imported beyond fundus2ffa."""
    _refuse([(key, value) for key, value in targets_in(tree, prefix) if not is_trusted(value)], source)


def check_target(target: Any, key: str, source: str) -> str:
    """One target (e.g. a checkpoint's model-class field ``key``), refused as in :func:`check_targets`."""
    _refuse([] if is_trusted(target) else [(key, target)], source)
    return str(target)


def _refuse(bad: list[tuple[str, Any]], source: str) -> None:
    if not bad:
        return
    shown = "; ".join(f"{key}={value!r}" for key, value in bad[:6])
    raise UnsafeTargetError(
        f"refused {source}: it names classes outside fundus2ffa's allow-list ({shown}). Nothing was built or run. "
        "A checkpoint written by fundus2ffa names only fundus2ffa classes, torch optimisers and Lightning's "
        "trainer, callbacks and loggers; this file was edited or comes from elsewhere. If you wrote those "
        f"classes yourself, trust them with {ENV}=<module prefix>,..."
    )


def instantiate(config: Any, source: str = "a stored config", **kwargs) -> Any:
    """``hydra.utils.instantiate`` after :func:`check_targets`: what the models build from their
    hyperparameters (nets, losses, optimisers), which a checkpoint may have supplied."""
    from hydra.utils import instantiate as hydra_instantiate

    check_targets(config, source)
    return hydra_instantiate(config, **kwargs)


def resolve_class(target: Any, key: str, source: str) -> type:
    """The class ``target`` names, after :func:`check_target`."""
    check_target(target, key, source)
    return _locate(str(target))
