"""Every config composes, instantiates and passes debug=smoke."""

import functools
from pathlib import Path

import pytest
import yaml
from hydra.utils import instantiate

from conftest import compose_run, data_overrides
from fundus2ffa.config import config_dir
from fundus2ffa.run import run

CONF = config_dir()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def kind(group: str, name: str) -> str:
    """image | video: what a data config serves and what a model consumes (default image).

    Read from the YAML file itself (composing every option at collection time would be slow).
    """
    text = (CONF / group / f"{name}.yaml").read_text()
    node = yaml.safe_load(text) or {}
    if text.lstrip().startswith("# @package _global_"):
        node = node.get(group, {}) or {}
    return node.get("kind", "image")


PAIRS = [
    (model, data)
    for model in options("model")
    for data in options("data")
    if kind("model", model) == kind("data", data)
]


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


def test_every_data_config_has_a_model():
    assert {data for _, data in PAIRS} == set(options("data"))


@pytest.mark.slow
@pytest.mark.parametrize(("model", "data"), PAIRS)
def test_smoke_every_model_on_every_data_of_its_kind(model, data, isfahan_root, paired_folder_root, video_csv, tmp_path):
    cfg = compose_run(
        ["debug=smoke", f"model={model}", *data_overrides(data, isfahan_root, paired_folder_root, video_csv)], tmp_path
    )
    results = run(cfg)
    assert results["test"]["psnr"] > 0
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("data", ["uwf_phases", "uwf_video"])
def test_uwf_data_root_honours_the_shared_data_variable(data, monkeypatch, tmp_path):
    """FUNDUS2FFA_SHARED_DATA moves the default root of the UWF data configs (a checkout not beside ../shared);
    without it the default stays ../shared/data beside the project; an explicit root wins over both."""
    monkeypatch.delenv("FUNDUS2FFA_SHARED_DATA", raising=False)
    cfg = compose_run([f"data={data}"])
    assert Path(cfg.data.reader.root) == Path(cfg.paths.root_dir) / ".." / "shared" / "data" / "uwf_slo_fa_phases"
    monkeypatch.setenv("FUNDUS2FFA_SHARED_DATA", str(tmp_path / "elsewhere"))
    assert compose_run([f"data={data}"]).data.reader.root == str(tmp_path / "elsewhere" / "uwf_slo_fa_phases")
    assert compose_run([f"data={data}", "data.reader.root=/mine"]).data.reader.root == "/mine"
