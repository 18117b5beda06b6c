"""Where the configs live, the OmegaConf resolvers they use, and config checks run before anything
is built. Configs are found in a checkout (``<repo>/conf``) and in an installed wheel
(``fundus2ffa/conf``, copied there at build time)."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fundus2ffa.errors import ConfigError

TASKS = ("train", "test", "predict")


def config_dir() -> Path:
    """The ``conf`` folder: the package's copy in a wheel, else the repository's."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "run.yaml").is_file():
            return candidate
    raise ConfigError(f"cannot find the fundus2ffa configs (run.yaml) next to {here}; reinstall the package")


def register_resolvers() -> None:
    """``${f2f.sum:a,b}``: integer sum, used for max_epochs = constant + decay epochs;
    ``${f2f.file_uri:path}``: the absolute ``file://`` URI of a path."""
    if not OmegaConf.has_resolver("f2f.sum"):
        OmegaConf.register_new_resolver("f2f.sum", lambda *xs: sum(int(x) for x in xs))
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
    if cfg.get("eval_ckpt") not in ("last", "best"):
        raise ConfigError(f"eval_ckpt must be last or best, got {cfg.get('eval_ckpt')!r}")
