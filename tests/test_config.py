"""Every config composes, instantiates and passes debug=smoke."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from conftest import compose_run, data_overrides
from fundus2ffa.config import config_dir
from fundus2ffa.run import run

CONF = config_dir()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


MODELS = options("model")
DATA = options("data")


def test_every_net_config_instantiates():
    for group in ("generator", "discriminator"):
        for name in options(group):
            cfg = compose_run([f"{group}={name}"])
            net = instantiate(cfg[group])
            assert sum(p.numel() for p in net.parameters()) > 0, (group, name)


@pytest.mark.parametrize("name", ["trainer", "logger", "callbacks"])
def test_every_runtime_config_composes(name, tmp_path):
    for option in options(name):
        cfg = compose_run([f"{name}={option}"], tmp_path)
        assert cfg[name] is not None


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("data", DATA)
def test_smoke_every_model_on_every_data(model, data, isfahan_root, paired_folder_root, tmp_path):
    cfg = compose_run(
        ["debug=smoke", f"model={model}", *data_overrides(data, isfahan_root, paired_folder_root)], tmp_path
    )
    results = run(cfg)
    assert results["test"]["psnr"] > 0
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()
