"""Bad input fails before training with a message naming the file or key and the fix, and leaves
no half-written outputs (no checkpoints, metrics or predictions)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cli, compose_run
from fundus2ffa.errors import ConfigError, DataError
from fundus2ffa.run import run


@pytest.fixture
def folder(paired_folder_root, tmp_path) -> Path:
    root = tmp_path / "pairs"
    shutil.copytree(paired_folder_root, root)
    return root


def _fails(tmp_path, error, pattern, *overrides):
    out = tmp_path / "run"
    cfg = compose_run(["debug=smoke", "data=paired_folder", "data.num_workers=0", *overrides], out)
    with pytest.raises(error, match=pattern):
        run(cfg)
    assert not (out / "checkpoints").exists() and not (out / "metrics.json").exists()


def test_missing_data_directory(tmp_path):
    _fails(tmp_path, DataError, r"data folder not found: .*nowhere.*Set data\.reader\.root", f"data.reader.root={tmp_path / 'nowhere'}")


def test_empty_folder(tmp_path):
    (tmp_path / "empty" / "cf").mkdir(parents=True)
    (tmp_path / "empty" / "ffa").mkdir()
    _fails(tmp_path, DataError, r"no images .* in .*empty", f"data.reader.root={tmp_path / 'empty'}")


def test_corrupt_image(folder, tmp_path):
    (folder / "ffa" / "eye03.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    _fails(tmp_path, DataError, r"cannot read image .*ffa/eye03\.png.*corrupt", f"data.reader.root={folder}")


def test_truncated_image_is_caught_before_training(folder, tmp_path):
    path = folder / "cf" / "eye05.png"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    _fails(tmp_path, DataError, r"cf/eye05\.png", f"data.reader.root={folder}")


def test_missing_pair_partner(folder, tmp_path):
    (folder / "ffa" / "eye02.png").unlink()
    _fails(tmp_path, DataError, r"eye02", f"data.reader.root={folder}")


def test_pair_size_mismatch(folder, tmp_path):
    Image.fromarray(np.zeros((100, 120), np.uint8)).save(folder / "ffa" / "eye04.png")
    _fails(tmp_path, DataError, r"eye04.*resize_ffa_to_cf", f"data.reader.root={folder}")


def test_grayscale_cf(folder, tmp_path):
    grey = np.asarray(Image.open(folder / "ffa" / "eye01.png"))
    Image.fromarray(grey).save(folder / "cf" / "eye01.png")
    _fails(tmp_path, DataError, r"cf/eye01\.png is greyscale.*swapped.*allow_grey_cf", f"data.reader.root={folder}")


def test_unset_mandatory_path_names_the_key(tmp_path):
    _fails(tmp_path, ConfigError, r"data\.reader\.root is not set")


def test_unknown_config_keys_are_refused(tmp_path):
    result = cli("debug=smoke", "model.not_a_key=1", f"hydra.run.dir={tmp_path / 'a'}", timeout=120)
    assert result.returncode != 0
    assert "Could not override 'model.not_a_key'" in result.stderr and "+model.not_a_key" in result.stderr
    result = cli("debug=smoke", "+model.not_a_key=1", f"hydra.run.dir={tmp_path / 'b'}", timeout=120)
    assert result.returncode != 0
    assert "cannot build config 'model'" in result.stderr and "not_a_key" in result.stderr
    assert not (tmp_path / "b" / "checkpoints").exists()


def test_predict_checks_every_input_before_writing_any(smoke_cfg, tmp_path):
    cfg = smoke_cfg()
    run(cfg)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(inputs / "a.png")
    (inputs / "b.png").write_bytes(b"not an image")
    out = tmp_path / "predictions"
    pred = compose_run(
        ["debug=smoke", "task=predict", f"ckpt_path={Path(cfg.paths.output_dir) / 'checkpoints' / 'last.ckpt'}",
         f"predict.input_dir={inputs}", f"predict.output_dir={out}"],
        tmp_path / "p",
    )
    with pytest.raises(DataError, match=r"b\.png"):
        run(pred)
    assert not out.exists()


def test_missing_checkpoint_is_a_config_error(tmp_path):
    cfg = compose_run(["debug=smoke", "task=test", f"ckpt_path={tmp_path / 'missing.ckpt'}"], tmp_path / "run")
    with pytest.raises(ConfigError, match=r"ckpt_path=.*missing\.ckpt does not exist"):
        run(cfg)
