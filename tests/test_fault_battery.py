"""The third fault battery (issue 21 items 2, 3, 4 and 6): nothing silent, nothing unbounded, every expected
error names the file or key and the fix, without a traceback.

Each case goes through the real integration: a fit or predict on the composed config (``run``), the real
command lines in a subprocess (``python -m fundus2ffa.run`` / ``.register`` / ``.transfer``), and the reading
functions of fundus2ffa/data/io.py for the image-level cases. Synthetic data only."""

import logging
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, TRANSFER_GLOBAL, compose_run, save_generator_checkpoint, tiny_checkpoint
from fundus2ffa.data.io import MAX_PIXELS, image_size, list_images, read_cf
from fundus2ffa.writers import write_png
from fundus2ffa.errors import ConfigError, DataError
from fundus2ffa.run import run

pytestmark = pytest.mark.usefixtures("one_thread")


def _cli(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A valid PNG header claiming ``width`` x ``height`` RGB pixels, with almost no data (a few hundred bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * width) * 4)  # the first rows only: never decoded
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def pairs(paired_folder_root, tmp_path) -> Path:
    root = tmp_path / "pairs"
    shutil.copytree(paired_folder_root, root)
    return root


SMOKE = ["debug=smoke", "data=paired_folder", "data.num_workers=0", "data.image_size=32", "data.train_transform.load_size=36",
         "generator.num_downs=5", "generator.ngf=4", "discriminator.ndf=4", "callbacks.samples=null"]


def _train(tmp_path, *overrides):
    out = tmp_path / "run"
    return run(compose_run([*SMOKE, *overrides], out)), out


# --------------------------------------------------------------------------------------- item 3: image size limit
def test_a_decompression_bomb_png_is_refused_by_read_cf_naming_file_pixels_and_limit(tmp_path):
    path = bomb_png(tmp_path / "bomb.png")
    assert path.stat().st_size < 2000
    with pytest.raises(DataError, match=rf"image {path} has 400000000 pixels \(20000 x 20000\), more than the limit of "
                                        rf"{MAX_PIXELS} pixels \(data.reader.max_pixels\).*decompression bomb"):
        read_cf(path)
    # the limit is a setting: lower (an ordinary image refused) or higher than Pillow's own threshold
    small = tmp_path / "small.png"
    write_png(small, np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    with pytest.raises(DataError, match=r"has 2000 pixels \(50 x 40\), more than the limit of 1999 pixels"):
        read_cf(small, max_pixels=1999)
    assert read_cf(small, max_pixels=2000).shape == (40, 50, 3)
    # above Pillow's own refusal threshold when the setting allows it (header only: nothing decoded)
    assert image_size(path, max_pixels=None) == (20000, 20000)


def test_a_decompression_bomb_in_the_training_data_fails_at_the_data_check(pairs, tmp_path):
    bomb = bomb_png(pairs / "cf" / "eye03.png")
    with pytest.raises(DataError, match=rf"image {bomb} has 400000000 pixels .* limit of {MAX_PIXELS} pixels \(data.reader.max_pixels\)"):
        _train(tmp_path, f"data.reader.root={pairs}")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_data_reader_max_pixels_is_a_checked_setting(pairs, tmp_path):
    with pytest.raises(DataError, match=r"eye00\.png has 65536 pixels \(256 x 256\), more than the limit of 60000 pixels"):
        _train(tmp_path, f"data.reader.root={pairs}", "data.reader.max_pixels=60000")
    with pytest.raises(ConfigError, match=r"data.reader.max_pixels must be a positive whole number of pixels .* got -1"):
        _train(tmp_path, f"data.reader.root={pairs}", "data.reader.max_pixels=-1")


def test_the_cli_names_the_bomb_without_a_traceback_and_run_log_says_why(pairs, tmp_path):
    bomb = bomb_png(pairs / "cf" / "eye03.png")
    out = tmp_path / "cli"
    result = _cli("fundus2ffa.run", *SMOKE, f"data.reader.root={pairs}", f"hydra.run.dir={out}")
    assert result.returncode == 1
    assert f"error: image {bomb} has 400000000 pixels" in result.stderr and "Traceback" not in result.stderr
    log = (out / "run.log").read_text()
    assert f"run failed: DataError: image {bomb} has 400000000 pixels" in log  # the log says why the run ended


# --------------------------------------------------------------------------------------- item 2: nothing silent
def test_register_refuses_an_existing_out_dir_unless_overwrite(pairs, tmp_path):
    out = tmp_path / "registered"
    (out / "cf").mkdir(parents=True)
    (out / "cf" / "theirs.png").write_bytes(b"an earlier registration")
    (out / "pairs.csv").write_text("id,cf,ffa\n")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = _cli("fundus2ffa.register", str(pairs / "cf"), str(pairs / "ffa"), str(out), "--no-progress")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: OUT_DIR {out} already holds files (cf, pairs.csv)" in result.stderr and "--overwrite" in result.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing written
    # the same folder as CF and FFA: refused, naming both arguments
    same = _cli("fundus2ffa.register", str(pairs / "cf"), str(pairs / "cf"), str(tmp_path / "new"), "--no-progress")
    assert same.returncode == 2 and "CF_DIR and FFA_DIR are the same folder" in same.stderr
    assert not (tmp_path / "new").exists()


def test_register_errors_name_its_own_arguments_not_data_reader_root(tmp_path):
    (tmp_path / "cf").mkdir()
    (tmp_path / "ffa").mkdir()
    result = _cli("fundus2ffa.register", str(tmp_path / "cf"), str(tmp_path / "ffa"), str(tmp_path / "out"), "--no-progress")
    assert result.returncode == 2
    assert "no images" in result.stderr and "point CF_DIR elsewhere" in result.stderr
    assert "data.reader.root" not in result.stderr


def test_the_cf_folder_as_its_own_target_is_refused(pairs, tmp_path):
    with pytest.raises(DataError, match=r"data.reader.cf_dir=cf and data.reader.ffa_dir=cf are the same folder .*own target"):
        _train(tmp_path, f"data.reader.root={pairs}", "data.reader.ffa_dir=cf")
    shutil.rmtree(pairs / "ffa")
    shutil.copytree(pairs / "cf", pairs / "ffa")  # another folder, the same files
    with pytest.raises(DataError, match=r"every pair of .* has a CF and an FFA with the same content .*own target"):
        _train(tmp_path, f"data.reader.root={pairs}")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_byte_identical_pairs_are_warned_about(pairs, tmp_path, caplog):
    for name in ("eye01.png", "eye02.png"):
        shutil.copyfile(pairs / "cf" / name, pairs / "ffa" / name)
    with caplog.at_level(logging.WARNING):
        _train(tmp_path, f"data.reader.root={pairs}")
    assert "2 of 8 pairs of" in caplog.text and "byte-identical CF and FFA files (eye01, eye02)" in caplog.text


def test_a_half_transparent_cf_is_warned_about_once(tmp_path, caplog):
    rgba = np.random.default_rng(1).integers(0, 255, (32, 32, 4), dtype=np.uint8)
    rgba[..., 3] = 128
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    opaque = tmp_path / "opaque.png"
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(opaque)
    with caplog.at_level(logging.WARNING, logger="fundus2ffa.data.io"):
        assert read_cf(path).shape == (32, 32, 3)  # alpha dropped, colour kept
        read_cf(path)
        read_cf(opaque)
    warnings = [r.getMessage() for r in caplog.records if "transparent" in r.getMessage()]
    assert len(warnings) == 1 and str(path) in warnings[0] and "100% transparent or half-transparent" in warnings[0]


# --------------------------------------------------------------------------------------- item 6: AppleDouble files
def _appledouble(folder: Path) -> None:
    for image in list(folder.glob("*.png")):
        (folder / f"._{image.name}").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")


def test_macos_appledouble_files_are_skipped_in_training_with_a_note(pairs, tmp_path, caplog):
    for sub in ("cf", "ffa"):
        _appledouble(pairs / sub)
    with caplog.at_level(logging.INFO, logger="fundus2ffa.data.io"):
        _train(tmp_path, f"data.reader.root={pairs}")
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert f"skipped 8 macOS metadata file(s) (._*, e.g. ._eye00.png) in {pairs / 'cf'}" in caplog.text
    assert [p.name for p in list_images(pairs / "ffa")] == [f"eye{i:02d}.png" for i in range(8)]


def test_macos_appledouble_files_are_skipped_by_predict(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "pix2pix.ckpt")
    inputs = tmp_path / "in"
    for i in range(2):
        write_png(inputs / f"eye{i}.png", np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    _appledouble(inputs)
    out = tmp_path / "out"
    cfg = compose_run(["debug=smoke", "task=predict", f"ckpt_path={ckpt}", f"predict.input_dir={inputs}", f"predict.output_dir={out}",
                       "data.image_size=32", "predict.image_size=32", "predict.multiple=32", "predict.num_workers=0",
                       f"predict.summary_file={out}.json"], tmp_path / "run")
    run(cfg)
    assert sorted(p.name for p in out.iterdir()) == ["eye0.png", "eye1.png"]


# --------------------------------------------------------------------------------------- item 4: clear messages
def test_a_legacy_format_checkpoint_is_named_with_its_conversion(tmp_path):
    source = tiny_checkpoint(tmp_path / "new.ckpt")
    legacy = tmp_path / "legacy.ckpt"
    torch.save(torch.load(source, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    result = _cli("fundus2ffa.run", "debug=smoke", "task=test", f"ckpt_path={legacy}", f"hydra.run.dir={tmp_path / 'test'}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"checkpoint {legacy} is in PyTorch's legacy format" in result.stderr and "corrupt" not in result.stderr
    # the conversion it gives works
    command = result.stderr.split('python -c "', 1)[1].split('"', 1)[0]
    subprocess.run([sys.executable, "-c", command], check=True, capture_output=True)
    from fundus2ffa.checkpoint import load_checkpoint

    assert "state_dict" in load_checkpoint(tmp_path / "legacy.zip.ckpt", mmap=True)


def _transfer(tmp_path, *overrides):
    return _cli("fundus2ffa.transfer", "trainer.accelerator=cpu", "downstream.seeds=[0]", "threads=1",
                f"hydra.run.dir={tmp_path / 'transfer'}", *overrides)


def test_transfer_with_a_binary_labels_csv_names_the_file(tmp_path):
    checkpoint = tmp_path / "g.ckpt"
    save_generator_checkpoint(checkpoint, TRANSFER_GLOBAL)
    labels = tmp_path / "labels.csv"
    labels.write_bytes(bytes(range(256)) * 8)
    result = _transfer(tmp_path, "downstream=classification", f"downstream.data.csv={labels}", f"backbone.checkpoint={checkpoint}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: labels CSV {labels} is not a text CSV" in result.stderr and "downstream.data.csv" in result.stderr
    [log] = (tmp_path / "transfer").glob("*.log")  # the job's log (named after the module: __main__.log)
    assert "run failed: DataError: labels CSV" in log.read_text()


def test_transfer_with_an_image_size_the_generator_cannot_take_names_the_key(tmp_path):
    from hydra import compose, initialize_config_dir

    from fundus2ffa.config import config_dir
    from fundus2ffa.transfer.study import run_study

    checkpoint = tmp_path / "g.ckpt"
    save_generator_checkpoint(checkpoint, {**TRANSFER_GLOBAL, "n_downsampling": 4})
    for size, pattern in ((16, r"downstream.data.image_size=16 does not fit the backbone's GlobalGenerator"),
                          (40, r"downstream.data.image_size=40 does not fit .*divisible by 16")):
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("transfer", overrides=[
                "trainer.accelerator=cpu", "downstream.seeds=[0]", f"backbone.checkpoint={checkpoint}", f"paths.output_dir={tmp_path}",
                "downstream=synthetic_vessels", "downstream.data.num_eyes=4", f"downstream.data.image_size={size}",
            ])
        with pytest.raises(ConfigError, match=pattern + r".*Use a larger downstream.data.image_size"):
            run_study(cfg)
    assert not (tmp_path / "results.csv").exists()


def test_transfer_errors_name_downstream_data_not_data_reader_root(tmp_path):
    from fundus2ffa.transfer.readers import LabelledImages

    (tmp_path / "labels.csv").write_text("image,label\nmissing.png,a\nalso_missing.png,b\n")
    with pytest.raises(DataError, match=r"image file not found: .*missing\.png\. Check the data path \(downstream\.data") as caught:
        LabelledImages(csv=str(tmp_path / "labels.csv"), image_size=16).load()
    assert "data.reader.root" not in str(caught.value)
