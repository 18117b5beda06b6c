"""One loader and one translator behind every door (issue 19): crafted stored targets run nothing in any
door and are named; resume takes its config from the checkpoint; repeating the checkpoint's own model
is accepted; the demo gives predict's pixels (tiles included); li2020 pix2pix predicts at its patch scale."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from conftest import REPO, cli, compose_cli, compose_run
from fundus2ffa import checkpoint as ckpt_io
from fundus2ffa.config import config_dir
from fundus2ffa.errors import ConfigError, UnsafeTargetError, WeightsError
from fundus2ffa.run import run

pytestmark = pytest.mark.usefixtures("one_thread")

# a ResNet generator (multiple 4) so that native-scale tiles are meaningful; 32 px training images
TRAINED_WITH = ["data.image_size=32", "generator=resnet_9blocks", "generator.ngf=4", "generator.n_blocks=1", "discriminator.ndf=4"]
BASE = ["debug=smoke", "data.reader.num_pairs=8", *TRAINED_WITH, "trainer.limit_train_batches=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("doors") / "run"
    run(compose_run([*BASE, "trainer.max_epochs=1"], out))
    return out / "checkpoints" / "last.ckpt"


def eye(height: int, width: int, seed: int = 0) -> np.ndarray:
    from fundus2ffa.data.synthetic.retina import synthesize_eye

    return synthesize_eye(seed, size=height, width=width, abnormal=True).cf


# ------------------------------------------------------------------------------ crafted checkpoints
PLACES = {  # where a stored target can hide -> the key the refusal must name
    "model class field": ("fundus2ffa_target", "fundus2ffa_target"),
    "stored model config": ("config.model._target_", "config.model._target_"),
    "generator": ("hyper_parameters.generator._target_", "hyper_parameters.generator._target_"),
    "discriminator": ("hyper_parameters.discriminator._target_", "hyper_parameters.discriminator._target_"),
    "loss": ("hyper_parameters.losses.l1._target_", "hyper_parameters.losses.l1._target_"),
    "optimizer": ("hyper_parameters.optimizer_g._target_", "hyper_parameters.optimizer_g._target_"),
    "data reader": ("config.data.reader._target_", "config.data.reader._target_"),
}
PAYLOADS = ("subprocess.Popen", "os.system", "fundus2ffa.app.os.system", "builtins.exec")


def craft(source: Path, folder: Path, place: str, target: str, marker: Path) -> Path:
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    key = PLACES[place][0]
    if key == "fundus2ffa_target":
        checkpoint["fundus2ffa_target"] = target
        checkpoint["fundus2ffa"]["model_target"] = target
    else:
        root, *path = key.split(".")
        node = checkpoint["fundus2ffa"] if root == "config" else checkpoint[root]
        if root == "config":
            node = node["config"]
        for part in path[:-1]:
            node = node[part]
        node.clear()
        node.update({"_target_": target, "args": ["touch", str(marker)], "shell": False, "_args_": [f"touch {marker}"]})
    path = folder / f"{place.replace(' ', '_')}-{target.replace('.', '_')}.ckpt"
    torch.save(checkpoint, path)
    return path


def doors(ckpt: Path, tmp: Path) -> dict:
    """Each door, called as a user calls it, on ``ckpt``."""
    inputs = tmp / "cf"
    inputs.mkdir(exist_ok=True)
    Image.fromarray(eye(40, 48)).save(inputs / "a.png")

    def through_run(*overrides):
        return lambda: run(compose_cli(["debug=smoke", "data.reader.num_pairs=8", f"ckpt_path={ckpt}", *overrides], tmp / "run"))

    def app():
        from fundus2ffa.app import load_models

        load_models([ckpt], torch.device("cpu"))

    def export():
        from fundus2ffa.export import export as export_graph

        export_graph(str(ckpt), "torchscript", str(tmp / "g.pt"))

    def transfer():
        from fundus2ffa.transfer.backbone import load_generator

        load_generator(ckpt)

    return {
        "predict": through_run("task=predict", f"predict.input_dir={inputs}", f"predict.output_dir={tmp / 'pred'}"),
        "test": through_run("task=test"),
        "resume": through_run("task=train"),
        "demo": app,
        "export": export,
        "transfer": transfer,
        "fine-tune": lambda: run(compose_run(["debug=smoke", "data.reader.num_pairs=8", *TRAINED_WITH, f"init_from={ckpt}"],
                                             tmp / "finetune")),
    }


def test_crafted_stored_targets_run_nothing_through_any_door(trained, tmp_path):
    """The matrix door (fine-tuning's init_from too) x stored place x payload: refused, naming the key and the target; nothing runs."""
    marker = tmp_path / "PWNED"
    matrix = []
    try:
        for place, (_, key) in PLACES.items():
            for payload in PAYLOADS:
                crafted = craft(trained, tmp_path, place, payload, marker)
                for door, call in doors(crafted, tmp_path).items():
                    with pytest.raises((UnsafeTargetError, WeightsError)) as caught:
                        call()
                    text = str(caught.value)
                    assert key.split(".", 1)[-1] in text and payload in text, (door, place, text)
                    assert not marker.exists(), (door, place, payload)
                    matrix.append((door, place, payload))
    finally:
        HydraConfig.instance().cfg = None
    assert len(matrix) == len(PLACES) * len(PAYLOADS) * 7
    assert not (tmp_path / "pred").exists() and not (tmp_path / "g.pt").exists()


def test_a_crafted_target_is_refused_by_the_model_itself(trained):
    """Lightning's own load_from_checkpoint (outside the project's loader) builds through the allow-list."""
    from fundus2ffa.models import PairedGAN

    hparams = torch.load(trained, map_location="cpu", weights_only=True)["hyper_parameters"]
    hparams["generator"] = {"_target_": "subprocess.Popen", "args": ["true"]}
    with pytest.raises(UnsafeTargetError, match=r"generator.*subprocess\.Popen"):
        PairedGAN(**hparams)


def test_allow_list_accepts_every_shipped_target():
    from fundus2ffa.targets import is_trusted, targets_in

    for path in config_dir().rglob("*.yaml"):
        if "hydra" in path.parts or "hparams_search" in path.parts:
            continue
        for key, target in targets_in(OmegaConf.load(path)):
            assert is_trusted(target), f"{path}: {key}={target}"
    for bad in ("subprocess.Popen", "fundus2ffa.app.os.system", "fundus2ffa.writers.write_png", "fundus2ffa.run.main", "os.system"):
        assert not is_trusted(bad), bad


# ------------------------------------------------------------------------------ run configs
def test_repeating_the_checkpoints_own_model_is_accepted(trained, tmp_path):
    inputs = tmp_path / "cf"
    inputs.mkdir()
    Image.fromarray(eye(40, 48)).save(inputs / "a.png")
    try:
        cfg = compose_cli(["debug=smoke", "task=predict", "model=pix2pix", "generator=resnet_9blocks", f"ckpt_path={trained}",
                             f"predict.input_dir={inputs}", f"predict.output_dir={tmp_path / 'out'}"], tmp_path / "run")
        assert [Path(p).name for p in run(cfg)] == ["a.png"]
        cfg = compose_cli(["debug=smoke", "task=predict", "model=cyclegan", f"ckpt_path={trained}",
                             f"predict.input_dir={inputs}", f"predict.output_dir={tmp_path / 'out2'}"], tmp_path / "run2")
        with pytest.raises(ConfigError, match=r"model\._target_=.*CycleGAN.*the checkpoint has .*PairedGAN"):
            run(cfg)
    finally:
        HydraConfig.instance().cfg = None


def test_a_video_checkpoint_predicts_with_its_own_model_named(tmp_path):
    """``task=predict model=fundus2video ckpt_path=<a fundus2video checkpoint>``: the default data=synthetic
    (still images) of the composition is not checked against the video model; the checkpoint's data is."""
    from fundus2ffa.checkpoint import run_record

    trained_cfg = compose_run(["model=fundus2video", "data=synthetic_video", "pretrained.vgg19=random", "generator.ngf=4",
                               "generator.n_blocks=1", "generator.n_downsampling=2", "generator.kba_hidden=8",
                               "discriminator.ndf=4", "data.image_size=32", "predict.num_frames=3"], tmp_path / "trained")
    model = instantiate(trained_cfg.model, _recursive_=False)
    target = f"{type(model).__module__}.{type(model).__qualname__}"
    ckpt = tmp_path / "video.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "fundus2ffa_target": target,
                "fundus2ffa": run_record(trained_cfg), "epoch": 0, "global_step": 0}, ckpt)
    inputs = tmp_path / "cf"
    inputs.mkdir()
    Image.fromarray(eye(40, 48)).save(inputs / "a.png")
    try:
        cfg = compose_cli(["debug=smoke", "task=predict", "model=fundus2video", "pretrained.vgg19=random", f"ckpt_path={ckpt}",
                             f"predict.input_dir={inputs}", f"predict.output_dir={tmp_path / 'out'}", "predict.video_format=png",
                             "predict.num_frames=3", "predict.num_workers=0"], tmp_path / "run")
        (written,) = run(cfg)
    finally:
        HydraConfig.instance().cfg = None
    frames = sorted(Path(written).iterdir())
    assert len(frames) == 3 and Image.open(frames[0]).size == (48, 40)


def test_resume_takes_the_run_config_from_the_checkpoint(tmp_path):
    """``python -m fundus2ffa.run ckpt_path=<last.ckpt> trainer.max_epochs=3``: no original override typed
    again; the run continues at epoch 2 in a new folder that names where it came from."""
    first = cli(*BASE, "trainer.max_epochs=2", "logger=csv", f"hydra.run.dir={tmp_path / 'first'}", timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = cli(f"ckpt_path={last}", "trainer.max_epochs=3", f"hydra.run.dir={tmp_path / 'second'}", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (tmp_path / "second" / "run.log").read_text()
    assert f"resuming from {last}" in log and "changed by trainer.max_epochs" in log
    metrics = json.loads((tmp_path / "second" / "metrics.json").read_text())
    assert metrics["resumed_from"] == str(last.resolve()) and metrics["epoch"] == 2
    stored = ckpt_io.load_checkpoint(tmp_path / "second" / "checkpoints" / "last.ckpt")
    config = stored["fundus2ffa"]["config"]
    assert config["data"]["image_size"] == 32 and config["generator"]["n_blocks"] == 1  # the first run's overrides
    assert config["callbacks"]["model_checkpoint"]["dirpath"].startswith(str(tmp_path / "second"))
    assert sorted(p.name for p in (tmp_path / "first" / "checkpoints").iterdir()) == \
        sorted(p.name for p in (tmp_path / "first" / "checkpoints").iterdir() if p.suffix == ".ckpt")
    refused = cli(f"ckpt_path={last}", "model=cyclegan", f"hydra.run.dir={tmp_path / 'third'}", timeout=600)
    assert refused.returncode != 0 and "contradict" in refused.stderr + refused.stdout


def test_fine_tuning_starts_from_the_checkpoints_networks(trained, tmp_path):
    """``init_from=<ckpt>``: the networks start from the file's weights (at lr 0 they end there too), with a
    fresh optimizer and step; metrics.json names the source. A generator that does not fit is refused by name."""
    stored = torch.load(trained, map_location="cpu", weights_only=True)["state_dict"]
    try:
        run(compose_run([*BASE, "trainer.max_epochs=1", "logger=csv", f"init_from={trained}", "seed=7",
                         "model.optimizer_g.lr=0", "model.optimizer_d.lr=0"], tmp_path / "tuned"))
        tuned = torch.load(tmp_path / "tuned" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        metrics = json.loads((tmp_path / "tuned" / "metrics.json").read_text())
        assert metrics["initialised_from"] == str(trained.resolve())
        assert tuned["global_step"] == 4  # 2 batches x (G, D): counted from 0, not from the source's step
        weights = [k for k in stored if k.startswith(("generator.", "discriminator.")) and k.endswith("weight")]
        assert weights and all(torch.equal(tuned["state_dict"][k], stored[k]) for k in weights)
        with pytest.raises(ConfigError, match=r"init_from=.*do not fit this model's generator.*generator\."):
            run(compose_run([*BASE, "generator.ngf=8", f"init_from={trained}"], tmp_path / "misfit"))
        with pytest.raises(ConfigError, match=r"init_from=.*does not exist"):
            run(compose_run([*BASE, f"init_from={tmp_path / 'none.ckpt'}"], tmp_path / "absent"))
    finally:
        HydraConfig.instance().cfg = None


# ------------------------------------------------------------------------------ one translator
def test_demo_and_predict_give_identical_pixels_tiles_included(trained, tmp_path):
    from fundus2ffa.app import load_config, load_models, translate_upload

    inputs = tmp_path / "cf"
    inputs.mkdir()
    cf = eye(90, 130, seed=4)
    Image.fromarray(cf).save(inputs / "eye.png")
    settings = ["predict.mode=native", "predict.tiled.size=48", "predict.tiled.auto_above=64", "predict.tiled.overlap=0.25"]
    (written,) = run(compose_run(["debug=smoke", "task=predict", f"ckpt_path={trained}", f"predict.input_dir={inputs}",
                                  f"predict.output_dir={tmp_path / 'pred'}", "predict.num_workers=0", *settings], tmp_path / "run"))
    predicted = np.asarray(Image.open(written))

    cfg = load_config([f"ckpt_path={trained}", *settings])
    (translator,) = load_models([trained], torch.device("cpu"), cfg).values()
    assert translator.wants_tiles(90, 132)  # the demo tiles what predict tiles
    demo = translate_upload(translator, inputs / "eye.png", cfg, tmp_path / "demo")
    assert demo.ffa.shape == cf.shape[:2]
    np.testing.assert_array_equal(demo.ffa, predicted)
    np.testing.assert_array_equal(np.asarray(Image.open(demo.png)), predicted)


def test_li2020_pix2pix_predicts_at_its_training_patch_scale(tmp_path):
    """A model trained on native 24 x 30 patches, each resized to 32 x 32 by the model
    (``generator_input_size``, li2020/pix2pix at a test size): ``predict.mode=null`` runs the whole image
    in patches of 24 x 30, each squeezed to 32 x 32 as in training, never the whole image squeezed."""
    from fundus2ffa import loader
    from fundus2ffa.checkpoint import run_record
    from fundus2ffa.inference.translator import Translator, TranslateSettings

    cfg = compose_run(["model=pix2pix", "generator.ngf=4", "generator.num_downs=5", "model.generator_input_size=[32,32]",
                       "data=isfahan", "data.reader.root=unused", "data.image_size=24",
                       "+data.eval_transform={_target_: fundus2ffa.data.Transform, crop_size: [24, 30], crop: quadrants}"],
                      tmp_path / "trained")
    model = instantiate(cfg.model, _recursive_=False)
    target = f"{type(model).__module__}.{type(model).__qualname__}"
    ckpt = tmp_path / "li.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "fundus2ffa_target": target,
                "fundus2ffa": run_record(cfg), "epoch": 0, "global_step": 0}, ckpt)
    loaded = loader.load(ckpt)
    seen = []
    loaded.model.generator.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape)))
    translator = Translator.from_loaded(loaded, TranslateSettings(tiled=TranslateSettings().tiled.__class__(overlap=0.0)))
    assert translator.tile_shape == (24, 30) and translator.preprocess.resize == "native"
    cf = eye(48, 60, seed=2)  # 2 x 2 patches: the four quadrants, as li2020 cuts 720 x 576 into 288 x 360
    out = translator(cf)
    assert out.shape == (48, 60) and {s[-2:] for s in seen} == {(32, 32)} and sum(s[0] for s in seen) == 4
    # with no overlap the tiles are exactly the quadrants: each equals the model's translation of that patch
    from fundus2ffa.data.transforms import to_tensor_pm1
    from fundus2ffa.metrics.convert import to_uint8

    with torch.no_grad():
        quadrant = to_uint8(loaded.model.translate(to_tensor_pm1(cf[24:, 30:])[None])[0, 0]).numpy()
    np.testing.assert_array_equal(out[24:, 30:], quadrant)


# ------------------------------------------------------------------------------ tiles
def test_tile_grid_is_the_least_area_at_the_asked_overlap():
    from fundus2ffa.inference.tiled import tile_grid

    assert tile_grid(400, 512, 0.25, 16) == (400, [0])  # fits one tile: one tile
    tile, starts = tile_grid(576, 512, 0.25, 16)
    assert len(starts) * tile < 2 * 512 and len(starts) == 2 and tile % 16 == 0  # not two 512 px tiles
    for extent in (576, 1024, 1536, 2048, 3008):
        tile, starts = tile_grid(extent, 512, 0.25, 16)
        assert starts[0] == 0 and starts[-1] + tile == extent and all(s % 16 == 0 for s in starts)
        assert all(b - a <= tile * 0.75 for a, b in zip(starts, starts[1:]))  # the overlap asked for, at least
        brute = min(len(range(0, extent - t + 1, max(16, int(t * 0.75) // 16 * 16))) * t for t in range(16, 513, 16)
                    if int(t * 0.75) // 16 * 16 >= 16)
        assert len(starts) * tile <= brute + 512  # within one tile of the brute-force least area


def test_sigterm_stops_predict_within_seconds_and_skip_existing_resumes(trained, tmp_path):
    inputs = tmp_path / "cf"
    inputs.mkdir()
    for i in range(12):
        Image.fromarray(eye(300, 400, seed=i)).save(inputs / f"eye{i:02d}.png")
    out = tmp_path / "out"
    args = ["debug=smoke", "task=predict", f"ckpt_path={trained}", f"predict.input_dir={inputs}", f"predict.output_dir={out}",
            "predict.mode=native", "predict.tiled.size=32", "predict.tiled.auto_above=64", "predict.tiled.overlap=0.5",
            "predict.batch_size=1", "predict.num_workers=0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "fundus2ffa.run", *args, f"hydra.run.dir={tmp_path / 'r1'}"], cwd=REPO,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.glob("*.png")):
        time.sleep(0.2)
    assert list(out.glob("*.png")), "no output within 240 s"
    sent = time.time()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    stopped_after = time.time() - sent
    # within seconds: one 32 px tile batch at most; 30 s leaves room for a machine shared with other jobs
    assert process.returncode != 0 and stopped_after < 30, (stopped_after, output[-2000:])
    assert "stopped by SIGTERM" in output and "predict.skip_existing=true" in output
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left
    done = len(list(out.glob("*.png")))
    assert 0 < done < 12
    again = cli(*args, "predict.skip_existing=true", f"hydra.run.dir={tmp_path / 'r2'}", timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(list(out.glob("*.png"))) == 12
