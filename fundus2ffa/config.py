"""Where the configs live, the OmegaConf resolvers they use, and config checks run before anything
is built. Configs are found in a checkout (``<repo>/conf``) and in an installed wheel
(``fundus2ffa/conf``, copied there at build time)."""

import argparse
import secrets
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from fundus2ffa.errors import ConfigError

TASKS = ("train", "test", "predict")


def config_dir() -> Path:
    """The ``conf`` folder: the package's copy in a wheel, else the repository's."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "run.yaml").is_file():
            return candidate
    raise ConfigError(f"cannot find the fundus2ffa configs (run.yaml) next to {here}; reinstall the package")


def run_id() -> str:
    """6 random hex digits drawn once per process: the suffix that keeps run folders of runs started in
    the same second apart (conf/hydra/default.yaml). One value per process, so a sweep's folder and its
    jobs' (and Hydra's config cache copied into each job) agree."""
    global _RUN_ID
    if _RUN_ID is None:
        _RUN_ID = secrets.token_hex(3)
    return _RUN_ID


_RUN_ID: str | None = None


def settings_from_config(cls, node, key: str):
    """The settings dataclass ``cls`` from a plain config mapping ``node`` (None: the defaults); a key
    ``cls`` does not have is a ConfigError naming it, the config key ``key`` and the known keys."""
    node = dict(node or {})
    known = cls.__dataclass_fields__
    unknown = sorted(set(node) - set(known))
    if unknown:
        raise ConfigError(f"unknown {key} keys {unknown}; known: {sorted(known)}")
    return cls(**node)


# config groups that are not a command's own: Hydra's, the optional local overlay
HELP_SKIPPED_GROUPS = ("hydra", "local")


def _defaults_of(primary: str) -> dict[str, str]:
    """group -> option chosen in the defaults list of ``conf/<primary>.yaml`` (``- model: pix2pix``)."""
    node = OmegaConf.load(config_dir() / f"{primary}.yaml")
    chosen = {}
    for entry in node.get("defaults") or []:
        if isinstance(entry, (dict, DictConfig)):
            for key, value in entry.items():
                group = str(key).replace("optional ", "").replace("override ", "").strip()
                chosen[group] = value
    return chosen


def help_groups(primary: str, *excluded: str) -> str:
    """The config groups a command composes from (``--help``), one per line with its options and default:
    the folders of conf/ except Hydra's and ``excluded`` (another command's groups: ``downstream`` is
    transfer's). Nested options (``experiment=li2020/proposed``) are listed with their folder."""
    root = config_dir()
    chosen = _defaults_of(primary)
    lines = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        group = folder.name
        if group in HELP_SKIPPED_GROUPS or group in excluded:
            continue
        options = sorted(str(f.relative_to(folder).with_suffix("")) for f in folder.rglob("*.yaml"))
        if not options:
            continue
        default = chosen.get(group)
        default = ", ".join(map(str, default)) if isinstance(default, (list, ListConfig)) else default
        lines.append(f"  {group}: {', '.join(options)}" + (f"   (default: {default})" if default not in (None, "None") else ""))
    return "\n".join(lines)


def help_keys(primary: str) -> str:
    """The keys of ``conf/<primary>.yaml`` itself (everything but its defaults list), as written there: each
    with its default value and comment."""
    text = (config_dir() / f"{primary}.yaml").read_text().splitlines()
    out, skipping = [], False
    for line in text:
        if line.startswith(("defaults:", "hydra:")):  # the composition and Hydra's own settings: not keys to set
            skipping = True
            continue
        if skipping:
            if line.startswith((" ", "-", "\t")) or not line.strip():
                continue
            skipping = False
        if line.startswith("#") or not line.strip():
            continue
        out.append("  " + line)
    return "\n".join(out).replace("$", "$$")  # Hydra fills the help template with string.Template: $$ is a $


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` of the argparse commands: the description as written (its example lines intact) and every
    option's default."""


def register_resolvers() -> None:
    """``${f2f.sum:a,b}``: integer sum, used for max_epochs = constant + decay epochs.
    ``${f2f.run_id:}``: the per-process run id (:func:`run_id`); ``${f2f.file_uri:path}``: the absolute
    ``file://`` URI of a path (MLflow's local store)."""
    if not OmegaConf.has_resolver("f2f.sum"):
        OmegaConf.register_new_resolver("f2f.sum", lambda *xs: sum(int(x) for x in xs))
    if not OmegaConf.has_resolver("f2f.run_id"):
        OmegaConf.register_new_resolver("f2f.run_id", run_id, use_cache=True)
    if not OmegaConf.has_resolver("f2f.help_groups"):  # --help: the command's config groups, defaults marked
        OmegaConf.register_new_resolver("f2f.help_groups", lambda primary, *excluded: help_groups(primary, *excluded))
    if not OmegaConf.has_resolver("f2f.help_keys"):  # --help: the command's own keys with their defaults
        OmegaConf.register_new_resolver("f2f.help_keys", help_keys)
    if not OmegaConf.has_resolver("f2f.file_uri"):  # MLflow's local store needs an absolute file:// URI
        OmegaConf.register_new_resolver("f2f.file_uri", lambda path: Path(str(path)).expanduser().resolve().as_uri())


def check_config(cfg: DictConfig) -> None:
    """Checks that Hydra cannot make itself; each error names the key and the fix."""
    if cfg.get("task") not in TASKS:
        raise ConfigError(f"task must be one of {'|'.join(TASKS)}, got {cfg.get('task')!r} (e.g. task=train)")
    if cfg.task == "test" and not cfg.get("ckpt_path"):
        raise ConfigError("task=test needs a checkpoint: add ckpt_path=/path/to/run/checkpoints/last.ckpt")
    if cfg.task == "predict":
        if not cfg.get("ckpt_path"):
            raise ConfigError("task=predict needs a checkpoint: add ckpt_path=/path/to/run/checkpoints/last.ckpt")
        if not cfg.predict.get("input_dir"):
            raise ConfigError("task=predict needs input images: add predict.input_dir=/folder/of/cf/images")
    ckpt = cfg.get("ckpt_path")
    if ckpt and not Path(ckpt).is_file():
        raise ConfigError(f"ckpt_path={ckpt} does not exist; point it to a .ckpt file (e.g. <run dir>/checkpoints/last.ckpt)")
    init = cfg.get("init_from")
    if init and cfg.task == "train" and not Path(str(init)).is_file():
        raise ConfigError(f"init_from={init} does not exist; point it to the .ckpt file to fine-tune from (e.g. <run dir>/checkpoints/last.ckpt)")
    if cfg.get("eval_ckpt") not in ("last", "best"):
        raise ConfigError(f"eval_ckpt must be last or best, got {cfg.get('eval_ckpt')!r}")
    _check_positive_int(cfg, "data.image_size")
    if cfg.task == "predict":
        _check_positive_int(cfg, "predict.image_size")
    _check_epochs(cfg)
    _check_accelerator(cfg)
    _check_kinds(cfg)


def _check_positive_int(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive whole number of pixels, got {value!r}; e.g. {key}=256")


def _check_epochs(cfg: DictConfig) -> None:
    """trainer.max_epochs=-1 means "train forever" to Lightning: refused unless a step or time limit ends it."""
    trainer = cfg.get("trainer") or {}
    epochs = trainer.get("max_epochs")
    if epochs is None or cfg.task != "train":
        return
    if isinstance(epochs, bool) or not isinstance(epochs, int):
        raise ConfigError(f"trainer.max_epochs must be a whole number of epochs, got {epochs!r}; e.g. trainer.max_epochs=200")
    steps, max_time = trainer.get("max_steps"), trainer.get("max_time")
    bounded = (isinstance(steps, int) and steps > 0) or bool(max_time)
    if epochs == -1 and not bounded:
        raise ConfigError(
            "trainer.max_epochs=-1 trains forever (nothing would end the run); set a positive trainer.max_epochs, "
            "or keep -1 and end the run with trainer.max_steps=<N> or trainer.max_time=DD:HH:MM:SS"
        )
    if epochs < -1 or (epochs == 0 and not bounded):
        raise ConfigError(f"trainer.max_epochs must be positive (or -1 with trainer.max_steps), got {epochs}; e.g. trainer.max_epochs=200")


def _check_accelerator(cfg: DictConfig) -> None:
    """A GPU trainer on a machine without one: say so, rather than Lightning's backend message."""
    accelerator = str((cfg.get("trainer") or {}).get("accelerator", "auto")).lower()
    if accelerator not in ("gpu", "cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} (trainer=gpu or ddp) but no GPU was found (torch.cuda.is_available() is "
            "False: no CUDA device, driver or CUDA build of torch). Run on the CPU with trainer=cpu (or trainer=default, "
            "which picks a GPU when there is one), or check nvidia-smi and CUDA_VISIBLE_DEVICES."
        )


def _check_kinds(cfg: DictConfig) -> None:
    """Video models need video data and image models image data (both directions, naming both)."""
    model, data = cfg.get("model") or {}, cfg.get("data") or {}
    model_kind, data_kind = str(model.get("kind", "image")), str(data.get("kind", "image"))
    if model_kind == data_kind:
        return
    choices = _choices()
    model_name = f"model={choices['model']}" if "model" in choices else f"model {model.get('_target_')}"
    data_name = f"data={choices['data']}" if "data" in choices else f"data {data.get('_target_')}"
    if model_kind == "video":
        fix = "add a video data config: data=synthetic_video | data=uwf_video | data=fundus2video_csv data.reader.csv=..."
    else:
        fix = "use a still-image data config (data=synthetic | paired_folder | isfahan | uwf_phases ...) or a video model (model=fundus2video)"
    raise ConfigError(
        f"{model_name} ({model.get('_target_')}) is a {model_kind} model but {data_name} ({data.get('_target_')}) serves "
        f"{data_kind} data; {fix}"
    )


def _choices() -> dict:
    """Hydra's group choices of this run (empty outside a Hydra app)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return dict(HydraConfig.get().runtime.choices)
    except Exception:  # noqa: BLE001 - not under @hydra.main / compose with the hydra node
        return {}
