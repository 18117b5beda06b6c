"""Export a trained generator for use outside Python: ONNX (onnxruntime) or TorchScript.

    python -m fundus2ffa.export ckpt_path=<run>/checkpoints/last.ckpt format=onnx out=pix2pix.onnx
    python -m fundus2ffa.export ckpt_path=... format=torchscript out=pix2pix.pt

What is exported (issue 12, item 3):
  still-image models (pix2pix, pix2pixHD, saliency cGAN, CycleGAN's G_AB, Fundus2Angio)
      ``cf`` N x 3 x H x W -> ``ffa`` N x 1 x H x W, H and W dynamic multiples of the generator's
      size multiple (``size_policy.multiple`` in the card; pad outside the graph, as ``predict.mode=native``
      does). Fundus2Angio's Lanczos halving is exported as its stride-2 convolution form
      (nets/resample.py ``lanczos_halve_conv``): the matrix form is built per size in NumPy and would fix H, W.
  Fundus2Video
      the window step ``(cf, previous)`` -> ``window``, N x 3 x H x W each; the autoregressive loop stays
      outside the graph (a loop with a Python-chosen length), written out in the card and in
      :func:`video_loop` (spec 4.7: previous_0 = CF; window_t = step(CF, previous_t); frame k is the mean of
      the windows that cover it; previous_{t+1} = window_t).
  With ``model.ema.enabled`` the EMA weights are exported (what ``translate`` uses).

Beside the file, ``<out>.json`` (the card) says how to feed it: channels (RGB), normalisation (8-bit / 127.5
- 1), the size policy (multiple, padding, the training size for ``resize``), field-of-view handling,
the output conversion and, for Fundus2Video, the loop. The export is then checked (``check=true``): the
exported graph and PyTorch on a random input and on a synthetic fundus (real-like: vessels, disc, dark
surround), each at two sizes (so the dynamic axes are exercised), must agree within ``tolerance``
(default 1e-4 in [-1, 1], 1/78 of a grey level; measured 1e-8 .. 1e-5). A failed check leaves nothing
written.

ONNX uses the TorchScript-based exporter (``dynamo=False``): the convolutional generators here trace
exactly, and it exports in seconds where the dynamo exporter took 50-80 s per tiny model on this
project's 2-core CPU (same parity); ``exporter=dynamo`` switches.
"""

import json
import logging
import math
import sys
import warnings
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from fundus2ffa.errors import ConfigError, ExportError

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
EXPORTERS = ("legacy", "dynamo")
DEFAULTS = {"ckpt_path": None, "format": "onnx", "out": None, "check": True, "tolerance": 1e-4, "opset": 17, "exporter": "legacy"}
WINDOW = 3


# ----------------------------------------------------------------------------- what is exported
def size_multiple(net: nn.Module) -> int:
    """The side multiple a generator needs (2**downsamplings; pix2pixHD's local enhancer: its divisor)."""
    net = getattr(net, "_orig_mod", net)
    if hasattr(net, "multiple"):
        return int(net.multiple)
    if hasattr(net, "divisor"):
        return int(net.divisor)
    for attr in ("num_downs", "n_downsampling"):
        if hasattr(net, attr):
            return 2 ** int(getattr(net, attr))
    raise ExportError(f"cannot tell the size multiple of {type(net).__name__} (no divisor, num_downs or n_downsampling)")


class StillGenerator(nn.Module):
    """CF -> FFA: the generator ``translate`` uses (EMA weights when enabled); ``average`` for a CycleGAN
    whose FFA domain has 3 replicated channels (``translate`` takes their mean). The nets, not the
    LightningModule, are held: tracing walks a module's attributes, and Lightning's ``trainer`` refuses
    to be read outside a Trainer."""

    def __init__(self, net: nn.Module, average: bool = False):
        super().__init__()
        self.net, self.average = net, average

    def forward(self, cf: torch.Tensor) -> torch.Tensor:
        fake = self.net(cf)
        return fake.mean(1, keepdim=True) if self.average else fake


class CoarseFineGenerator(nn.Module):
    """Fundus2Angio's translate with the convolution form of the Lanczos halving (dynamic H, W)."""

    def __init__(self, model):
        super().__init__()
        self.generator = model.eval_net("generator")
        self.quantize = model.hparams.get("lanczos") == "uint8"
        self.antialias = bool(getattr(model, "lanczos_antialias", False))  # the model's own halving variant
        self.clamp = getattr(model, "lanczos_clamp_range", (-1.0, 1.0))  # and its clipping (issue 20.5)

    def forward(self, cf: torch.Tensor) -> torch.Tensor:
        from fundus2ffa.nets.resample import lanczos_halve_conv

        _, feature = self.generator.coarse(lanczos_halve_conv(cf, clamp=self.clamp, quantize=self.quantize, antialias=self.antialias))
        return self.generator.fine(cf, feature)


class WindowStep(nn.Module):
    """Fundus2Video's window step: (CF, previous 3-frame window) -> next window, all in [-1, 1]."""

    def __init__(self, model):
        super().__init__()
        self.generator = model.eval_net("generator")

    def forward(self, cf: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        return self.generator(torch.cat([cf, previous], 1))


def exportable(model) -> tuple[nn.Module, list[str], list[str], int, str]:
    """(module, input names, output names, size multiple, kind) for a trained LightningModule."""
    from fundus2ffa.models.coarse_fine_gan import MULTIPLE, CoarseFineGAN

    if hasattr(model, "translate_video"):
        generator = model.eval_net("generator")
        return WindowStep(model).eval(), ["cf", "previous"], ["window"], size_multiple(generator), "video_window_step"
    if isinstance(model, CoarseFineGAN):
        multiple = int(getattr(model.generator, "multiple", MULTIPLE))
        return CoarseFineGenerator(model).eval(), ["cf"], ["ffa"], multiple, "still"
    if not hasattr(model, "translate") or not hasattr(model, "eval_net"):
        raise ExportError(f"{type(model).__name__} has no translate(cf): only fundus2ffa GAN modules can be exported")
    name = "g_ab" if hasattr(model, "g_ab") else "generator"
    net = model.eval_net(name)
    average = getattr(model, "ffa_channels", 1) == 3
    return StillGenerator(net, average).eval(), ["cf"], ["ffa"], size_multiple(net), "still"


# ----------------------------------------------------------------------------- check inputs
def check_inputs(names: list[str], multiple: int, seed: int = 0) -> list[tuple[str, tuple[torch.Tensor, ...]]]:
    """(label, inputs) pairs for the parity check: random and a synthetic fundus, at two sizes."""
    from fundus2ffa.data.synthetic.retina import synthesize_eye
    from fundus2ffa.data.transforms import to_tensor_pm1

    side = multiple * max(1, math.ceil(64 / multiple))
    sizes = [(side, side + multiple), (side + multiple, side)]
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for h, w in sizes:
        random_cf = torch.rand(2, 3, h, w, generator=generator) * 2 - 1
        eye = to_tensor_pm1(synthesize_eye(seed + h, size=h, width=w, abnormal=True).cf)[None]
        for label, cf in ((f"random {h}x{w}", random_cf), (f"synthetic eye {h}x{w}", eye)):
            extra = tuple(torch.rand(cf.shape[0], WINDOW, h, w, generator=generator) * 2 - 1 for _ in names[1:])
            cases.append((label, (cf, *extra)))
    return cases


# ----------------------------------------------------------------------------- export + parity
def _export_onnx(module, example, names, outputs, path: Path, opset: int, exporter: str) -> None:
    axes = {name: {0: "batch", 2: "height", 3: "width"} for name in [*names, *outputs]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch, height, width = (torch.export.Dim(n) for n in ("batch", "height", "width"))
            shapes = {name: {0: batch, 2: height, 3: width} for name in names}
            torch.onnx.export(module, example, str(path), input_names=names, output_names=outputs,
                              dynamo=True, dynamic_shapes=shapes, opset_version=max(opset, 18))
        else:
            torch.onnx.export(module, example, str(path), input_names=names, output_names=outputs,
                              dynamo=False, dynamic_axes=axes, opset_version=opset)


def _export_torchscript(module, example, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)
    traced.save(str(path))


def runner(fmt: str, path: Path, names: list[str]):
    """A function running the exported file on CPU tensors, returning a CPU tensor."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda *xs: torch.from_numpy(session.run(None, {n: x.numpy() for n, x in zip(names, xs)})[0])
    loaded = torch.jit.load(str(path), map_location="cpu")
    return lambda *xs: loaded(*xs).detach()


@torch.no_grad()
def parity(module: nn.Module, run, cases) -> dict[str, float]:
    """Largest absolute difference, exported vs PyTorch, per check case."""
    return {label: float((run(*inputs) - module(*inputs)).abs().max()) for label, inputs in cases}


def video_loop(step, cf: torch.Tensor, num_frames: int) -> torch.Tensor:
    """The Fundus2Video inference loop around an exported window step (spec 4.7), as
    ``AutoregressiveVideoGAN.translate_video``: N x 3 x H x W CF -> N x T x 1 x H x W frames."""
    total = torch.zeros(cf.shape[0], num_frames, *cf.shape[-2:])
    count = torch.zeros(num_frames)
    previous = cf
    for start in range(num_frames):
        window = step(cf, previous)
        for j in range(WINDOW):
            if start + j < num_frames:
                total[:, start + j] += window[:, j]
                count[start + j] += 1
        previous = window
    return (total / count.view(1, -1, 1, 1)).unsqueeze(2)


def card(model, checkpoint: dict, fmt: str, out: Path, names, outputs, multiple: int, kind: str) -> dict:
    """The preprocessing the exported graph expects (written as ``<out>.json``)."""
    image_size = (checkpoint.get("datamodule_hyper_parameters") or {}).get("image_size")
    record = checkpoint.get("fundus2ffa")  # the run record (fundus2ffa/checkpoint.py), when present
    if image_size is None and isinstance(record, dict):
        image_size = ((record.get("config") or {}).get("data") or {}).get("image_size")
    info = {
        "file": out.name,
        "format": fmt,
        "model": f"{type(model).__module__}.{type(model).__qualname__}",
        "ema": model.ema is not None,
        "kind": kind,
        "inputs": {
            "cf": {"shape": ["batch", 3, "height", "width"], "dtype": "float32", "channels": "RGB",
                   "normalisation": "8-bit RGB x -> x / 127.5 - 1 (range [-1, 1])"},
        },
        "outputs": {},
        "size_policy": {
            "multiple": multiple,
            "native": f"pad height and width up to multiples of {multiple} by reflection, split evenly "
                      "(top/left get the smaller half), and crop the output back (fundus2ffa.nets.padding.pad_to_multiple)",
            "resize": "resize the CF to training_image_size (OpenCV INTER_AREA), run, resize the output back (INTER_CUBIC)",
            "training_image_size": image_size,
            "large_images": "tile (fundus2ffa.inference.tiled): overlapping tiles blended with Gaussian weights",
        },
        "fov": "none: the whole image, dark surround included, is translated, as task=predict does; no FOV mask",
    }
    to8 = "uint8 = clip(round((y + 1) * 127.5), 0, 255)"
    if kind == "video_window_step":
        info["inputs"]["previous"] = {"shape": ["batch", WINDOW, "height", "width"], "dtype": "float32",
                                      "meaning": "the previous window of 3 grey frames in [-1, 1]; the CF itself for the first step"}
        info["outputs"]["window"] = {"shape": ["batch", WINDOW, "height", "width"], "range": [-1, 1], "to_uint8": to8}
        info["video_loop"] = (
            "previous = cf; for t in 0..T-1: window = step(cf, previous); add window[:, j] to frame t + j for j = 0, 1, 2 "
            "where t + j < T; previous = window. Frame k = sum / number of windows covering it "
            "(fundus2ffa.export.video_loop; T = model.num_frames, "
            f"{model.hparams.get('num_frames', 12)} for this model)"
        )
    else:
        info["outputs"]["ffa"] = {"shape": ["batch", 1, "height", "width"], "range": [-1, 1], "to_uint8": to8}
    return info


def export(ckpt_path: str, fmt: str, out: str, check: bool = True, tolerance: float = 1e-4, opset: int = 17,
           exporter: str = "legacy") -> dict:
    """Export the checkpoint's generator to ``out`` and its card to ``<out>.json``; returns the card."""
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {'|'.join(FORMATS)}, got {fmt!r} (e.g. format=onnx)")
    if exporter not in EXPORTERS:
        raise ConfigError(f"exporter must be one of {'|'.join(EXPORTERS)}, got {exporter!r}")
    if not out:
        raise ConfigError("export needs an output file: add out=/path/to/generator.onnx (or .pt for torchscript)")
    if not ckpt_path or not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist; point it to a .ckpt file (e.g. <run dir>/checkpoints/last.ckpt)")
    if fmt == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise ConfigError("format=onnx needs onnx and onnxruntime: pip install 'fundus2ffa[export]'") from None

    from fundus2ffa.predict import load_model

    model = load_model(ckpt_path).eval()
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    module, names, outputs, multiple, kind = exportable(model)
    cases = check_inputs(names, multiple)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        with torch.no_grad():
            if fmt == "onnx":
                _export_onnx(module, cases[0][1], names, outputs, tmp, int(opset), exporter)
            else:
                _export_torchscript(module, cases[0][1], tmp)
    except Exception as exc:  # noqa: BLE001 - every exporter failure becomes one clear error
        tmp.unlink(missing_ok=True)
        raise ExportError(
            f"{type(model).__name__} ({kind}) cannot be exported to {fmt}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            + ("; try format=torchscript" if fmt == "onnx" else "; try format=onnx")
        ) from exc
    info = card(model, checkpoint, fmt, path, names, outputs, multiple, kind)
    if check:
        try:
            diffs = parity(module, runner(fmt, tmp, names), cases)
        except Exception as exc:  # noqa: BLE001 - a graph that does not run is not exported
            tmp.unlink(missing_ok=True)
            raise ExportError(
                f"the exported {fmt} graph of {type(model).__name__} ({kind}) cannot be run on its inputs {names}: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}; nothing was written (a generator that leaves "
                "torch, e.g. through NumPy, is traced as a constant)"
            ) from exc
        info["parity"] = {"tolerance": float(tolerance), "max_abs_diff": diffs}
        worst = max(diffs.values())
        if not worst <= float(tolerance):  # also catches NaN
            tmp.unlink(missing_ok=True)
            raise ExportError(
                f"the exported {fmt} graph of {type(model).__name__} differs from PyTorch by {worst:.3g} > tolerance "
                f"{tolerance} ({diffs}); nothing was written. Try the other format, or exporter=dynamo for ONNX"
            )
    tmp.replace(path)
    card_path = path.with_name(path.name + ".json")
    card_path.write_text(json.dumps(info, indent=2))
    log.info("exported %s to %s (card %s)", type(model).__name__, path, card_path)
    return info


def main(argv: list[str] | None = None) -> dict:
    """``key=value`` arguments: ckpt_path, format (onnx | torchscript), out, check, tolerance, opset, exporter."""
    args = OmegaConf.to_container(OmegaConf.from_dotlist(list(sys.argv[1:] if argv is None else argv)))
    unknown = sorted(set(args) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown export arguments {unknown}; known: {sorted(DEFAULTS)} (key=value)")
    settings = {**DEFAULTS, **args}
    return export(settings["ckpt_path"], settings["format"], settings["out"], bool(settings["check"]),
                  float(settings["tolerance"]), int(settings["opset"]), settings["exporter"])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = main()
    print(json.dumps(result.get("parity", {}), indent=2))
