"""task=predict inputs and outputs: folder, file or glob in; distinct names for shared stems; existing
outputs and unwritable folders refused, naming them and the fix, before the model runs."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fundus2ffa.loader as loader_module
from conftest import compose_run
from fundus2ffa.errors import ConfigError, DataError
from fundus2ffa.inference.predict_io import output_names, resolve_inputs
from fundus2ffa.run import run

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["data.reader.num_pairs=4", "data.image_size=32", "generator=resnet_9blocks", "generator.ngf=4",
        "discriminator.ndf=4", "callbacks.samples=null"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A checkpoint of a tiny pix2pix trained for two steps."""
    out = tmp_path_factory.mktemp("train")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors (see conftest.one_thread, which is function-scoped)
    try:
        run(compose_run(["debug=smoke", *TINY], out))
    finally:
        torch.set_num_threads(threads)
    return out / "checkpoints" / "last.ckpt"


def _cf(path: Path, height: int, width: int, seed: int) -> np.ndarray:
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))
    return image


def _predict(ckpt: Path, source, out: Path, *extra: str):
    cfg = compose_run(["debug=smoke", *TINY, "task=predict", f"ckpt_path={ckpt}", f"predict.input_dir={source}",
                       f"predict.output_dir={out}", *extra], out.parent / "run")
    return run(cfg)


@pytest.fixture
def calls(monkeypatch):
    """Counts the model's translations, one per output (to prove a refusal came before the model ran).
    Predict streams through the one translator, whose ``finish`` turns each translation into an output."""
    from fundus2ffa.inference.translator import Translator

    counter = {"n": 0}
    original = Translator.finish

    def counting(*args, **kwargs):
        counter["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(Translator, "finish", counting)
    return counter


def test_existing_output_is_refused_before_the_model_runs_unless_overwrite(ckpt, tmp_path, calls):
    _cf(tmp_path / "in" / "eye.png", 40, 48, seed=1)
    _cf(tmp_path / "in" / "other.png", 40, 48, seed=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "eye.png").write_bytes(b"a previous prediction")
    with pytest.raises(ConfigError, match=r"(?s)1 prediction output\(s\) exist already:.*out/eye\.png.*predict\.overwrite=true"):
        _predict(ckpt, tmp_path / "in", out)
    assert calls["n"] == 0
    assert (out / "eye.png").read_bytes() == b"a previous prediction" and sorted(os.listdir(out)) == ["eye.png"]

    written = _predict(ckpt, tmp_path / "in", out, "predict.overwrite=true")
    assert sorted(Path(p).name for p in written) == ["eye.png", "other.png"] and calls["n"] == 2
    assert Image.open(out / "eye.png").size == (48, 40)  # replaced by a real prediction


def test_inputs_with_one_stem_get_distinct_outputs(ckpt, tmp_path, calls):
    _cf(tmp_path / "in" / "x.png", 40, 48, seed=3)
    _cf(tmp_path / "in" / "x.jpg", 36, 30, seed=4)
    _cf(tmp_path / "in" / "y.png", 32, 32, seed=5)
    written = _predict(ckpt, tmp_path / "in", tmp_path / "out")
    assert sorted(Path(p).name for p in written) == ["x__jpg.png", "x__png.png", "y.png"]
    assert sorted(os.listdir(tmp_path / "out")) == ["x__jpg.png", "x__png.png", "y.png"]
    assert Image.open(tmp_path / "out" / "x__png.png").size == (48, 40)  # each output from its own input
    assert Image.open(tmp_path / "out" / "x__jpg.png").size == (30, 36)
    assert calls["n"] == 3


def test_single_file_and_glob_inputs(ckpt, tmp_path):
    _cf(tmp_path / "in" / "a.png", 32, 40, seed=6)
    _cf(tmp_path / "in" / "b.jpg", 32, 40, seed=7)
    _cf(tmp_path / "in" / "sub" / "c.png", 32, 40, seed=8)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    one = _predict(ckpt, tmp_path / "in" / "b.jpg", tmp_path / "one")
    assert [Path(p).name for p in one] == ["b.png"]
    pngs = _predict(ckpt, f"{tmp_path / 'in'}/**/*.png", tmp_path / "glob")
    assert sorted(Path(p).name for p in pngs) == ["a.png", "c.png"]
    with pytest.raises(DataError, match=r"predict\.input_dir=.*\*\.tif matches no image"):
        _predict(ckpt, f"{tmp_path / 'in'}/*.tif", tmp_path / "none")
    with pytest.raises(DataError, match=r"predict\.input_dir=.*notes\.txt is not an image"):
        _predict(ckpt, tmp_path / "in" / "notes.txt", tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_unwritable_output_folder_fails_before_the_model_loads(ckpt, tmp_path, monkeypatch):
    _cf(tmp_path / "in" / "a.png", 32, 32, seed=9)
    monkeypatch.setattr(loader_module, "load", lambda *a, **k: pytest.fail("model loaded before the check"))
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(ConfigError, match=r"predict\.output_dir=.*taken is a file, not a folder"):
        _predict(ckpt, tmp_path / "in", tmp_path / "taken")
    with pytest.raises(ConfigError, match=r"predict\.output_dir=.*taken/preds cannot be created: .*taken is a file"):
        _predict(ckpt, tmp_path / "in", tmp_path / "taken" / "preds")
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root writes through permission bits: use a filesystem that refuses files
        locked = Path("/proc/fundus2ffa_predictions")
    else:
        locked.chmod(0o500)
    with pytest.raises(ConfigError, match=r"predict\.output_dir=\S*(fundus2ffa_predictions|locked) is not writable"):
        _predict(ckpt, tmp_path / "in", locked)


def test_output_folder_equal_to_input_folder_never_overwrites_inputs(ckpt, tmp_path, calls):
    original = _cf(tmp_path / "in" / "eye.png", 32, 32, seed=10)
    with pytest.raises(ConfigError, match=r"would overwrite its own input .*eye\.png.*another folder"):
        _predict(ckpt, tmp_path / "in", tmp_path / "in", "predict.overwrite=true")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "in" / "eye.png")), original)
    assert calls["n"] == 0


def test_output_names_do_not_depend_on_input_order(tmp_path):
    paths = [tmp_path / "X.png", tmp_path / "x.jpg", tmp_path / "y.tif"]
    assert output_names(paths) == ["X__png", "x__jpg", "y"]
    assert output_names(paths[::-1]) == ["y", "x__jpg", "X__png"]
    with pytest.raises(DataError, match=r"same output file: .*a/z\.png and .*b/z\.png.*separately"):
        output_names([tmp_path / "a" / "z.png", tmp_path / "b" / "z.png"])


def test_broken_link_and_missing_input_are_named(tmp_path):
    (tmp_path / "gone.png").symlink_to(tmp_path / "moved.png")
    with pytest.raises(DataError, match=r"gone\.png is a broken symbolic link"):
        resolve_inputs(tmp_path / "gone.png")
    with pytest.raises(DataError, match=r"gone\.png is a broken symbolic link"):
        resolve_inputs(f"{tmp_path}/*.png")
    with pytest.raises(DataError, match=r"predict\.input_dir=.*absent does not exist.*a glob"):
        resolve_inputs(tmp_path / "absent")
