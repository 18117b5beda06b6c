"""Shared fixtures: the real configs composed with Hydra's compose API, shrunk for CPU tests."""

import os
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from fundus2ffa.config import config_dir, register_resolvers

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

register_resolvers()
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def compose_run(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """The composed ``run.yaml`` with ``overrides``; paths.output_dir points into ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("run", overrides=list(overrides))
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


def cli(*args: str, cwd: Path = REPO, timeout: int = 300, env: dict | None = None):
    """Run ``python -m fundus2ffa.run ARGS`` in a subprocess; returns the CompletedProcess."""
    import subprocess

    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "fundus2ffa.run", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def smoke_cfg(tmp_path):
    """A smoke-sized train config on the synthetic retina writing into tmp_path."""

    def make(*overrides: str) -> DictConfig:
        return compose_run(["debug=smoke", "data.reader.num_pairs=8", *overrides], tmp_path / "run")

    return make
