"""The one deterministic preprocessing from a raw CF (and, in training, its frames and masks) to the
network's input, and its inverse from a generated output back to the raw image's geometry.

Training, evaluation and ``task=predict`` call the same code (issue 9), so a model never sees at
prediction time an image prepared differently from its training data (issue 10.2). Steps:

1. read: EXIF orientation and bit depth are handled by :mod:`fundus2ffa.data.io` (readers and predict);
2. field of view (reference_spec section 1.3): the mask of :func:`~fundus2ffa.priors.fov.fov_mask`; with
   ``fov_crop`` every image is zeroed outside it and cropped to its bounding box (step 6). In training
   the mask uses the CF and the sampled frames (Fundus2Video's code); at prediction, the CF alone;
3. resize policy: ``square`` (pix2pix ``resize``: size x size, aspect not kept; Fundus2Video resizes
   the FOV box to w x w), ``scale_width`` (pix2pix ``scale_width``: width = size, aspect kept, the
   height floored as pix2pix's and pix2pixHD's ``int(size * h / w)``),
   ``shorter_side`` (the shorter side = size, aspect kept) or ``native`` (no resampling: models trained
   on native-scale crops, e.g. Fundus2Angio's 512 crops and Li et al.'s 288x360 Isfahan patches);
4. padding to a multiple of ``multiple`` (prediction of whole images by a fully convolutional
   generator; reflection, :func:`~fundus2ffa.nets.padding.pad_to_multiple`);
5. normalisation to [-1, 1], (x/255 - 0.5)/0.5 (section 1.1).

The resampling happens once: a training crop box (Fundus2Video's random box, section 4.2 step 5) is
mapped onto the native field-of-view box and cut there before the single resize (issue 10.8).
:meth:`Preprocess.invert` un-pads, resizes back to the box and pastes into a black image of the raw
size (zero outside the field of view when it was cropped to it).

Settings are a plain dict under ``data.preprocess`` (so they are in the checkpoint's stored config) and
``predict.mode`` can override them.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from fundus2ffa.data.transforms import to_tensor_pm1
from fundus2ffa.errors import ConfigError, DataError
from fundus2ffa.nets.padding import pad_to_multiple
from fundus2ffa.priors.fov import PIL_BICUBIC, fov_bbox, fov_crop, fov_mask

RESIZE_POLICIES = ("square", "scale_width", "shorter_side", "native")
INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA,
    "pil_bicubic": PIL_BICUBIC,
}


@dataclass(frozen=True)
class Geometry:
    """Where a network input came from: the raw ``shape`` (H, W), the raw ``box`` (top, bottom, left,
    right) it was cut from, the resized ``size`` (h, w), the ``pad`` (top, bottom, left, right) added
    to reach a multiple, and the raw field-of-view mask when images were zeroed outside it."""

    shape: tuple[int, int]
    box: tuple[int, int, int, int]
    size: tuple[int, int]
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    fov: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Preprocess:
    """Raw CF -> network input, and back (module notes).

    Args:
        resize: square | scale_width | shorter_side | native.
        size: the target side of the policy (ignored by native).
        multiple: pad the prediction input to a multiple of this (1: no padding).
        fov_crop: zero outside the field of view and crop to its bounding box first (section 1.3 step 6).
        fov_frames: in training, the field of view also requires every sampled FFA frame > 2 (the code);
            prediction has only the CF.
        interpolation: nearest | linear | cubic | area | pil_bicubic for images (masks are always
            nearest): linear is Fundus2Video's cv2 default; pil_bicubic is pix2pix's (PIL Image.BICUBIC,
            antialiased when shrinking) and the still path's default; cubic is OpenCV's INTER_CUBIC,
            which aliases thin vessels when shrinking a large image (kept for runs made before
            pil_bicubic existed: their checkpoints say cubic).
    """

    resize: str = "native"
    size: int | None = None
    multiple: int = 1
    fov_crop: bool = False
    fov_frames: bool = True
    interpolation: str = "pil_bicubic"

    def __post_init__(self):
        if self.resize not in RESIZE_POLICIES:
            raise ConfigError(f"data.preprocess.resize must be one of {'|'.join(RESIZE_POLICIES)}, got {self.resize!r}")
        if self.resize != "native" and (self.size is None or int(self.size) < 1):
            raise ConfigError(f"data.preprocess.size must be a positive side for resize={self.resize}, got {self.size}")
        if int(self.multiple) < 1:
            raise ConfigError(f"data.preprocess.multiple must be at least 1, got {self.multiple}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"data.preprocess.interpolation must be one of {'|'.join(INTERPOLATIONS)}, got {self.interpolation!r}")

    @classmethod
    def from_config(cls, settings: Mapping | None, **defaults) -> "Preprocess":
        """From the plain ``data.preprocess`` dict (unknown keys are a ConfigError naming them)."""
        from fundus2ffa.data.readers.base import plain

        given = {**defaults, **dict(plain(settings) or {})}
        unknown = sorted(set(given) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"data.preprocess has unknown key(s) {unknown}; use {', '.join(cls.__dataclass_fields__)}.")
        return cls(**given)

    def output_size(self, height: int, width: int, size: int | None = None) -> tuple[int, int]:
        """(h, w) of a ``height`` x ``width`` box under the policy; ``size`` overrides ``self.size``
        (pix2pix's larger ``load_size`` of training crops)."""
        side = int(size or self.size or 0)
        if self.resize == "native" or not side:
            return height, width
        if self.resize == "square":
            return side, side
        if self.resize == "scale_width":
            # floored, as both references: junyanz ``__scale_width`` h = int(max(target * oh / ow, crop)),
            # pix2pixHD ``__scale_width`` h = int(target * oh / ow) (issue 20 item 5; was rounded)
            return max(1, height * side // width), side
        scale = side / min(height, width)  # shorter_side
        return max(1, round(height * scale)), max(1, round(width * scale))

    # -- planning and resampling (shared by the dataset and prediction) ---------------------------

    def field_of_view(self, cf: np.ndarray, frames=()) -> np.ndarray:
        """Section 1.3 steps 1-5 from the CF and, with ``fov_frames``, the frames."""
        return fov_mask(cf, list(frames) if self.fov_frames else [])

    def plan(self, cf: np.ndarray, frames=(), fov: np.ndarray | None = None, size: int | None = None, name: str = "") -> Geometry:
        """The geometry of one sample: its field of view (``fov`` if the reader has one, else computed
        from the CF and, with ``fov_frames``, ``frames``), box and output size."""
        height, width = cf.shape[:2]
        if fov is None:
            fov = self.field_of_view(cf, frames)
        box = (0, height, 0, width)
        if self.fov_crop:
            if not fov.any():
                raise DataError(
                    f"{name or 'image'}: empty field of view (no pixel with CF green > 11 and every frame > 2). Check "
                    "that the image is not black and the CF and frames are registered, or set data.preprocess.fov_crop=false."
                )
            box = fov_bbox(fov)
        size_hw = self.output_size(box[1] - box[0], box[3] - box[2], size)
        return Geometry(shape=(height, width), box=box, size=size_hw, fov=fov)

    def resample(self, image: np.ndarray, geometry: Geometry, nearest: bool = False, stack: bool = False, sub_box=None) -> np.ndarray:
        """Zero outside the field of view (``fov_crop``), cut the box (and ``sub_box``, given in output
        coordinates, mapped onto the raw box so the image is resampled once) and resize to the output size
        (:func:`~fundus2ffa.priors.fov.fov_crop`). ``stack``: ``image`` is T x H x W."""
        top, bottom, left, right = geometry.box
        if sub_box is not None:
            y1, y2, x1, x2 = sub_box
            sy, sx = (bottom - top) / geometry.size[0], (right - left) / geometry.size[1]
            top, bottom = top + round(y1 * sy), top + max(round(y1 * sy) + 1, round(y2 * sy))
            left, right = left + round(x1 * sx), left + max(round(x1 * sx) + 1, round(x2 * sx))
        interpolation = cv2.INTER_NEAREST if nearest else INTERPOLATIONS[self.interpolation]
        mask = geometry.fov if self.fov_crop else None
        image = np.moveaxis(image, 0, -1) if stack else image
        out = fov_crop(image, mask, geometry.size, (top, bottom, left, right), interpolation)
        return np.ascontiguousarray(np.moveaxis(out, -1, 0)) if stack else out

    # -- prediction --------------------------------------------------------------------------------

    def __call__(self, cf: np.ndarray) -> tuple[torch.Tensor, Geometry]:
        """A raw H x W x 3 uint8 CF -> (1 x 3 x h x w network input in [-1, 1], its geometry)."""
        geometry = self.plan(cf)
        x = to_tensor_pm1(self.resample(cf, geometry))[None]
        x, crop = pad_to_multiple(x, int(self.multiple))
        if crop is not None:
            (rows, cols), (h, w) = crop, x.shape[-2:]
            pad = (rows.start, h - rows.stop, cols.start, w - cols.stop)
            geometry = Geometry(geometry.shape, geometry.box, geometry.size, pad, geometry.fov)
        return x, geometry

    def invert(self, output: np.ndarray, geometry: Geometry) -> np.ndarray:
        """A generated uint8 output (h x w, or T x h x w) -> the raw image's geometry: un-pad, resize to
        the box, paste into a black image of the raw size; zero outside the field of view when cropped."""
        stack = output.ndim == 3
        pt, pb, pl, pr = geometry.pad
        h, w = output.shape[-2:]
        output = output[..., pt : h - pb, pl : w - pr]
        top, bottom, left, right = geometry.box
        output = np.moveaxis(output, 0, -1) if stack else output
        output = fov_crop(output, None, (bottom - top, right - left), (0, output.shape[0], 0, output.shape[1]), INTERPOLATIONS[self.interpolation])
        output = np.moveaxis(output, -1, 0) if stack else output
        raw = np.zeros((*output.shape[:-2], *geometry.shape), output.dtype)
        raw[..., top:bottom, left:right] = output
        if self.fov_crop and geometry.fov is not None:
            raw *= (geometry.fov > 0).astype(raw.dtype)
        return raw
