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

Checkpoints (fundus2ffa/checkpoint.py) carry the resolved run config. ``task=test`` and ``task=predict``
rebuild the model, and take the data settings, from the checkpoint alone: the command line's model,
generator, discriminator and loss settings are not used, and an explicit override of one of them that
differs from the checkpoint is refused, naming the key and both values (a ``data=<config>`` choice or
``data.*`` override is applied on top of the checkpoint's data settings, with a warning where it changes
``data.image_size``). Resuming (``task=train ckpt_path=...``) refuses a checkpoint of another model class
or with weights of other shapes, naming both and the config keys that differ.

metrics.json: ``val`` / ``test`` metrics; ``checkpoint``, ``epoch`` (0-based, as Lightning counts) and
``global_step`` read from the checkpoint file that was evaluated; ``validated_on`` (where validation
came from: val | val_carved_from_train | test | null) and ``selected_on`` (the split whose metric chose
the evaluated checkpoint: null for last.ckpt); a ``warning`` when validation used the test split.
"""

import csv
import json
import math
import logging
from pathlib import Path

import hydra
import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue

from fundus2ffa import checkpoint as ckpt_io
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


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list, validate: bool = True) -> L.Trainer:
    """The trainer, with checkpoints written and read through fundus2ffa.checkpoint (atomic, weights_only)."""
    extra = {} if validate else {"limit_val_batches": 0, "num_sanity_val_steps": 0}
    trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False, **extra)
    ckpt_io.install(trainer)
    return trainer


def _strict_json(value):
    """NaN / inf (an empty field of view scores NaN) become null: metrics.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(_strict_json(payload), indent=2, sort_keys=True, allow_nan=False))
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


def test_baselines(cfg: DictConfig, datamodule) -> dict | None:
    """Trivial predictors (constant at the training FFA mean, per-pixel linear map of the CF) scored on the
    test images like the model (metrics/baselines.py); None for datamodules without paired train/test."""
    from fundus2ffa.data.datamodule import PairedDataModule
    from fundus2ffa.metrics.baselines import score_baselines

    if not isinstance(datamodule, PairedDataModule) or not {"train", "test"} <= set(datamodule.datasets):
        return None
    metrics = OmegaConf.to_container(cfg.model.get("metrics") or {}, resolve=True)
    return score_baselines(datamodule, metrics)


def selected_on(path: str | None, checkpoint: dict | None) -> str | None:
    """The split whose metric chose checkpoint ``path``: the run's validation source when the file is one of
    its monitored best-K files, None for last.ckpt (chosen by nothing but the end of training)."""
    if not path or not checkpoint:
        return None
    name = Path(path).name
    for state in (checkpoint.get("callbacks") or {}).values():
        if isinstance(state, dict) and state.get("monitor") and name in {Path(p).name for p in state.get("best_k_models") or {}}:
            return (checkpoint.get(ckpt_io.RECORD_KEY) or {}).get("val_source", "val")
    return None


def evaluate(cfg: DictConfig, trainer: L.Trainer, model, datamodule, ckpt_path: str | None) -> dict:
    """Validate and test one checkpoint; write metrics.json and test_per_image.csv (rank 0).

    Epoch and step come from the evaluated checkpoint file, not from the trainer."""
    results = {}
    for stage, call in (("val", trainer.validate), ("test", trainer.test)):
        if stage not in datamodule.datasets:
            continue
        metrics = call(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True)
        prefix = f"{stage}/"
        results[stage] = {k[len(prefix):]: float(v) for k, v in (metrics[0] if metrics else {}).items() if k.startswith(prefix)}
    validated_on = getattr(datamodule, "val_source", "val")
    results["validated_on"] = validated_on
    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir)
        if ckpt_path:
            checkpoint = ckpt_io.load_checkpoint(ckpt_path, mmap=True)
            where = {"checkpoint": str(ckpt_path), "epoch": int(checkpoint.get("epoch", -1)), "global_step": int(checkpoint.get("global_step", -1))}
        else:  # no checkpoint callback: the weights in memory at the end of training
            checkpoint = None
            where = {"checkpoint": None, "epoch": trainer.current_epoch - 1, "global_step": trainer.global_step}
        payload = {
            **{k: v for k, v in results.items() if k in ("val", "test")},
            **where,
            "model": cfg.model.get("_target_"),
            "validated_on": validated_on,
            "selected_on": selected_on(ckpt_path, checkpoint),
        }
        baselines = test_baselines(cfg, datamodule)
        if baselines:
            payload["baselines"] = baselines
        if validated_on == "test" or payload["selected_on"] == "test":
            payload["warning"] = (
                "validation used the TEST split (data.val_from=test): checkpoint selection, early stopping and "
                "sweep objectives saw test metrics, so the test metrics are not an independent result"
            )
        write_json(out / "metrics.json", payload)
        write_rows(out / "test_per_image.csv", getattr(model, "eval_rows", {}).get("test", []))
    return results


def _cli_overrides() -> list[str]:
    """The command line's overrides (empty outside ``@hydra.main``, e.g. compose-API callers)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - no Hydra app running
        return []


MODEL_GROUPS = ("model", "generator", "discriminator", "loss")


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def config_from_checkpoint(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the model and data settings of ``cfg.ckpt_path`` (task=test / predict).

    An explicit command-line override of a model-building key (model, generator, discriminator, loss:
    a group choice or a value) that differs from the checkpoint is refused, naming the key and both
    values. ``data=<config>`` replaces the checkpoint's data settings with that config; ``data.*``
    overrides apply on top; a change of ``data.image_size`` is warned about by name."""
    path = cfg.ckpt_path
    checkpoint = ckpt_io.load_checkpoint(path, mmap=True)
    if not isinstance(checkpoint.get(ckpt_io.RECORD_KEY), dict):
        # written without a run record (an older fundus2ffa, or trainer.save_checkpoint of a bare module)
        ckpt_io.check_model_class(path, checkpoint, cfg.model.get("_target_") if cfg.task == "test" else None)
        log.warning("checkpoint %s carries no run config: model and data settings come from the command line", path)
        return cfg
    stored = ckpt_io.stored_config(checkpoint, path)
    target = ckpt_io.check_model_class(path, checkpoint, None)
    keys = [_override_key(o) for o in _cli_overrides() if "=" in o]
    conflicts = []
    for key in keys:
        if key.split(".", 1)[0] not in MODEL_GROUPS:
            continue
        if "." not in key:  # a group choice: compare the classes it builds
            key = f"{key}._target_"
        now, then = OmegaConf.select(cfg, key, default=None), OmegaConf.select(stored, key, default=None)
        now = OmegaConf.to_container(now, resolve=True) if isinstance(now, DictConfig) else now
        then = OmegaConf.to_container(then, resolve=True) if isinstance(then, DictConfig) else then
        if now != then:
            conflicts.append(f"{key}={now!r} (the checkpoint has {then!r})")
    if conflicts:
        raise ConfigError(
            f"task={cfg.task} rebuilds the model from {path} ({target}); these overrides contradict it: "
            f"{'; '.join(conflicts)}. Drop them (the checkpoint's settings are used), or use a checkpoint trained with them."
        )
    out = cfg.copy()
    with open_dict(out):
        for group in MODEL_GROUPS:
            if group in stored:
                out[group] = stored[group]
        data_choice = any(key == "data" for key in keys)
        if not data_choice and "data" in stored:
            data = stored.data.copy()
            with open_dict(data):
                for key in keys:
                    if key.startswith("data."):
                        value = OmegaConf.select(cfg, key, default=None)
                        OmegaConf.update(data, key[len("data."):], value, force_add=True)
            out.data = data
    then = OmegaConf.select(stored, "data.image_size", default=None)
    now = OmegaConf.select(out, "data.image_size", default=None)
    if then is not None and now != then:
        log.warning("data.image_size=%s differs from the checkpoint's %s (%s): the model runs at %s as asked", now, then, path, now)
    return out


def check_resume(cfg: DictConfig, model) -> None:
    """``task=train ckpt_path=...``: the checkpoint loads safely, is of this model class and its weights fit."""
    path = cfg.ckpt_path
    checkpoint = ckpt_io.load_checkpoint(path, mmap=True)
    ckpt_io.check_model_class(path, checkpoint, cfg.model.get("_target_"))
    record = checkpoint.get(ckpt_io.RECORD_KEY) or {}
    differences = []
    if isinstance(record.get("config"), dict):
        current = OmegaConf.to_container(cfg.model, resolve=True)
        differences = ckpt_io.config_differences(record["config"].get("model") or {}, current, "model")
    mine = model.state_dict()
    theirs = checkpoint.get("state_dict") or {}
    misfit = [k for k in mine if k not in theirs or tuple(theirs[k].shape) != tuple(mine[k].shape)]
    misfit += [k for k in theirs if k not in mine]
    shown = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, a, b in differences[:6])
    if misfit:
        raise ConfigError(
            f"cannot resume from {path}: its weights do not fit this model ({len(misfit)} tensors differ, e.g. {misfit[0]}). "
            f"Config keys that differ from the checkpoint: {shown or 'none recorded'}. Resume with the settings it was trained with."
        )
    if differences:
        log.warning("resuming from %s with model settings that differ from the checkpoint's: %s", path, shown)


def run(cfg: DictConfig) -> dict:
    """Run ``cfg.task``; returns the metrics (train/test) or the written prediction paths (predict)."""
    check_config(cfg)
    if cfg.task in ("test", "predict"):
        cfg = config_from_checkpoint(cfg)
        check_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    if cfg.task == "predict":
        from fundus2ffa.predict import predict

        return predict(cfg)

    # Data first: a missing folder, corrupt image or mismatched pair fails before anything is written.
    datamodule = build(cfg.data, "data")
    datamodule.setup("fit")
    val_source = getattr(datamodule, "val_source", "val")
    model = build(cfg.model, "model", _recursive_=False)
    if cfg.task == "train" and cfg.get("ckpt_path"):
        check_resume(cfg, model)
    model.fundus2ffa_record = {**ckpt_io.run_record(cfg), "val_source": val_source}
    trainer = build_trainer(cfg, build_callbacks(cfg, val_source), build_loggers(cfg), validate=val_source is not None)
    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    log_config(cfg, trainer.loggers, model)

    if cfg.task == "test":
        results = evaluate(cfg, trainer, model, datamodule, cfg.ckpt_path)
        finish_run(cfg, trainer)
        return results

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    checkpoint = trainer.checkpoint_callback
    ckpt = None
    if checkpoint is not None:
        best = cfg.eval_ckpt == "best"
        if best and not checkpoint.best_model_path:
            log.warning("eval_ckpt=best but no checkpoint was selected (no validation split): evaluating last.ckpt")
        ckpt = checkpoint.best_model_path if best and checkpoint.best_model_path else checkpoint.last_model_path
    results = evaluate(cfg, trainer, model, datamodule, ckpt or None)
    finish_run(cfg, trainer)
    return results


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="run")
def main(cfg: DictConfig) -> float | None:
    """Hydra main; returns ``optimized_metric`` (a validation metric, never a test metric unless
    data.val_from=test) so sweepers can optimise it; None without a validation split."""
    start_run(cfg)
    results = run(cfg)
    if isinstance(results, dict) and results.get("validated_on") == "test":
        log.warning("the sweep objective (%s) is measured on the TEST split (data.val_from=test)", cfg.get("optimized_metric"))
    return optimized_metric(cfg, results)


if __name__ == "__main__":
    main()
