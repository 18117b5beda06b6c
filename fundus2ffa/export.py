"""Export a trained generator for use outside Python: ONNX (onnxruntime) or TorchScript.

    python -m fundus2ffa.export ckpt_path=<run>/checkpoints/last.ckpt format=onnx out=pix2pix.onnx
    python -m fundus2ffa.export ckpt_path=... format=torchscript out=pix2pix.pt
    python -m fundus2ffa.export --help

Arguments (key=value): ckpt_path (required), out (required), format=onnx|torchscript (onnx),
check=true (the parity check below), tolerance=1e-4, opset=17, exporter=legacy|dynamo (legacy).

What is exported (issue 12, item 3):
  still-image models (pix2pix, pix2pixHD, saliency cGAN, CycleGAN's G_AB, Fundus2Angio)
      ``cf`` N x 3 x H x W -> ``ffa`` N x 1 x H x W, any H and W: the graph pads to the generator's
      size multiple (reflection, split evenly) and crops the output back inside itself, as
      ``predict.mode=native`` does (:class:`PaddedToMultiple`). Fundus2Angio's Lanczos halving is exported as its stride-2 convolution form
      (nets/resample.py ``lanczos_halve_conv``): the matrix form is built per size in NumPy and would fix H, W.
  Fundus2Video
      the window step ``(cf, previous)`` -> ``window``, N x 3 x H x W each; the autoregressive loop stays
      outside the graph (a loop with a Python-chosen length), written out in the card; the model's own
      ``translate_video(cf, T, step=...)`` runs it around the exported graph (spec 4.7: previous_0 = CF;
      window_t = step(CF, previous_t); frame k is the mean of the windows that cover it;
      previous_{t+1} = window_t).
  With ``model.ema.enabled`` the EMA weights are exported (what ``translate`` uses).

Beside the file, ``<out>.json`` (the card) says how to feed it: channels (RGB), normalisation (8-bit / 127.5
- 1), the checkpoint's own ``data.preprocess`` verbatim under ``preprocess`` (resize policy, size,
interpolation, field-of-view crop: what ``task=predict`` applies before the graph) with readable lines
generated from it, the output conversion and, for Fundus2Video, the loop. The export is then checked
(``check=true``): the exported graph and PyTorch on a random input and on a synthetic fundus (real-like:
vessels, disc, dark surround), at sizes that are multiples of nothing (random 256 x 320 and 301 x 457,
eyes 67 x 101 and 101 x 67: :func:`check_inputs` says why the eyes are small), must agree within ``tolerance`` (default 1e-4 in [-1, 1], 1/78 of a grey level); and a whole synthetic CF
translated by the one translator (:class:`fundus2ffa.inference.translator.Translator`, the
checkpoint's preprocessing and its inverse) with the exported graph as its generator step must give
the same 8-bit image as with PyTorch (within one grey level). A failed check leaves nothing written, no
temporary file included.

ONNX uses the TorchScript-based exporter (``dynamo=False``): the convolutional generators here trace
exactly, and it exports in seconds where the dynamo exporter took 50-80 s per tiny model on this
project's 2-core CPU (same parity); ``exporter=dynamo`` switches.
"""

import json
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from fundus2ffa.errors import ConfigError, ExportError, Fundus2FFAError

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
EXPORTERS = ("legacy", "dynamo")
DEFAULTS = {"ckpt_path": None, "format": "onnx", "out": None, "check": True, "tolerance": 1e-4, "opset": 17, "exporter": "legacy"}
WINDOW = 3


# ----------------------------------------------------------------------------- what is exported
def size_multiple(net: nn.Module) -> int:
    """The side multiple a generator needs (fundus2ffa.inference.translator.size_multiple), or an ExportError."""
    from fundus2ffa.inference.translator import size_multiple as multiple_of

    multiple = multiple_of(net)
    if multiple is None:
        raise ExportError(f"cannot tell the size multiple of {type(net).__name__} (no divisor, num_downs or n_downsampling)")
    return multiple


class PaddedToMultiple(nn.Module):
    """Pads every input (N x C x H x W) to multiples of ``multiple`` by reflection (split evenly, the
    smaller half at the top / left, as :func:`fundus2ffa.nets.padding.pad_to_multiple`), runs
    ``module``, crops every output back: inside the graph, so the exported file takes any H x W."""

    def __init__(self, module: nn.Module, multiple: int):
        super().__init__()
        self.module, self.multiple = module, int(multiple)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.multiple == 1:
            return self.module(*inputs)
        h, w = inputs[0].shape[-2], inputs[0].shape[-1]
        ph, pw = (self.multiple - h % self.multiple) % self.multiple, (self.multiple - w % self.multiple) % self.multiple
        top, left = ph // 2, pw // 2
        padded = [torch.nn.functional.pad(x, (left, pw - left, top, ph - top), mode="reflect") for x in inputs]
        out = self.module(*padded)
        return out[..., top:top + h, left:left + w]


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
        multiple = size_multiple(model.eval_net("generator"))
        return PaddedToMultiple(WindowStep(model), multiple).eval(), ["cf", "previous"], ["window"], multiple, "video_window_step"
    if isinstance(model, CoarseFineGAN):
        multiple = int(getattr(model.generator, "multiple", MULTIPLE))
        return PaddedToMultiple(CoarseFineGenerator(model), multiple).eval(), ["cf"], ["ffa"], multiple, "still"
    if not hasattr(model, "translate") or not hasattr(model, "eval_net"):
        raise ExportError(f"{type(model).__name__} has no translate(cf): only fundus2ffa GAN modules can be exported")
    if getattr(model, "generator_size", None):
        raise ExportError(
            f"{type(model).__name__} runs its generator at the fixed size model.generator_input_size="
            f"{list(model.generator_size)} (resized inside translate, antialiased bicubic, which ONNX cannot express); "
            "export a model trained without it"
        )
    name = "g_ab" if hasattr(model, "g_ab") else "generator"
    net = model.eval_net(name)
    average = getattr(model, "ffa_channels", 1) == 3
    multiple = size_multiple(net)
    return PaddedToMultiple(StillGenerator(net, average), multiple).eval(), ["cf"], ["ffa"], multiple, "still"


# ----------------------------------------------------------------------------- check inputs
CHECK_SIZES = ((256, 320), (301, 457))  # random inputs: not multiples of the generators' 4 .. 256, so the in-graph padding runs
EYE_SIZES = ((67, 101), (101, 67))  # synthetic eyes: small (see below)


def check_inputs(names: list[str], multiple: int, seed: int = 0) -> list[tuple[str, tuple[torch.Tensor, ...]]]:
    """(label, inputs) pairs for the parity check: random inputs at :data:`CHECK_SIZES` and a synthetic
    fundus at :data:`EYE_SIZES`.

    Why the eyes are small: onnxruntime's InstanceNormalization computes the variance as E[x^2] - E[x]^2,
    which cancels catastrophically in the near-constant channels of a fundus's dark surround; on the
    pix2pixHD generator (instance norm) the difference to PyTorch grows with the image, 1e-5 at 67 x 101
    and 9.5e-4 at 301 x 457 (measured; PyTorch float32 vs float64 differ by 4.5e-6 there, and random inputs
    by 3e-6 in onnxruntime). The 8-bit check on a whole translated CF (:func:`translation_parity`) covers
    the large image."""
    from fundus2ffa.data.synthetic.retina import synthesize_eye
    from fundus2ffa.data.transforms import to_tensor_pm1

    generator = torch.Generator().manual_seed(seed)
    cases = []
    for (h, w), (eh, ew) in zip(CHECK_SIZES, EYE_SIZES):
        random_cf = torch.rand(2, 3, h, w, generator=generator) * 2 - 1
        eye = to_tensor_pm1(synthesize_eye(seed + eh, size=eh, width=ew, abnormal=True).cf)[None]
        for label, cf in ((f"random {h}x{w}", random_cf), (f"synthetic eye {eh}x{ew}", eye)):
            extra = tuple(torch.rand(cf.shape[0], WINDOW, *cf.shape[-2:], generator=generator) * 2 - 1 for _ in names[1:])
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


def preprocess_lines(preprocess: dict | None, multiple: int) -> dict:
    """Readable lines of how to feed the graph, generated from the checkpoint's ``data.preprocess``."""
    from fundus2ffa.data.preprocess import Preprocess

    if preprocess is None:
        return {"resize": "unknown: the checkpoint stores no data.preprocess; feed images at the scale it was trained at"}
    p = Preprocess.from_config(preprocess)
    interpolation = {"pil_bicubic": "PIL Image.BICUBIC on 8-bit images (antialiased when shrinking)",
                     "cubic": "OpenCV INTER_CUBIC", "linear": "OpenCV INTER_LINEAR", "area": "OpenCV INTER_AREA",
                     "nearest": "OpenCV INTER_NEAREST"}[p.interpolation]
    resize = {
        "native": "none: the graph runs at the image's own scale (the model was trained on native-scale crops)",
        "square": f"resize the (cropped) CF to {p.size} x {p.size} with {interpolation}, run, resize the output back with the same",
        "scale_width": f"resize the (cropped) CF to width {p.size} keeping the aspect, with {interpolation}; resize the output back",
        "shorter_side": f"resize the (cropped) CF so its shorter side is {p.size}, with {interpolation}; resize the output back",
    }[p.resize]
    fov = ("zero the CF outside its field of view (CF green > 11, fundus2ffa.priors.fov.fov_mask) and crop to its bounding "
           "box first; paste the output back into a black image of the input size" if p.fov_crop else
           "none: the whole image, dark surround included, is translated, as task=predict does")
    return {
        "resize": resize,
        "fov": fov,
        "padding": f"inside the graph: any H x W; it pads to multiples of {multiple} by reflection and crops back",
        "large_images": "task=predict tiles images above predict.tiled.auto_above (fundus2ffa.inference.tiled: overlapping "
                        "tiles blended with Gaussian weights); the graph itself runs any size that fits memory",
        "reference": "fundus2ffa.inference.translator.Translator is the reference implementation of this preprocessing",
    }


def card(loaded, fmt: str, out: Path, names, outputs, multiple: int, kind: str) -> dict:
    """How to feed the exported graph (written as ``<out>.json``): the checkpoint's ``data.preprocess``
    verbatim and the lines generated from it."""
    model = loaded.model
    preprocess = loaded.preprocess_settings()
    info = {
        "file": out.name,
        "format": fmt,
        "model": f"{type(model).__module__}.{type(model).__qualname__}",
        "checkpoint": {"path": str(loaded.path), "epoch": loaded.epoch, "global_step": loaded.global_step},
        "ema": model.ema is not None,
        "kind": kind,
        "inputs": {
            "cf": {"shape": ["batch", 3, "height", "width"], "dtype": "float32", "channels": "RGB",
                   "normalisation": "8-bit RGB x -> x / 127.5 - 1 (range [-1, 1])"},
        },
        "outputs": {},
        "preprocess": preprocess,
        "training_image_size": loaded.stored("data.image_size"),
        "size_multiple": multiple,
        "how_to_feed": preprocess_lines(preprocess, multiple),
    }
    to8 = "uint8 = clip(round((y + 1) * 127.5), 0, 255)"
    if kind == "video_window_step":
        info["inputs"]["previous"] = {"shape": ["batch", WINDOW, "height", "width"], "dtype": "float32",
                                      "meaning": "the previous window of 3 grey frames in [-1, 1]; the CF itself for the first step"}
        info["outputs"]["window"] = {"shape": ["batch", WINDOW, "height", "width"], "range": [-1, 1], "to_uint8": to8}
        info["video_loop"] = (
            "previous = cf; for t in 0..T-1: window = step(cf, previous); add window[:, j] to frame t + j for j = 0, 1, 2 "
            "where t + j < T; previous = window. Frame k = sum / number of windows covering it "
            "(the loop of fundus2ffa.models.AutoregressiveVideoGAN.translate_video, whose step= takes the exported graph; "
            "T = model.num_frames, "
            f"{model.hparams.get('num_frames', 12)} for this model)"
        )
    else:
        info["outputs"]["ffa"] = {"shape": ["batch", 1, "height", "width"], "range": [-1, 1], "to_uint8": to8}
    return info


def translation_parity(loaded, module: nn.Module, run, kind: str) -> int:
    """Largest 8-bit difference between a whole synthetic CF translated by the one translator with
    PyTorch and with the exported graph as its generator step (preprocessing and inverse shared)."""
    from fundus2ffa.data.synthetic.retina import synthesize_eye
    from fundus2ffa.inference.translator import Translator, TranslateSettings

    cf = synthesize_eye(7, size=CHECK_SIZES[1][0], width=CHECK_SIZES[1][1], abnormal=True).cf
    translator = Translator.from_loaded(loaded, TranslateSettings(num_frames=4), device="cpu")
    if kind == "video_window_step":
        exported = translator.with_step(lambda x: run(x[:, :3].contiguous(), x[:, 3:].contiguous()))
        mine = translator.with_step(lambda x: module(x[:, :3], x[:, 3:]))
    else:
        exported = translator.with_step(lambda x: run(x.contiguous()))
        mine = translator.with_step(module)
    a, b = np.asarray(mine(cf), dtype=np.int16), np.asarray(exported(cf), dtype=np.int16)
    return int(np.abs(a - b).max())


def export(ckpt_path: str, fmt: str, out: str, check: bool = True, tolerance: float = 1e-4, opset: int = 17,
           exporter: str = "legacy") -> dict:
    """Export the checkpoint's generator to ``out`` and its card to ``<out>.json``; returns the card."""
    from fundus2ffa import loader
    from fundus2ffa.writers import atomic_write, remove_temp_files, write_json

    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {'|'.join(FORMATS)}, got {fmt!r} (e.g. format=onnx)")
    if exporter not in EXPORTERS:
        raise ConfigError(f"exporter must be one of {'|'.join(EXPORTERS)}, got {exporter!r}")
    if not out:
        raise ConfigError("export needs an output file: add out=/path/to/generator.onnx (or .pt for torchscript)")
    path = Path(out)
    if path.is_dir():
        raise ConfigError(f"out={path} is a folder; give a file name, e.g. out={path / ('generator.' + ('onnx' if fmt == 'onnx' else 'pt'))}")
    if not ckpt_path or not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist; point it to a .ckpt file (e.g. <run dir>/checkpoints/last.ckpt)")
    if fmt == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise ConfigError("format=onnx needs onnx and onnxruntime: pip install 'fundus2ffa[export]'") from None
    check_writable(path)

    loaded = loader.load(ckpt_path)
    model = loaded.model
    module, names, outputs, multiple, kind = exportable(model)
    cases = check_inputs(names, multiple)
    for stale in remove_temp_files(path.parent, older_than=time.time()):
        log.info("removed %s, left by an interrupted export", stale)
    info = card(loaded, fmt, path, names, outputs, multiple, kind)
    with atomic_write(path, what="the exported graph") as tmp:
        try:
            with torch.no_grad():
                if fmt == "onnx":
                    _export_onnx(module, cases[0][1], names, outputs, tmp, int(opset), exporter)
                else:
                    _export_torchscript(module, cases[0][1], tmp)
        except Exception as exc:  # noqa: BLE001 - every exporter failure becomes one clear error
            raise ExportError(
                f"{type(model).__name__} ({kind}) cannot be exported to {fmt}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                + ("; try format=torchscript" if fmt == "onnx" else "; try format=onnx")
            ) from exc
        if check:
            try:
                run = runner(fmt, tmp, names)
                diffs = parity(module, run, cases)
                levels = translation_parity(loaded, module, run, kind)
            except Exception as exc:  # noqa: BLE001 - a graph that does not run is not exported
                raise ExportError(
                    f"the exported {fmt} graph of {type(model).__name__} ({kind}) cannot be run on its inputs {names}: "
                    f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}; nothing was written (a generator that leaves "
                    "torch, e.g. through NumPy, is traced as a constant)"
                ) from exc
            info["parity"] = {"tolerance": float(tolerance), "max_abs_diff": diffs, "translated_cf_max_grey_levels": levels}
            worst = max(diffs.values())
            if not worst <= float(tolerance) or levels > 1:  # also catches NaN
                raise ExportError(
                    f"the exported {fmt} graph of {type(model).__name__} differs from PyTorch by {worst:.3g} (tolerance "
                    f"{tolerance}; {diffs}) and by {levels} grey levels on a translated CF (at most 1); nothing was written. "
                    "Try the other format, or exporter=dynamo for ONNX"
                )
    card_path = path.with_name(path.name + ".json")
    write_json(card_path, info, sort_keys=False)
    log.info("exported %s to %s (card %s)", type(model).__name__, path, card_path)
    return info


def check_writable(path: Path) -> None:
    """Fail before the model is loaded when ``path`` cannot be written (naming it and the fix)."""
    import os
    import tempfile

    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".fundus2ffa-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"out={path} cannot be written ({folder}: {exc.strerror or exc}); choose a folder you can write") from None


USAGE = """usage: python -m fundus2ffa.export ckpt_path=<run>/checkpoints/last.ckpt out=<file> [key=value ...]

Export a trained generator for use outside Python (ONNX for onnxruntime, or TorchScript), with a card
<out>.json that says how to feed it (the checkpoint's data.preprocess, normalisation, the video loop).

keys (default):
  ckpt_path   the checkpoint to export (required)
  out         the file to write, e.g. pix2pix.onnx or pix2pix.pt (required)
  format      onnx | torchscript (onnx)
  check       true | false: compare the exported graph with PyTorch before keeping it (true)
  tolerance   largest allowed difference in [-1, 1] (1e-4)
  opset       ONNX opset (17)
  exporter    legacy | dynamo: the ONNX exporter (legacy)

example:
  python -m fundus2ffa.export ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt out=pix2pix.onnx
"""


def main(argv: list[str] | None = None) -> dict | None:
    """``key=value`` arguments: ckpt_path, format (onnx | torchscript), out, check, tolerance, opset, exporter."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(USAGE)
        return None
    bad = [a for a in argv if "=" not in a]
    if bad:
        raise ConfigError(f"arguments are key=value, got {' '.join(bad)}; see python -m fundus2ffa.export --help")
    args = OmegaConf.to_container(OmegaConf.from_dotlist(argv))
    unknown = sorted(set(args) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown export arguments {unknown}; known: {sorted(DEFAULTS)} (key=value)")
    settings = {**DEFAULTS, **args}
    return export(settings["ckpt_path"], settings["format"], settings["out"], bool(settings["check"]),
                  float(settings["tolerance"]), int(settings["opset"]), settings["exporter"])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = main()
    except Fundus2FFAError as exc:
        sys.exit(f"error: {exc}")
    if result is not None:
        print(json.dumps(result.get("parity", {}), indent=2))
