"""Shared fixtures: the real configs composed with Hydra's compose API, shrunk for CPU tests."""

import os
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from fundus2ffa.config import config_dir, register_resolvers

REPO = Path(__file__).resolve().parents[1]
# Real sample images shipped with the tests, downscaled, with their licences (tests/fixtures/NOTICE files;
# regenerated from ../shared/data by tests/fixtures/make_fixtures.py): a clone tests anywhere.
FIXTURES = Path(__file__).resolve().parent / "fixtures"
UWF = FIXTURES / "uwf_slo_fa_phases"  # 7 two-phase UWF eyes (MIT), 213 x 170 (a quarter of 853 x 682)
UWF_SIZE = (213, 170)  # width x height of every UWF fixture image
FFA_FRAMES = FIXTURES / "ffa_frames" / "origin_data"  # 6 real FFA frames (Apache-2.0)

register_resolvers()
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs the suite in two pytest-xdist workers (one per core of the 2-core CI machine): one
    # intra-op thread each, and for the commands the tests start, so that two workers never run four threads.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of tiny tensors: they gain nothing from threads, and on a loaded
    machine OpenMP's spinning makes them 10x slower (measured: 1.4 s vs 20 s for a 6-window Fundus2Video
    fit with 2 threads beside other jobs). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def compose_run(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """The composed ``run.yaml`` with ``overrides``; paths.output_dir points into ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("run", overrides=list(overrides))
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


def compose_cli(overrides: list[str], output_dir: Path):
    """Compose as the command line does, with Hydra's record of the overrides set (what ``run`` reads to
    tell what the command line named); reset with ``HydraConfig.instance().cfg = None``."""
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("run", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
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


def synthetic_pairs(count: int, height: int, width: int, seed: int = 0):
    """(cf, late ffa, category) triples of synthetic eyes, alternately abnormal and normal."""
    from fundus2ffa.data.synthetic.retina import synthesize_eye

    pairs = []
    for i in range(count):
        eye = synthesize_eye(seed + i, size=height, width=width, abnormal=i % 2 == 0)
        pairs.append((eye.cf, eye.late, eye.category))
    return pairs


@pytest.fixture(scope="session")
def isfahan_root(tmp_path_factory) -> Path:
    """A small synthetic export in the Isfahan MISP layout (4 abnormal + 4 normal pairs, 288x360)."""
    from fundus2ffa.data.synthetic.isfahan_export import export_isfahan

    root = tmp_path_factory.mktemp("isfahan")
    pairs = synthetic_pairs(8, 288, 360, seed=100)
    export_isfahan(root, pairs, quirks=True, alignment=False)
    return root


@pytest.fixture(scope="session")
def paired_folder_root(tmp_path_factory) -> Path:
    """root/cf/*.png and root/ffa/*.png of 8 synthetic pairs."""
    from fundus2ffa.writers import write_png

    root = tmp_path_factory.mktemp("paired")
    for i, (cf, ffa, _) in enumerate(synthetic_pairs(8, 256, 256, seed=200)):
        write_png(root / "cf" / f"eye{i:02d}.png", cf)
        write_png(root / "ffa" / f"eye{i:02d}.png", ffa)
    return root


@pytest.fixture(scope="session")
def video_csv(tmp_path_factory) -> Path:
    """Synthetic FFA videos exported in the Fundus2Video CSV layout (6 eyes, 64 px)."""
    from fundus2ffa.data.synthetic.export import export_video_csv

    return export_video_csv(tmp_path_factory.mktemp("videos"), num_eyes=6, size=64, frames_per_phase=2, seed=3)


def data_overrides(name: str, isfahan: Path, paired: Path, video_csv: Path | None = None) -> list[str]:
    """Overrides that point each data config at test data."""
    return {
        "synthetic": ["data=synthetic", "data.reader.num_pairs=8"],
        "synthetic_video": ["data=synthetic_video", "data.reader.num_eyes=6", "data.image_size=32"],
        "uwf_video": ["data=uwf_video", f"data.reader.root={UWF}", "data.image_size=32"],
        "fundus2video_csv": ["data=fundus2video_csv", f"data.reader.csv={video_csv}", "data.image_size=32"],
        "isfahan": ["data=isfahan", f"data.reader.root={isfahan}", "data.num_workers=0", "data.train_repeats=1"],
        # the small fixture lacks the 17 paper ids and is too small for 512 quadrant crops
        "isfahan_fundus2angio": [
            "data=isfahan_fundus2angio", f"data.reader.root={isfahan}",
            "data.reader.train_ids=[abnormal/1,abnormal/2,normal/1,normal/2]", "data.reader.num_test=2",
            "data.image_size=256", "data.num_workers=0", "data.train_repeats=1",
        ],
        "isfahan_li2020": ["data=isfahan_li2020", f"data.reader.root={isfahan}", "data.num_workers=0"],
        "li2020_registered": ["data=li2020_registered", f"data.reader.root={paired}", "data.image_size=128", "data.num_workers=0"],
        "paired_folder": ["data=paired_folder", f"data.reader.root={paired}", "data.num_workers=0"],
        "uwf_phases": ["data=uwf_phases", f"data.reader.root={UWF}"],
    }[name]


def tiny_checkpoint(path: Path, *overrides: str) -> Path:
    """A loadable checkpoint of an untrained tiny model (default: pix2pix, U-Net ngf 4, 5 downsamplings),
    written without training: the state dict, the hyperparameters and the class, as Lightning's are."""
    from hydra.utils import instantiate

    cfg = compose_run(list(overrides) or ["model=pix2pix", "generator.ngf=4", "generator.num_downs=5"])
    model = instantiate(cfg.model, _recursive_=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "pytorch-lightning_version": "2.6.6",
        "fundus2ffa_target": f"{type(model).__module__}.{type(model).__qualname__}",
    }, path)
    return path


# Tiny generators saved as training checkpoints (the layout the GAN modules write), for tests/transfer.
# They live here, not in tests/transfer/conftest.py: a second conftest module shadows this one for
# `from conftest import ...` in the test files.

TRANSFER_GLOBAL = {"_target_": "fundus2ffa.nets.generators.pix2pixhd.GlobalGenerator", "in_channels": 3, "out_channels": 1,
          "ngf": 4, "n_downsampling": 3, "n_blocks": 2}
TRANSFER_VIDEO = {"_target_": "fundus2ffa.nets.generators.fundus2video.Fundus2VideoGenerator", "ngf": 4, "n_downsampling": 3,
         "n_blocks": 2, "kba": True, "kba_hidden": 8}


def save_generator_checkpoint(path, config, prefix="generator.", seed=0):
    from fundus2ffa.transfer.backbone import build_generator

    torch.manual_seed(seed)
    generator = build_generator(config)
    torch.save({"state_dict": {prefix + k: v for k, v in generator.state_dict().items()},
                "hyper_parameters": {"generator": dict(config)}, "epoch": 1}, path)
    return generator


@pytest.fixture
def tiny():
    """Generator configs: ``global`` (pix2pixHD global, 3 -> 1) and ``video`` (Fundus2Video with attention)."""
    return {"global": dict(TRANSFER_GLOBAL), "video": dict(TRANSFER_VIDEO)}


@pytest.fixture
def global_checkpoint(tmp_path):
    path = tmp_path / "global.ckpt"
    return path, save_generator_checkpoint(path, TRANSFER_GLOBAL)


@pytest.fixture
def video_checkpoint(tmp_path):
    path = tmp_path / "video.ckpt"
    return path, save_generator_checkpoint(path, TRANSFER_VIDEO)
