"""Paired transforms: identical geometry for the CF, the FFA and every mask of a sample.

One albumentations ``Compose`` call with ``additional_targets`` moves all images of a sample together
(conventions: Data). Randomness is seeded per sample from torch's RNG, so a run is reproducible under
``seed_everything(workers=True)``, including after a resume (albumentations would otherwise seed itself
from OS entropy). Outputs are float tensors C x H x W in [-1, 1] (CF 3 channels, FFA 1 channel) and
masks 1 x H x W in {0, 1}.
"""

import albumentations as A
import cv2
import numpy as np
import torch

from fundus2ffa.data.records import PairSample
from fundus2ffa.priors.fov import disc_mask

CROP_MODES = ("random", "center", "quadrants", "none")


def to_tensor_pm1(image: np.ndarray) -> torch.Tensor:
    """uint8 H x W (x C) -> float C x H x W in [-1, 1], i.e. (x/255 - 0.5)/0.5 (reference_spec 1.1)."""
    if image.ndim == 2:
        image = image[:, :, None]
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
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


class PairedTransform:
    """Resize, crop and flip a :class:`PairSample` with one set of random parameters.

    Args:
        load_size: resize to this size first (an int for a square, or [height, width]; pix2pix
            ``resize_and_crop``); None keeps the size.
        crop_size: the crop, an int side or [height, width] (Li et al.: 360x288 patches of Isfahan
            images); None means no crop.
        crop: random | center | quadrants (four fixed corner crops, i.e. four views of each image) | none.
        hflip, vflip: probabilities of horizontal / vertical flips (pix2pix flips; Fundus2Angio does not).
        disc_roi: multiply every image and mask by the disc inscribed in the crop, 1 inside (Li et al.
            section 2.1: the model sees square and circular display forms). A probability in [0, 1];
            True means always.
    """

    def __init__(
        self,
        load_size=None,
        crop_size=None,
        crop: str = "random",
        hflip: float = 0.0,
        vflip: float = 0.0,
        disc_roi: float = 0.0,
    ):
        if crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {'|'.join(CROP_MODES)}, got {crop!r}")
        self.load_size, self.crop_size, self.crop = _pair(load_size), _pair(crop_size), crop
        self.hflip, self.vflip, self.disc_roi = float(hflip), float(vflip), float(disc_roi)
        self._composes: dict[tuple, A.Compose] = {}

    @property
    def num_views(self) -> int:
        """Samples made from each record per pass: 4 for quadrant crops, else 1."""
        return 4 if self.crop == "quadrants" and self.crop_size else 1

    @property
    def is_random(self) -> bool:
        """Whether the transform draws random numbers (evaluation transforms do not)."""
        return bool(self.hflip or self.vflip or (self.crop_size and self.crop == "random") or 0 < self.disc_roi < 1)

    def _compose(self, mask_names: tuple[str, ...]) -> A.Compose:
        if mask_names not in self._composes:
            ops = []
            if self.load_size:
                ops.append(A.Resize(*self.load_size, interpolation=cv2.INTER_CUBIC))
            if self.crop_size and self.crop == "random":
                ops.append(A.RandomCrop(*self.crop_size, pad_if_needed=True))
            elif self.crop_size and self.crop == "center":
                ops.append(A.CenterCrop(*self.crop_size, pad_if_needed=True))
            if self.hflip:
                ops.append(A.HorizontalFlip(p=self.hflip))
            if self.vflip:
                ops.append(A.VerticalFlip(p=self.vflip))
            targets = {"ffa": "image", **{f"mask_{name}": "mask" for name in mask_names}}
            self._composes[mask_names] = A.Compose(ops, additional_targets=targets)
        return self._composes[mask_names]

    def _quadrant(self, images: dict[str, np.ndarray], view: int) -> dict[str, np.ndarray]:
        height, width = next(iter(images.values())).shape[:2]
        ch, cw = self.crop_size
        if height < ch or width < cw:
            raise ValueError(f"quadrant crops of {ch}x{cw} need images at least that large, got {height}x{width}")
        top, left = quadrant_origin(height, width, self.crop_size, view)
        return {k: v[top : top + ch, left : left + cw] for k, v in images.items()}

    def __call__(self, sample: PairSample, seed: int, view: int = 0) -> dict:
        names = tuple(sorted(sample.masks))
        images = {"image": sample.cf, "ffa": sample.ffa, **{f"mask_{n}": sample.masks[n] for n in names}}
        if self.crop == "quadrants" and self.crop_size:
            if self.load_size:
                raise ValueError("crop=quadrants does not combine with load_size; crop the native image")
            images = self._quadrant(images, view)
        compose = self._compose(names)
        compose.set_random_seed(int(seed))
        out = compose(**images)
        if self.disc_roi and (self.disc_roi >= 1 or np.random.default_rng(seed + 1).random() < self.disc_roi):
            disc = disc_mask(*out["image"].shape[:2])
            out = {k: v * (disc[..., None] if v.ndim == 3 else disc) for k, v in out.items()}
        result = {"cf": to_tensor_pm1(out["image"]), "ffa": to_tensor_pm1(out["ffa"])}
        for name in names:
            result[name] = torch.from_numpy(np.ascontiguousarray(out[f"mask_{name}"] > 0)).float()[None]
        return result
