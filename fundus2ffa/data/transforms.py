"""The one augmentation: identical geometry for the CF, every FFA frame and every mask of a sample.

One albumentations ``Compose`` call with ``additional_targets`` moves all images of a sample together
(conventions: Data; reference_spec 1.4: the official Fundus2Video loader flips the CF alone, F2).
Randomness is seeded per sample from torch's RNG, so a run is reproducible under
``seed_everything(workers=True)``, including after a resume.

Crop modes: ``random`` | ``center`` | ``quadrants`` (four fixed corner crops, i.e. four views of each
image: Fundus2Angio's test crops) | ``none`` of ``crop_size``; Fundus2Video's random box
(``random_crop``: a probability; section 4.2 step 5: on the w x w FOV image x1 ~ U[0, w/1.5],
x2 ~ U[x1 + w/3, w], likewise y), which :class:`~fundus2ffa.data.preprocess.Preprocess` cuts from the
native image so it is resampled once; flips; Li et al.'s disc ROI. ``load_size`` is pix2pix's
resize-then-crop size, passed to the preprocessing as its target size in this split. ``view_resize``
and ``view_crop`` are pix2pix's ``resize_and_crop`` applied to each cropped view instead (a patch
resized to load_size with PIL bicubic on the 8-bit images, then a random crop of crop_size: the
li2020/pix2pix column, whose patches are cut first; issue 20 item 3).

Outputs (:meth:`Transform.to_tensors`): ``cf`` 3 x H x W and ``frames`` T x C x H x W in [-1, 1] with
C = ``channels`` (1, or 3: the green channel replicated as the Fundus2Video code feeds real frames);
masks 1 x H x W in {0, 1}.
"""

from dataclasses import replace

import albumentations as A
import cv2
import numpy as np
import torch

from fundus2ffa.data.records import Sample
from fundus2ffa.errors import ConfigError
from fundus2ffa.priors.fov import PIL_BICUBIC, disc_mask, resize_image

CROP_MODES = ("random", "center", "quadrants", "none")


def _writable(array: np.ndarray) -> np.ndarray:
    """A contiguous array torch may wrap: PIL's ``np.asarray(image)`` is read-only, and torch.from_numpy warns
    on (and must not share) one; a copy only where needed."""
    array = np.ascontiguousarray(array)
    return array if array.flags.writeable else array.copy()


def to_tensor_pm1(image: np.ndarray) -> torch.Tensor:
    """uint8 H x W (x C) -> float C x H x W in [-1, 1], i.e. (x/255 - 0.5)/0.5 (reference_spec 1.1)."""
    if image.ndim == 2:
        image = image[:, :, None]
    tensor = torch.from_numpy(_writable(image)).permute(2, 0, 1).float()
    return tensor.div_(127.5).sub_(1.0)


def _pair(size) -> tuple[int, int] | None:
    """An int side or an [height, width] pair -> (height, width)."""
    if size is None:
        return None
    if isinstance(size, int):
        return size, size
    height, width = (int(v) for v in size)
    return height, width


def quadrant_origin(height: int, width: int, crop: tuple[int, int], view: int) -> tuple[int, int]:
    """Top-left corner of quadrant crop ``view`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right).

    Crops sit in the image corners, overlapping in the middle when twice the crop exceeds the image
    (Fundus2Angio's four 512x512 test crops of a 720x576 Isfahan image, reference_spec 3.1).
    """
    ch, cw = crop
    top = 0 if view < 2 else max(0, height - ch)
    left = 0 if view % 2 == 0 else max(0, width - cw)
    return top, left


def random_crop_box(rng: np.random.Generator, height: int, width: int) -> tuple[int, int, int, int]:
    """(y1, y2, x1, x2) of section 4.2 step 5: start ~ U[0, side/1.5], end ~ U[start + side/3, side]."""

    def span(side: int) -> tuple[int, int]:
        start = int(rng.uniform(0.0, side / 1.5))
        end = int(round(rng.uniform(start + side / 3.0, side)))
        return start, min(side, max(start + 1, end))

    y1, y2 = span(height)
    x1, x2 = span(width)
    return y1, y2, x1, x2


class Transform:
    """Crop, flip and disc-mask a :class:`Sample` with one set of random parameters, then make tensors.

    Args:
        load_size: pix2pix's resize-before-crop size (an int side); the preprocessing resizes to it.
        crop_size: the crop, an int side or [height, width] (Li et al.: 288x360 Isfahan patches); None: no crop.
        crop: random | center | quadrants | none.
        random_crop: probability of Fundus2Video's random box (1.0 in the code's training, 0 for evaluation).
        hflip, vflip: probabilities of flipping everything (pix2pix and Fundus2Video flip; Fundus2Angio does not).
        disc_roi: multiply every image and mask by the disc inscribed in the crop (Li et al. section 2.1:
            square and circular display forms). A probability in [0, 1]; True means always.
        channels: 1 (frames T x 1 x H x W) or 3 (the green channel replicated).
        view_resize: None, or an int side / [height, width]: resize each view after the crop and flips
            to it, images with PIL bicubic on 8 bits (pix2pix's ``transforms.Resize([load_size] * 2,
            BICUBIC)`` on PIL images), masks nearest. pix2pix's ``load_size`` (286) for a patch.
        view_crop: None, or an int side / [height, width]: then a random crop of it, at the same place for
            every image of the sample (pix2pix's ``crop_size`` (256) jitter, ``get_params``: top-left
            uniform over the valid positions).
    """

    def __init__(
        self,
        load_size=None,
        crop_size=None,
        crop: str = "random",
        random_crop: float = 0.0,
        hflip: float = 0.0,
        vflip: float = 0.0,
        disc_roi: float = 0.0,
        channels: int = 1,
        view_resize=None,
        view_crop=None,
    ):
        if crop not in CROP_MODES:
            raise ConfigError(f"data.*_transform.crop must be one of {'|'.join(CROP_MODES)}, got {crop!r}")
        for name, value in (("random_crop", random_crop), ("hflip", hflip), ("vflip", vflip), ("disc_roi", disc_roi)):
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"data.*_transform.{name} is a probability in [0, 1], got {value}")
        if int(channels) not in (1, 3):
            raise ConfigError(f"data.*_transform.channels must be 1 or 3, got {channels}")
        if load_size is not None and not isinstance(load_size, int):
            raise ConfigError(f"data.*_transform.load_size is one side (the preprocessing policy keeps or not the aspect), got {load_size}")
        self.load_size, self.crop_size, self.crop = load_size, _pair(crop_size), crop
        self.random_crop, self.hflip, self.vflip = float(random_crop), float(hflip), float(vflip)
        self.disc_roi, self.channels = float(disc_roi), int(channels)
        if self.crop == "quadrants" and self.crop_size and self.load_size:
            raise ConfigError("crop=quadrants does not combine with load_size; crop the native image")
        self.view_resize, self.view_crop = _pair(view_resize), _pair(view_crop)
        if self.view_crop and self.view_resize and any(c > r for c, r in zip(self.view_crop, self.view_resize)):
            raise ConfigError(f"data.*_transform.view_crop {list(self.view_crop)} is larger than view_resize {list(self.view_resize)}")
        self._composes: dict[tuple, A.Compose] = {}

    @property
    def num_views(self) -> int:
        """Samples made from each record per pass: 4 for quadrant crops, else 1."""
        return 4 if self.crop == "quadrants" and self.crop_size else 1

    @property
    def is_random(self) -> bool:
        """Whether the transform draws random numbers (evaluation transforms do not)."""
        random_crop = self.crop_size and self.crop == "random"
        return bool(self.hflip or self.vflip or random_crop or self.random_crop or 0 < self.disc_roi < 1 or self.view_crop)

    def draw_box(self, rng: np.random.Generator | None, height: int, width: int) -> tuple | None:
        """Fundus2Video's random box on the h x w output, or None (not drawn this time / not random)."""
        if rng is None or not self.random_crop or rng.random() >= self.random_crop:
            return None
        return random_crop_box(rng, height, width)

    def _compose(self, key: tuple) -> A.Compose:
        if key not in self._composes:
            frames, km_frames, mask_names = key
            ops = []
            if self.crop_size and self.crop == "random":
                ops.append(A.RandomCrop(*self.crop_size, pad_if_needed=True))
            elif self.crop_size and self.crop == "center":
                ops.append(A.CenterCrop(*self.crop_size, pad_if_needed=True))
            if self.hflip:
                ops.append(A.HorizontalFlip(p=self.hflip))
            if self.vflip:
                ops.append(A.VerticalFlip(p=self.vflip))
            targets = {f"frame{t}": "image" for t in range(frames)}
            targets.update({f"km{t}": "image" for t in range(km_frames)})
            targets.update({f"mask_{name}": "mask" for name in mask_names})
            self._composes[key] = A.Compose(ops, additional_targets=targets)
        return self._composes[key]

    def geometry(self, sample: Sample, seed: int = 0, view: int = 0) -> Sample:
        """The sample cropped/flipped/disc-masked with one set of parameters (uint8 in, uint8 out)."""
        names = tuple(sorted(sample.masks))
        km = sample.km_frames if sample.km_frames is not None else np.zeros((0,), np.uint8)
        images = {"image": sample.cf, **{f"frame{t}": f for t, f in enumerate(sample.frames)}}
        images.update({f"km{t}": f for t, f in enumerate(km)})
        images.update({f"mask_{n}": sample.masks[n] for n in names})
        if self.crop == "quadrants" and self.crop_size:
            height, width = sample.cf.shape[:2]
            ch, cw = self.crop_size
            if height < ch or width < cw:
                raise ValueError(f"quadrant crops of {ch}x{cw} need images at least that large, got {height}x{width}")
            top, left = quadrant_origin(height, width, self.crop_size, view)
            images = {k: v[top : top + ch, left : left + cw] for k, v in images.items()}
        compose = self._compose((len(sample.frames), len(km), names))
        compose.set_random_seed(int(seed))
        out = compose(**images)
        if self.view_resize or self.view_crop:
            out = self._resize_and_crop_view(out, seed)
        if self.disc_roi and (self.disc_roi >= 1 or np.random.default_rng(seed + 1).random() < self.disc_roi):
            disc = disc_mask(*out["image"].shape[:2])
            out = {k: v * (disc[..., None] if v.ndim == 3 else disc) for k, v in out.items()}
        return replace(
            sample,
            cf=out["image"],
            frames=np.stack([out[f"frame{t}"] for t in range(len(sample.frames))]),
            masks={n: out[f"mask_{n}"] for n in names},
            km_frames=None if sample.km_frames is None else np.stack([out[f"km{t}"] for t in range(len(km))]),
        )

    def _resize_and_crop_view(self, images: dict, seed: int) -> dict:
        """pix2pix's resize_and_crop on one view: PIL bicubic to ``view_resize`` (masks nearest), then a
        random ``view_crop`` at one place for all (a flip before it is the same distribution as pix2pix's
        flip after it: the kernel and the crop positions are symmetric)."""
        if self.view_resize:
            height, width = self.view_resize
            images = {key: _resize_view(key, value, height, width) for key, value in images.items()}
        if self.view_crop:
            ch, cw = self.view_crop
            height, width = images["image"].shape[:2]
            if height < ch or width < cw:
                raise ValueError(f"view_crop {ch}x{cw} needs views at least that large, got {height}x{width} (set view_resize)")
            rng = np.random.default_rng([int(seed), 2])
            top, left = int(rng.integers(0, height - ch + 1)), int(rng.integers(0, width - cw + 1))
            images = {key: np.ascontiguousarray(value[top : top + ch, left : left + cw]) for key, value in images.items()}
        return images

    def to_tensors(self, sample: Sample) -> dict:
        """``cf`` 3 x H x W, ``frames`` T x C x H x W in [-1, 1]; each mask 1 x H x W float {0, 1}."""
        frames = torch.from_numpy(_writable(sample.frames)).float().div_(127.5).sub_(1.0)[:, None]
        if self.channels == 3:
            frames = frames.expand(-1, 3, -1, -1).contiguous()
        out = {"cf": to_tensor_pm1(sample.cf), "frames": frames}
        for name, mask in sample.masks.items():
            out[name] = torch.from_numpy(np.ascontiguousarray(mask > 0)).float()[None]
        return out


def _resize_view(key: str, image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Images PIL bicubic (8-bit, as pix2pix), masks (``mask_*``) nearest, their dtype kept."""
    if not key.startswith("mask_"):
        return resize_image(image, height, width, PIL_BICUBIC)
    resized = resize_image(image.astype(np.uint8), height, width, cv2.INTER_NEAREST)
    return resized.astype(image.dtype)


PairedTransform = VideoTransform = Transform
