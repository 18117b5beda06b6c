"""lightning-hydra-template habits: config tree and run.log, the config in every logger (TensorBoard,
MLflow on a local file store, W&B offline), the Optuna sweeper returning a validation metric, --help and
--cfg job --resolve, the epoch count and time estimate at start, grids written while fitting only."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import REPO, cli
from fundus2ffa.errors import ConfigError
from fundus2ffa.run_extras import config_hparams, optimized_metric

TINY = ["debug=smoke", "data.reader.num_pairs=8", "data.image_size=32", "generator=resnet_9blocks", "generator.n_blocks=1"]


def test_optuna_sweep_logs_config_everywhere(tmp_path):
    env = {"FUNDUS2FFA_ROOT": str(tmp_path), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = cli("hparams_search=pix2pix_optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
                 *TINY, "logger=[csv,tensorboard,mlflow,wandb]", "tags=[sweeptest]", env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in range(2)]
    # the sweeper maximised what main returned: the validation PSNR of each trial, never a test metric
    assert best["best_value"] == pytest.approx(max(t["val"]["psnr"] for t in trials))
    assert set(best["best_params"]) == {"model.optimizer_g.lr", "model.optimizer_d.lr", "loss.l1.weight"}

    job = sweep / "0"
    log = (job / "run.log").read_text()
    assert "Trainer.fit" in log and "training 1 epoch " in log and "s per iteration" in log  # Lightning's and ours
    assert "epoch 1/1 (" in log and "val psnr" in log  # the per-epoch line (stdout is not a terminal)
    tree = (job / "config_tree.log").read_text()
    assert "CONFIG" in tree and "fundus2ffa.models.PairedGAN" in tree and "\x1b[" not in tree
    hparams = yaml.safe_load((job / "tensorboard" / "hparams.yaml").read_text())
    assert hparams["model"]["_target_"] == "fundus2ffa.models.PairedGAN" and hparams["tags"] == ["sweeptest"]
    assert hparams["model/params/total"] > 0
    # MLflow: a local file store under outputs/mlruns, one run per trial, the flattened config as params
    stores = list((tmp_path / "outputs" / "mlruns").glob("*/*/params"))
    assert len(stores) == 2
    assert (stores[0] / "model" / "_target_").read_text() == "fundus2ffa.models.PairedGAN"
    assert not (stores[0] / "tags").exists()  # tags are run tags, not a param
    assert (stores[0].parent / "tags" / "sweeptest").read_text() == "true"
    # W&B (offline): the config record is in the run's .wandb file
    (record,) = (job / "wandb").glob("offline-run-*/run-*.wandb")
    assert b"fundus2ffa.models.PairedGAN" in record.read_bytes() and b"sweeptest" in record.read_bytes()
    # one grid per fitted epoch (no copy from the final validation) and a test grid
    assert sorted(p.name for p in (job / "samples").glob("*.png")) == ["epoch_0000.png", "test.png"]
    assert (job / "results" / "index.html").is_file()


def test_optimized_metric_is_a_validation_metric():
    results = {"val": {"psnr": 21.5}, "test": {"psnr": 30.0}}
    cfg = OmegaConf.create({"optimized_metric": "val/psnr"})
    assert optimized_metric(cfg, results) == 21.5
    with pytest.raises(ConfigError, match="optimized_metric=test/psnr is not a validation metric"):
        optimized_metric(OmegaConf.create({"optimized_metric": "test/psnr"}), results)
    with pytest.raises(ConfigError, match="val/fid was not logged; this run logged val/psnr"):
        optimized_metric(OmegaConf.create({"optimized_metric": "val/fid"}), results)
    assert optimized_metric(cfg, ["a.png"]) is None  # task=predict


def test_config_hparams_are_resolved_plain_containers():
    cfg = OmegaConf.create({"a": 2, "b": "${a}", "tags": ["x"]})
    assert config_hparams(cfg) == {"a": 2, "b": 2, "tags": ["x"]}


def _cli(*args: str):
    """``python -m fundus2ffa.run ARGS`` without stdin (nothing here may wait for a terminal)."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", "fundus2ffa.run", *args], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=600)


def test_help_lists_launchers_and_cfg_resolve():
    result = _cli("--help")
    assert result.returncode == 0
    for launcher in sorted(p.stem for p in (REPO / "conf" / "hydra" / "launcher").glob("*.yaml")):
        assert f"hydra/launcher={launcher}" in result.stdout
    assert "hparams_search=pix2pix_optuna" in result.stdout and "--resolve" in result.stdout
    assert "model: " in result.stdout and "hparams_search: " in result.stdout  # the config groups

    resolved = _cli("--cfg", "job", "--resolve", "data.reader.num_pairs=8")
    assert resolved.returncode == 0
    assert yaml.safe_load(resolved.stdout)["trainer"]["max_epochs"] == 5  # synthetic: 3 + 2, resolved


def test_run_docstring_examples_use_existing_keys():
    import fundus2ffa.run as run_module

    assert "data.root=" not in run_module.__doc__ and "data.reader.root=" in run_module.__doc__
