"""Export parity: the ONNX (onnxruntime) and TorchScript graphs equal PyTorch within the stated
tolerance on random and synthetic-fundus inputs at two sizes, for every still-image family and the
Fundus2Video window step; a model that cannot be exported fails with a clear error (issue 12, item 3)."""

import json
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate

from conftest import REPO, compose_run
from fundus2ffa.errors import ConfigError, ExportError
from fundus2ffa.export import export, runner

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {  # the real model configs at test widths (ngf 4)
    "pix2pix": ["model=pix2pix", "generator.ngf=4", "generator.num_downs=5"],
    "pix2pixhd": ["model=pix2pixhd", "generator.ngf=4", "pretrained.vgg19=random", "loss.vgg.weight=0"],
    "saliency_cgan": ["model=saliency_cgan", "generator.ngf=4", "generator.n_blocks=2", "pretrained.vgg19=random", "loss.perceptual.weight=0"],
    "fundus2angio": ["model=fundus2angio", "generator.ngf=4", "generator.n_blocks_coarse=1", "generator.n_blocks_fine=1"],
    "fundus2video": [
        "model=fundus2video", "data=synthetic_video", "pretrained.vgg19=random", "generator.ngf=4", "generator.n_blocks=1",
        "generator.n_downsampling=2", "generator.kba_hidden=8", "discriminator.ndf=4", "loss.patch_nce.num_patches=16", "loss.vgg.weight=0",
    ],
}


PREPROCESS = {"resize": "square", "size": 64, "multiple": 1, "fov_crop": False, "fov_frames": True, "interpolation": "pil_bicubic"}


def checkpoint(tmp_path, name: str, *extra: str):
    """A checkpoint of the tiny model with randomised BatchNorm statistics (so eval-mode BN is not the
    identity) and a run record whose data.preprocess the card must carry."""
    cfg = compose_run([*TINY[name], *extra])
    model = instantiate(cfg.model, _recursive_=False)
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / f"{name}.ckpt"
    torch.save({
        "state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "pytorch-lightning_version": "2.6.6",
        "fundus2ffa_target": f"{type(model).__module__}.{type(model).__qualname__}",
        "fundus2ffa": {"format": 1, "model_target": f"{type(model).__module__}.{type(model).__qualname__}",
                       "config": {"data": {"image_size": 64, "preprocess": dict(PREPROCESS)}}},
    }, path)
    return path, model


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", ["pix2pix", "pix2pixhd", "saliency_cgan", "fundus2angio"])
def test_still_models_export_with_parity(tmp_path, name, fmt):
    ckpt, model = checkpoint(tmp_path, name)
    out = tmp_path / f"{name}.{fmt}"
    info = export(str(ckpt), fmt, str(out), tolerance=1e-4)
    diffs = info["parity"]["max_abs_diff"]
    print(name, fmt, diffs)
    assert len(diffs) == 4 and max(diffs.values()) <= 1e-4  # random + synthetic eye, two sizes each
    card = json.loads((tmp_path / f"{name}.{fmt}.json").read_text())
    assert card["size_multiple"] == {"pix2pix": 32, "pix2pixhd": 16, "saliency_cgan": 4, "fundus2angio": 8}[name]
    assert card["inputs"]["cf"]["channels"] == "RGB" and card["outputs"]["ffa"]["range"] == [-1, 1]
    assert card["preprocess"] == PREPROCESS  # the checkpoint's data.preprocess, verbatim
    assert "64 x 64 with PIL Image.BICUBIC" in card["how_to_feed"]["resize"] and "OpenCV" not in card["how_to_feed"]["resize"]
    assert info["parity"]["translated_cf_max_grey_levels"] <= 1
    # the file runs on its own at sizes that are multiples of nothing (padding inside the graph), equal
    # to the model's translate on the same input padded by predict's own code
    from fundus2ffa.nets.padding import pad_to_multiple

    for height, width in ((256, 320), (301, 457), (37, 61)):
        cf = torch.rand(1, 3, height, width) * 2 - 1
        padded, crop = pad_to_multiple(cf, card["size_multiple"])
        with torch.no_grad():
            expected = model.eval().translate(padded)
        expected = expected if crop is None else expected[..., crop[0], crop[1]]
        torch.testing.assert_close(runner(fmt, out, ["cf"])(cf), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_fundus2video_window_step_and_documented_loop(tmp_path, fmt):
    ckpt, model = checkpoint(tmp_path, "fundus2video")
    out = tmp_path / f"step.{fmt}"
    info = export(str(ckpt), fmt, str(out))
    assert info["kind"] == "video_window_step" and max(info["parity"]["max_abs_diff"].values()) <= 1e-4
    assert "previous = cf" in info["video_loop"]
    assert "translate_video" in info["video_loop"]
    step = runner(fmt, out, ["cf", "previous"])
    exported_step = lambda x: step(x[:, :3].contiguous(), x[:, 3:].contiguous())  # noqa: E731
    cf = torch.rand(1, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        reference = model.eval().translate_video(cf, 5)
        torch.testing.assert_close(model.translate_video(cf, 5, step=exported_step), reference, rtol=0, atol=1e-4)
        # any size runs (each step padded inside the graph; predict pads the CF once, see the card)
        assert model.translate_video(cf[..., :30, :45], 5, step=exported_step).shape == (1, 5, 1, 30, 45)


def test_ema_weights_are_exported(tmp_path):
    ckpt, model = checkpoint(tmp_path, "pix2pix", "model.ema.enabled=true")
    state = torch.load(ckpt, weights_only=True)
    for key in [k for k in state["state_dict"] if k.startswith("ema.generator.") and k.endswith("weight")]:
        state["state_dict"][key] = state["state_dict"][key] * 0.5  # EMA differs from the raw generator
    torch.save(state, ckpt)
    out = tmp_path / "ema.onnx"
    info = export(str(ckpt), "onnx", str(out))
    assert info["ema"] is True
    cf = torch.rand(1, 3, 64, 64) * 2 - 1
    model.load_state_dict(state["state_dict"])
    model.eval()
    with torch.no_grad():
        exported = runner("onnx", out, ["cf"])(cf)
        torch.testing.assert_close(exported, model.ema["generator"](cf), rtol=0, atol=1e-4)
        assert (exported - model.generator(cf)).abs().max() > 1e-3


def test_unexportable_model_and_bad_arguments_fail_clearly(tmp_path, monkeypatch):
    ckpt, _ = checkpoint(tmp_path, "pix2pix")
    with pytest.raises(ConfigError, match="format must be one of onnx|torchscript"):
        export(str(ckpt), "tflite", str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="ckpt_path=.*missing.ckpt does not exist"):
        export(str(tmp_path / "missing.ckpt"), "onnx", str(tmp_path / "x.onnx"))

    # a generator whose output goes through NumPy: the tracer cannot follow it
    from fundus2ffa.nets.generators import UNetGenerator

    monkeypatch.setattr(UNetGenerator, "forward", lambda self, cf: torch.from_numpy(cf[:, :1].detach().numpy() * 1.0))
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match=r"PairedGAN \(still\) cannot be (exported to|run on its inputs)"):
        export(str(ckpt), "onnx", str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pix2pix.ckpt"]  # no file, no card, no temporary file


def test_command_line(tmp_path):
    ckpt, _ = checkpoint(tmp_path, "pix2pix")
    out = tmp_path / "cli.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "fundus2ffa.export", f"ckpt_path={ckpt}", "format=onnx", f"out={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.is_file() and (tmp_path / "cli.onnx.json").is_file()
    bad = subprocess.run([sys.executable, "-m", "fundus2ffa.export", f"ckpt_path={ckpt}", "fromat=onnx"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "unknown export arguments ['fromat']" in bad.stderr and "Traceback" not in bad.stderr
    usage = subprocess.run([sys.executable, "-m", "fundus2ffa.export", "--help"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert usage.returncode == 0 and "usage: python -m fundus2ffa.export" in usage.stdout and "Traceback" not in usage.stderr
    folder = subprocess.run([sys.executable, "-m", "fundus2ffa.export", f"ckpt_path={ckpt}", f"out={tmp_path}"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert folder.returncode != 0 and "is a folder; give a file name" in folder.stderr and "Traceback" not in folder.stderr
