"""Bad input fails before training with a message naming the file or key and the fix, and leaves
no half-written outputs (no checkpoints, metrics or predictions)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cli, compose_run
from fundus2ffa.errors import ConfigError, DataError
from fundus2ffa.builders import build
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


# ------------------------------------------------------------------ issue 8 item 7: messages that name the fix
def _refused(tmp_path, pattern, *overrides, error=ConfigError):
    out = tmp_path / "run"
    cfg = compose_run(["debug=smoke", *overrides], out)
    with pytest.raises(error, match=pattern):
        run(cfg)
    assert not (out / "checkpoints").exists() and not (out / "metrics.json").exists()


def test_image_size_that_is_not_a_number(tmp_path):
    _refused(tmp_path, r"data\.image_size must be a positive whole number .* got 'abc'.*data\.image_size=256", "data.image_size=abc")


def test_endless_max_epochs_is_refused_unless_a_step_limit_ends_it(tmp_path):
    _refused(tmp_path, r"trainer\.max_epochs=-1 trains forever.*trainer\.max_steps=<N>", "trainer.max_epochs=-1")
    from fundus2ffa.config import check_config

    check_config(compose_run(["debug=smoke", "trainer.max_epochs=-1", "trainer.max_steps=4"]))  # meant: accepted


def test_gpu_trainer_without_a_gpu_says_so(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _refused(tmp_path, r"trainer\.accelerator=gpu .* no GPU was found.*trainer=cpu", "trainer=gpu")


def test_video_model_on_image_data_and_image_model_on_video_data(tmp_path):
    _refused(tmp_path, r"AutoregressiveVideoGAN\) is a video model but .*PairedDataModule\) serves image data; add a video data config",
             "model=fundus2video")
    _refused(tmp_path, r"PairedGAN\) is a image model but .*VideoDataModule\) serves video data; use a still-image data config",
             "data=synthetic_video", "data.reader.num_eyes=6", "data.image_size=32")


def test_corrupt_and_truncated_checkpoints_name_the_path(tmp_path):
    import torch

    from fundus2ffa.errors import CheckpointError

    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "epoch": 0}, good)
    truncated, garbage, empty = tmp_path / "truncated.ckpt", tmp_path / "garbage.ckpt", tmp_path / "empty.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage.write_bytes(b"not a checkpoint" * 10)
    empty.write_bytes(b"")
    for path, why in ((truncated, "is corrupt or truncated"), (garbage, "is corrupt or truncated"), (empty, "is empty")):
        for task in ("test", "train") if path == truncated else ("test",):  # train: the resume path
            _refused(tmp_path / task, rf"checkpoint {path} {why}", f"task={task}", f"ckpt_path={path}",
                     "data.reader.num_pairs=8", "data.image_size=32", error=CheckpointError)


def test_the_grey_cf_hint_is_a_command_that_works(folder, tmp_path):
    grey = np.asarray(Image.open(folder / "ffa" / "eye01.png"))
    Image.fromarray(grey).save(folder / "cf" / "eye01.png")
    base = ["debug=smoke", "data=paired_folder", f"data.reader.root={folder}"]
    with pytest.raises(DataError) as caught:
        build(compose_run(base).data, "data").setup("fit")
    (hint,) = [word for word in str(caught.value).split() if "allow_grey_cf" in word]
    datamodule = build(compose_run([*base, hint]).data, "data")  # Hydra accepts the hint ...
    datamodule.setup("fit")  # ... and the grey CF is read
    assert sum(len(part) for part in datamodule.splits.values()) == 8
