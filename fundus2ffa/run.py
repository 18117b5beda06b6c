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
the evaluated checkpoint: null for last.ckpt); a ``warning`` when validation used the test split;
``baselines`` (constant, linear, blur, structure: metrics/baselines.py) scored like the model; on real
data ``realism`` (config ``realism``): the reference sets of the FID/KID columns (test/fid, fid_train,
fid_frames, ...), named with their sizes, and the real test FFA's own scores against them.
"""

import logging
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from fundus2ffa.config import check_config, config_dir, register_resolvers
from fundus2ffa.run_extras import HYDRA_FILES, check_run_folder, finish_run, log_config, optimized_metric, start_run
from fundus2ffa.writers import write_csv, write_json, write_text

# torch and Lightning (4-6 s to import on a 2-core machine) are imported inside the functions that use
# them, so `--help` and `--cfg job` answer in about a second (issue 23 item 7).

register_resolvers()
log = logging.getLogger("fundus2ffa")


def test_baselines(cfg: DictConfig, datamodule, realism=None) -> dict | None:
    """Trivial predictors (constant, linear map, blurred linear map, CF vessel structure) scored on the test
    images like the model (metrics/baselines.py), with FID/KID against ``realism``'s reference sets when
    given; for videos, the per-frame constant and linear map (metrics/video_baselines.py); None for
    datamodules without train and test splits."""
    from fundus2ffa.data.datamodule import DataModule
    from fundus2ffa.metrics.baselines import score_baselines
    from fundus2ffa.metrics.video_baselines import score_video_baselines

    if not isinstance(datamodule, DataModule) or not {"train", "test"} <= set(datamodule.datasets):
        return None
    metrics = OmegaConf.to_container(cfg.model.get("metrics") or {}, resolve=True)
    if datamodule.kind == "video":
        return score_video_baselines(datamodule, metrics)
    return score_baselines(datamodule, metrics, realism=realism)


def realism_setup(cfg: DictConfig, datamodule, callbacks: list) -> dict | None:
    """Realism metrics for this run (config ``realism``, metrics/realism.py): configures the FID/KID callback
    (the ``callbacks=fid`` one, or a new one appended to ``callbacks``) with the reference sets. Returns
    None when off, or {'skipped': why} when ``enabled: auto`` finds no cached Inception weights (a
    WeightsError, before training, when ``enabled: true``)."""
    from fundus2ffa.callbacks.fid import ImageSetMetrics
    from fundus2ffa.errors import ConfigError, WeightsError
    from fundus2ffa.weights import weights_path

    settings = cfg.get("realism") or {}
    enabled = settings.get("enabled", "auto")
    if enabled not in ("auto", True, False):
        raise ConfigError(f"realism.enabled must be auto, true or false, got {enabled!r}")
    reader = getattr(datamodule, "reader", None)
    still = getattr(datamodule, "kind", None) == "image" and "test" in getattr(datamodule, "datasets", {})
    if enabled == "auto":
        enabled = still and not getattr(reader, "synthetic", False)
    if not enabled:
        return None
    if not still:
        raise ConfigError("realism.enabled=true needs still-image data with a test split (data.kind=image); set realism.enabled=false")
    existing = next((c for c in callbacks if isinstance(c, ImageSetMetrics)), None)
    weights = existing.extractor_config["weights"] if existing else cfg.get("pretrained", {}).get("fid_inception", "cache")
    if existing is None or existing.extractor_config["backend"] == "fid_helper":
        try:
            weights_path("fid_inception", source=weights, config_key="pretrained.fid_inception")
        except WeightsError as exc:
            if settings.get("enabled", "auto") is True:
                raise
            log.warning("realism metrics (FID/KID) skipped: %s Or set realism.enabled=false to silence this.", exc)
            return {"skipped": str(exc)}
    references = {"train": bool(settings.get("train_targets", True)), "frames": settings.get("reference_dir"),
                  "max_frames": settings.get("max_frames")}
    if existing is None:
        existing = ImageSetMetrics(stages=("test",), weights=weights, kid_subsets=int(settings.get("kid_subsets", 100)),
                                   kid_subset_size=int(settings.get("kid_subset_size", 50)), references=references)
        callbacks.append(existing)
    else:
        if "test" not in existing.stages:
            existing.stages = (*existing.stages, "test")
        existing.references = references
    return {}


def selected_on(path: str | None, checkpoint: dict | None) -> str | None:
    """The split whose metric chose checkpoint ``path``: the run's validation source when the file is one of
    its monitored best-K files, None for last.ckpt (chosen by nothing but the end of training)."""
    from fundus2ffa import checkpoint as ckpt_io

    if not path or not checkpoint:
        return None
    name = Path(path).name
    for state in (checkpoint.get("callbacks") or {}).values():
        if isinstance(state, dict) and state.get("monitor") and name in {Path(p).name for p in state.get("best_k_models") or {}}:
            return (checkpoint.get(ckpt_io.RECORD_KEY) or {}).get("val_source", "val")
    return None


def evaluate(cfg: DictConfig, trainer, model, datamodule, ckpt_path: str | None, realism: dict | None = None) -> dict:
    """Validate and test one checkpoint; write metrics.json and test_per_image.csv (rank 0).

    Epoch and step come from the evaluated checkpoint file, not from the trainer. The file is mapped, not
    read (only the weights are paged in: a last.ckpt's optimizer state, two thirds of it, stays on disk), and
    the optimizers' state of a finished fit is released first: evaluation needs neither. ``realism``: what
    :func:`realism_setup` returned (None: off; {'skipped': why}; {}: on, scored by the FID/KID callback)."""
    from fundus2ffa import checkpoint as ckpt_io

    for optimizer in trainer.optimizers:
        optimizer.state.clear()
    io = getattr(trainer.strategy, "checkpoint_io", None)
    mapped = isinstance(io, ckpt_io.SafeCheckpointIO)
    if mapped:
        io.mmap = True
    results = {}
    try:
        for stage, call in (("val", trainer.validate), ("test", trainer.test)):
            if stage not in datamodule.datasets:
                continue
            metrics = call(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True)
            prefix = f"{stage}/"
            results[stage] = {k[len(prefix):]: float(v) for k, v in (metrics[0] if metrics else {}).items() if k.startswith(prefix)}
    finally:
        if mapped:
            io.mmap = False
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
        scorer = None
        if realism is not None and not realism.get("skipped"):
            from fundus2ffa.callbacks.fid import ImageSetMetrics

            scorer = next((c.realism for c in trainer.callbacks if isinstance(c, ImageSetMetrics) and c.realism), None)
        baselines = test_baselines(cfg, datamodule, scorer)
        if baselines:
            payload["baselines"] = baselines
        if scorer is not None:
            payload["realism"] = {"references": scorer.describe(), "real_test_ffa": scorer.real_test_scores(),
                                  "weights": str(cfg.get("pretrained", {}).get("fid_inception"))}
        elif realism:
            payload["realism"] = realism
        if validated_on == "test" or payload["selected_on"] == "test":
            payload["warning"] = (
                "validation used the TEST split (data.val_from=test): checkpoint selection, early stopping and "
                "sweep objectives saw test metrics, so the test metrics are not an independent result"
            )
        record = getattr(model, "fundus2ffa_record", None) or {}
        for key in ("resumed_from", "initialised_from"):
            if record.get(key):
                payload[key] = record[key]
        write_json(out / "metrics.json", payload)
        write_csv(out / "test_per_image.csv", getattr(model, "eval_rows", {}).get("test", []))
    return results


def task_summary(cfg: DictConfig) -> str:
    """What ``task=test`` / ``task=predict`` will do, in a few lines (instead of the whole config tree, which
    is in config_tree.log): the checkpoint, the data it is evaluated on or the images it translates, the mode."""
    from fundus2ffa import checkpoint as ckpt_io

    path = Path(str(cfg.ckpt_path))
    try:
        meta = ckpt_io.checkpoint_meta(path)
        light = ckpt_io.is_light(ckpt_io.load_checkpoint(path, mmap=True))
        where = f" (epoch {meta['epoch']}, step {meta['global_step']}{', best-K file: weights only' if light else ''})"
    except Exception:  # noqa: BLE001 - the loader names a bad file when it reads it
        where = ""
    model = str(OmegaConf.select(cfg, "model._target_", default="?")).rsplit(".", 1)[-1]
    lines = [f"task={cfg.task}: checkpoint {path}{where}, model {model}"]
    if cfg.task == "predict":
        mode = OmegaConf.select(cfg, "predict.mode", default=None)
        preprocess = OmegaConf.select(cfg, "data.preprocess", default=None)
        trained = (f"as trained: {OmegaConf.to_container(preprocess, resolve=True)}" if preprocess is not None else "as trained")
        lines.append(f"  input {OmegaConf.select(cfg, 'predict.input_dir', default=None)} -> "
                     f"output {OmegaConf.select(cfg, 'predict.output_dir', default=None)}")
        lines.append(f"  mode {mode or trained}")
    else:
        reader = OmegaConf.select(cfg, "data.reader", default=None)
        reader_items = OmegaConf.to_container(reader, resolve=True) if reader is not None else {}
        target = str(reader_items.pop("_target_", "?")).rsplit(".", 1)[-1]
        shown = ", ".join(f"{k}={v}" for k, v in reader_items.items() if k in ("root", "csv", "num_pairs", "num_eyes", "manifest"))
        lines.append(f"  data {target}({shown}) at image_size {OmegaConf.select(cfg, 'data.image_size', default='?')}, "
                     f"splits {OmegaConf.to_container(cfg.data.split, resolve=True) if 'split' in cfg.data else 'from the reader'}")
        lines.append(f"  mode model.eval_mode={OmegaConf.select(cfg, 'model.eval_mode', default='eval')}")
    lines.append("  (the whole config: config_tree.log in the run folder)")
    return "\n".join(lines)


def _cli_overrides() -> list[str] | None:
    """The command line's overrides (None outside ``@hydra.main``, e.g. compose-API callers)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - no Hydra app running
        return None


def run(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Run ``cfg.task``; returns the metrics (train/test) or the written prediction paths (predict).

    With ``ckpt_path`` the config is first completed from the checkpoint (fundus2ffa/loader.py
    ``run_config``: test and predict take its model and data, resuming takes its whole run config), and
    only then checked, so repeating the checkpoint's own ``model=`` is no contradiction. ``overrides``: the
    command line's (default: Hydra's record of them; None for a config composed in code)."""
    import lightning as L

    from fundus2ffa import checkpoint as ckpt_io
    from fundus2ffa import loader
    from fundus2ffa.builders import build, build_callbacks, build_loggers, build_trainer
    from fundus2ffa.host_allocator import configure_host_allocator
    from fundus2ffa.nets.blocks.matmul import configure_cpu_matmul

    if cfg.get("ckpt_path") and Path(str(cfg.ckpt_path)).is_file() and cfg.get("task") in ("train", "test", "predict"):
        cfg = loader.run_config(cfg, _cli_overrides() if overrides is None else overrides)
    check_config(cfg)
    if cfg.task == "train" and os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
        # never over another run's checkpoints and metrics (the command line checks this earlier); the first
        # process only: Lightning's DDP launcher re-runs the command for the other ranks in rank 0's folder
        check_run_folder(cfg.paths.output_dir, cfg, ignore=HYDRA_FILES)
    elif cfg.get("ckpt_path"):
        log.info("%s", task_summary(cfg))
    configure_host_allocator(cfg.get("host_allocator"))
    configure_cpu_matmul(cfg.get("cpu_matmul"))
    L.seed_everything(cfg.seed, workers=True)
    if cfg.task == "predict":
        from fundus2ffa.inference.predict import predict

        return predict(cfg)

    # Data first: a missing folder, corrupt image or mismatched pair fails before anything is written.
    datamodule = build(cfg.data, "data")
    datamodule.setup("fit")
    val_source = getattr(datamodule, "val_source", "val")
    model = build(cfg.model, "model", _recursive_=False)
    record = {**ckpt_io.run_record(cfg), "val_source": val_source}
    if cfg.task == "train" and cfg.get("ckpt_path"):
        loader.check_weights_fit(cfg.ckpt_path, model, cfg.model)
        record["resumed_from"] = str(Path(cfg.ckpt_path).resolve())
        if cfg.get("init_from"):
            log.info("init_from=%s is not applied: resuming from %s, which holds the weights", cfg.init_from, cfg.ckpt_path)
    elif cfg.task == "train" and cfg.get("init_from"):
        record["initialised_from"] = loader.init_weights(cfg.init_from, model)["source"]
        log.info("fine-tuning: the networks start from %s (a fresh optimizer, schedule and step)", cfg.init_from)
    model.fundus2ffa_record = record
    callbacks = build_callbacks(cfg, val_source)
    realism = realism_setup(cfg, datamodule, callbacks)  # before training: missing weights fail (enabled: true) now
    trainer = build_trainer(cfg, callbacks, build_loggers(cfg), validate=val_source is not None)
    if trainer.is_global_zero:
        write_text(Path(cfg.paths.output_dir) / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    log_config(cfg, trainer.loggers, model)

    if cfg.task == "test":
        results = evaluate(cfg, trainer, model, datamodule, cfg.ckpt_path, realism)
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
    results = evaluate(cfg, trainer, model, datamodule, ckpt or None, realism)
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
