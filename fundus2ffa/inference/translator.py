"""The one translator: a loaded checkpoint + a prediction mode -> FFA pixels (issue 19, item 2).

Streaming predict (``task=predict``), the web demo, the benches and export's parity check all call
:class:`Translator`, so the same CF gives the same pixels through every door. It holds

* the checkpoint's own preprocessing (:class:`~fundus2ffa.data.preprocess.Preprocess` from its stored
  ``data.preprocess``) with the mode's override of the resize policy, and its inverse;
* the mode (``predict.mode``):

  ``null``    the checkpoint's preprocessing as trained. A model that runs its generator at a fixed
              size on native-scale training patches (Li et al.'s pix2pix: 288 x 360 quadrants resized
              to 256 x 256, ``model.generator_input_size``) predicts in ``patch`` mode, so a whole
              720 x 576 image is seen at the training scale, not squeezed whole into 256 x 256.
  ``resize``  the CF squeezed to ``predict.image_size`` square and the output resized back.
  ``native``  no resampling; padded to ``predict.multiple``. A warning says so when the checkpoint
              was trained on resized images (the native scale is then not the training scale).
  ``tiled``   the checkpoint's preprocessing first (resize included: tiles run at the training
              scale), then the network input in overlapping tiles if it is larger than one tile
              (a single tile otherwise; the grid of least area, inference/tiled.py).
  ``patch``   native scale, in overlapping tiles of the training patch (``data.eval_transform
              .crop_size``) that the model's ``translate`` handles as in training.

  ``native`` and ``null`` switch to tiles above ``predict.tiled.auto_above`` pixels (longer side).
* the generator step (``step``): the model's own by default; export's parity check passes the
  exported graph instead, so pre- and post-processing are shared code, not a copy.

``translate(cf)`` maps one H x W x 3 uint8 CF to an H x W uint8 FFA (or T of them for video models);
the batch API (:meth:`prepare`, :meth:`run`, :meth:`finish`) is what streaming predict uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch

from fundus2ffa.data.preprocess import Geometry, Preprocess
from fundus2ffa.errors import ConfigError
from fundus2ffa.inference.tiled import TileSettings, tiled_apply
from fundus2ffa.metrics.convert import to_uint8

log = logging.getLogger(__name__)

MODES = (None, "resize", "native", "tiled", "patch")


@dataclass(frozen=True)
class TranslateSettings:
    """The ``predict`` keys that decide the pixels: mode, image_size (resize), multiple (native),
    tiled (inference/tiled.py) and, for video models, num_frames (null: the model's own)."""

    mode: str | None = None
    image_size: int | None = None
    multiple: int = 256
    tiled: TileSettings = TileSettings()
    num_frames: int | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"predict.mode must be null (the checkpoint's data.preprocess), resize, native, tiled or patch, got {self.mode!r}")
        if int(self.multiple) < 1:
            raise ConfigError(f"predict.multiple must be at least 1, got {self.multiple}")
        if self.num_frames is not None and int(self.num_frames) < 1:
            raise ConfigError(f"predict.num_frames must be at least 1, got {self.num_frames}")

    @classmethod
    def from_config(cls, node: Mapping | None) -> "TranslateSettings":
        """From the ``predict`` node (other predict keys, such as input_dir, are ignored here)."""
        node = dict(node or {})
        size = node.get("image_size")
        return cls(
            mode=node.get("mode"), image_size=int(size) if size is not None else None,
            multiple=int(node.get("multiple", 256)), tiled=TileSettings.from_config(node.get("tiled")),
            num_frames=int(node["num_frames"]) if node.get("num_frames") is not None else None,
        )


def size_multiple(net: torch.nn.Module) -> int | None:
    """The side multiple a generator needs (2**downsamplings; pix2pixHD's local enhancer: its divisor);
    None when the net does not say."""
    net = getattr(net, "_orig_mod", net)
    if hasattr(net, "multiple"):
        return int(net.multiple)
    if hasattr(net, "divisor"):
        return int(net.divisor)
    for attr in ("num_downs", "n_downsampling"):
        if hasattr(net, attr):
            return 2 ** int(getattr(net, attr))
    return None


def model_multiple(model) -> int | None:
    """The multiple the model's translating network needs (None: unknown)."""
    if getattr(model, "generator_size", None):
        return 1  # the model resizes every input to its generator's size itself
    name = "g_ab" if hasattr(model, "g_ab") else "generator"
    net = model.eval_net(name) if hasattr(model, "eval_net") else getattr(model, name, None)
    return size_multiple(net) if net is not None else None


class Translator:
    """A model with its preprocessing and mode (module notes)."""

    def __init__(self, model, preprocess: Preprocess, settings: TranslateSettings, *, tiling: str = "auto",
                 tile_multiple: int = 1, tile_shape: tuple[int, int] | None = None, num_frames: int | None = None,
                 step: Callable | None = None, device: torch.device | str | None = None):
        if tiling not in ("never", "auto", "always"):
            raise ValueError(f"tiling must be never, auto or always, got {tiling!r}")
        self.model, self.preprocess, self.settings = model, preprocess, settings
        self.tiling, self.tile_multiple, self.tile_shape = tiling, int(tile_multiple), tile_shape
        self.is_video = hasattr(model, "translate_video")
        own_frames = (getattr(model, "hparams", None) or {}).get("num_frames", 12)
        self.num_frames = int(num_frames or settings.num_frames or (own_frames if self.is_video else 1))
        self.step = step
        if device is None:
            parameters = getattr(model, "parameters", None)
            first = next(iter(parameters()), None) if callable(parameters) else None
            device = first.device if first is not None else "cpu"
        self.device = torch.device(device)

    # ------------------------------------------------------------------ building
    @classmethod
    def for_model(cls, model, stored_preprocess: Mapping | None, settings: TranslateSettings, *,
                  training_crop: tuple[int, int] | None = None, step: Callable | None = None, device=None) -> "Translator":
        """The translator of ``model`` trained with ``stored_preprocess`` (its ``data.preprocess``) in
        ``settings.mode``; ``training_crop``: the native-scale patch it was trained on (patch mode)."""
        preprocess = Preprocess.from_config(stored_preprocess or {})
        multiple = model_multiple(model)
        tile_multiple = int(multiple or settings.multiple)
        mode = settings.mode
        if mode is None and getattr(model, "generator_size", None) and preprocess.resize == "native" and training_crop:
            mode = "patch"  # e.g. li2020 pix2pix: 288x360 native patches, each resized to 256x256 by the model
            log.info("predict.mode=null: the model was trained on %dx%d native-scale patches, predicting in patch mode", *training_crop)
        tiling, tile_shape = "auto", None
        if mode == "resize":
            if not settings.image_size:
                raise ConfigError("predict.mode=resize needs predict.image_size (the square side), e.g. predict.image_size=256")
            preprocess = replace(preprocess, resize="square", size=int(settings.image_size), multiple=1)
        elif mode == "native":
            if preprocess.resize != "native":
                log.warning(
                    "predict.mode=native runs the generator at the input's own scale, but this checkpoint was trained on "
                    "images resized (data.preprocess.resize=%s, size %s): outputs may be at the wrong scale. "
                    "predict.mode=null (or tiled) uses the training scale.", preprocess.resize, preprocess.size,
                )
            preprocess = replace(preprocess, resize="native", multiple=int(multiple or settings.multiple))
        elif mode == "tiled":
            preprocess = replace(preprocess, multiple=1)
            tiling = "always"
        elif mode == "patch":
            if not training_crop:
                raise ConfigError(
                    "predict.mode=patch needs the checkpoint's training patch (data.eval_transform.crop_size), which it "
                    "does not store; use predict.mode=tiled or resize"
                )
            preprocess = replace(preprocess, resize="native", multiple=1)
            tiling, tile_shape, tile_multiple = "always", training_crop, 1
        return cls(model, preprocess, settings, tiling=tiling, tile_multiple=tile_multiple, tile_shape=tile_shape,
                   step=step, device=device)

    @classmethod
    def from_loaded(cls, loaded, settings: TranslateSettings, step: Callable | None = None, device=None,
                    fallback_preprocess: Mapping | None = None) -> "Translator":
        """The translator of a :class:`fundus2ffa.loader.LoadedModel`: its stored ``data.preprocess``
        (``fallback_preprocess`` for a checkpoint that stores none)."""
        stored = loaded.preprocess_settings()
        if stored is None:
            log.warning("checkpoint %s stores no data.preprocess: using the composed one", loaded.path)
            stored = fallback_preprocess
        return cls.for_model(loaded.model, stored, settings, training_crop=loaded.training_crop(), step=step, device=device)

    def with_step(self, step: Callable | None) -> "Translator":
        """The same translator with another generator step (export's parity check)."""
        return Translator(self.model, self.preprocess, self.settings, tiling=self.tiling, tile_multiple=self.tile_multiple,
                          tile_shape=self.tile_shape, num_frames=self.num_frames, step=step, device=self.device)

    # ------------------------------------------------------------------ the three steps
    def prepare(self, cf: np.ndarray) -> tuple[torch.Tensor, Geometry]:
        """One H x W x 3 uint8 CF -> (1 x 3 x h x w network input in [-1, 1], its geometry)."""
        return self.preprocess(cf)

    def wants_tiles(self, height: int, width: int) -> bool:
        if self.tiling == "always":
            return True
        return self.tiling == "auto" and self.settings.tiled.wants_tiles(height, width)

    def _still(self, x: torch.Tensor) -> torch.Tensor:
        return self.step(x) if self.step is not None else self.model.translate(x)

    def _generator_step(self):
        return self.step if self.step is not None else self.model.eval_net("generator")

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> torch.Tensor:
        """N x 3 x h x w network inputs -> N x h x w outputs in [-1, 1] (N x T x h x w for videos), whole
        or in tiles (:meth:`wants_tiles`)."""
        x = x.to(self.device)
        tiled = self.wants_tiles(*x.shape[-2:])
        options = {"tile_shape": self.tile_shape}
        if self.is_video:
            step = self.step  # None: the model's own generator (its EMA copy when enabled)
            if tiled:
                generator = self._generator_step()
                step = lambda inp: tiled_apply(generator, inp, self.settings.tiled, self.tile_multiple, **options)  # noqa: E731
            return self.model.translate_video(x, self.num_frames, step=step)[:, :, 0]
        if tiled:
            return tiled_apply(self._still, x, self.settings.tiled, self.tile_multiple, **options)[:, 0]
        return self._still(x)[:, 0]

    def finish(self, fake: torch.Tensor, geometry: Geometry):
        """One output (h x w, or T x h x w) -> uint8 in the input's geometry (padding removed, resize and
        field-of-view crop undone); a list of frames for videos."""
        out = self.preprocess.invert(to_uint8(fake.float()).cpu().numpy(), geometry)
        return list(out) if fake.ndim == 3 else out

    def __call__(self, cf: np.ndarray):
        """One H x W x 3 uint8 CF -> an H x W uint8 FFA (a list of T frames for video models)."""
        x, geometry = self.prepare(cf)
        return self.finish(self.run(x)[0], geometry)


def settings_of(node: Mapping | None) -> TranslateSettings:
    """:class:`TranslateSettings` from a ``predict`` node (a DictConfig or a dict)."""
    from omegaconf import DictConfig, OmegaConf

    keys = ("mode", "image_size", "multiple", "tiled", "num_frames")
    if isinstance(node, DictConfig):  # only these keys are resolved (output_dir may need Hydra's runtime)
        node = {k: OmegaConf.to_container(node[k], resolve=True) if isinstance(node[k], DictConfig) else node[k]
                for k in keys if k in node}
    return TranslateSettings.from_config({k: v for k, v in dict(node or {}).items() if k in keys})

