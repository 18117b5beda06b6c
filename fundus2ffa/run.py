"""The Hydra entry point: compose -> check -> instantiate -> fit / test / predict.

    python -m fundus2ffa.run                                   # pix2pix on the synthetic retina, CPU
    python -m fundus2ffa.run model=saliency_cgan data=isfahan data.reader.root=/data/isfahan
    python -m fundus2ffa.run task=test ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt
    python -m fundus2ffa.run task=predict ckpt_path=... predict.input_dir=/my/cf/images
    python -m fundus2ffa.run -m model=pix2pix,saliency_cgan   # a sweep, one run directory per job
    python -m fundus2ffa.run hparams_search=pix2pix_optuna    # Optuna search of optimized_metric (val/psnr)
    python -m fundus2ffa.run --cfg job --resolve              # the composed config, interpolations resolved
    python -m fundus2ffa.run --help                           # config groups, launchers, sweepers

Each run writes into its run directory: checkpoints/ (last.ckpt, best-*.ckpt), metrics.json (final val
and test metrics), test_per_image.csv, samples/ (CF | real FFA | generated FFA grids), results/ (per test image
outputs and index.html, fundus2ffa.results_page), the resolved config (.hydra/config.yaml,
config_resolved.yaml, config_tree.log) and the logs (run.log).
"""

import csv
import json
import logging
from pathlib import Path

import hydra
import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from fundus2ffa.config import check_config, config_dir, register_resolvers
from fundus2ffa.errors import ConfigError
from fundus2ffa.run_extras import finish_run, log_config, optimized_metric, start_run

register_resolvers()
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


def build_callbacks(cfg: DictConfig) -> list:
    return [build(node, f"callbacks.{name}") for name, node in (cfg.get("callbacks") or {}).items() if node]


def build_loggers(cfg: DictConfig) -> list:
    return [build(node, f"logger.{name}") for name, node in (cfg.get("logger") or {}).items() if node]


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    return build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    tmp.replace(path)


def write_rows(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    tmp = path.with_name(path.name + ".part")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def evaluate(cfg: DictConfig, trainer: L.Trainer, model, datamodule, ckpt_path: str | None) -> dict:
    """Validate and test one checkpoint; write metrics.json and test_per_image.csv (rank 0)."""
    results = {}
    for stage, call in (("val", trainer.validate), ("test", trainer.test)):
        if stage == "test" and "test" not in datamodule.datasets:
            continue
        metrics = call(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        prefix = f"{stage}/"
        results[stage] = {k[len(prefix):]: float(v) for k, v in (metrics[0] if metrics else {}).items() if k.startswith(prefix)}
    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir)
        payload = {
            **results,
            "checkpoint": str(ckpt_path) if ckpt_path else None,
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "model": cfg.model.get("_target_"),
        }
        write_json(out / "metrics.json", payload)
        write_rows(out / "test_per_image.csv", getattr(model, "eval_rows", {}).get("test", []))
    return results


def run(cfg: DictConfig) -> dict:
    """Run ``cfg.task``; returns the metrics (train/test) or the written prediction paths (predict)."""
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    if cfg.task == "predict":
        from fundus2ffa.predict import predict

        return predict(cfg)

    # Data first: a missing folder, corrupt image or mismatched pair fails before anything is written.
    datamodule = build(cfg.data, "data")
    datamodule.setup("fit")
    model = build(cfg.model, "model", _recursive_=False)
    trainer = build_trainer(cfg, build_callbacks(cfg), build_loggers(cfg))
    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    log_config(cfg, trainer.loggers, model)

    if cfg.task == "test":
        results = evaluate(cfg, trainer, model, datamodule, cfg.ckpt_path)
        finish_run(cfg, trainer)
        return results

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    checkpoint = trainer.checkpoint_callback
    ckpt = None
    if checkpoint is not None:
        ckpt = checkpoint.best_model_path if cfg.eval_ckpt == "best" else checkpoint.last_model_path
    results = evaluate(cfg, trainer, model, datamodule, ckpt or None)
    finish_run(cfg, trainer)
    return results


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="run")
def main(cfg: DictConfig) -> float | None:
    """Hydra main; returns ``optimized_metric`` (a validation metric) so sweepers can optimise it."""
    start_run(cfg)
    return optimized_metric(cfg, run(cfg))


if __name__ == "__main__":
    main()
