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

CROP_MODES = ("random", "center", "none")


def to_tensor_pm1(image: np.ndarray) -> torch.Tensor:
    """uint8 H x W (x C) -> float C x H x W in [-1, 1], i.e. (x/255 - 0.5)/0.5 (reference_spec 1.1)."""
    if image.ndim == 2:
        image = image[:, :, None]
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    return tensor.div_(127.5).sub_(1.0)


class PairedTransform:
    """Resize, crop and flip a :class:`PairSample` with one set of random parameters.

    Args:
        load_size: resize both sides to this size first (pix2pix ``resize_and_crop``); None keeps the size.
        crop_size: side of the square crop; None means no crop.
        crop: random | center | none.
        hflip: probability of a horizontal flip (pix2pix flips; Fundus2Angio does not).
        vflip: probability of a vertical flip.
    """

    def __init__(
        self,
        load_size: int | None = None,
        crop_size: int | None = None,
        crop: str = "random",
        hflip: float = 0.0,
        vflip: float = 0.0,
    ):
        if crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {'|'.join(CROP_MODES)}, got {crop!r}")
        self.load_size, self.crop_size, self.crop = load_size, crop_size, crop
        self.hflip, self.vflip = float(hflip), float(vflip)
        self._composes: dict[tuple, A.Compose] = {}

    @property
    def is_random(self) -> bool:
        """Whether the transform draws random numbers (evaluation transforms do not)."""
        return bool(self.hflip or self.vflip or (self.crop_size and self.crop == "random"))

    def _compose(self, mask_names: tuple[str, ...]) -> A.Compose:
        if mask_names not in self._composes:
            ops = []
            if self.load_size:
                ops.append(A.Resize(self.load_size, self.load_size, interpolation=cv2.INTER_CUBIC))
            if self.crop_size and self.crop == "random":
                ops.append(A.RandomCrop(self.crop_size, self.crop_size, pad_if_needed=True))
            elif self.crop_size and self.crop == "center":
                ops.append(A.CenterCrop(self.crop_size, self.crop_size, pad_if_needed=True))
            if self.hflip:
                ops.append(A.HorizontalFlip(p=self.hflip))
            if self.vflip:
                ops.append(A.VerticalFlip(p=self.vflip))
            targets = {"ffa": "image", **{f"mask_{name}": "mask" for name in mask_names}}
            self._composes[mask_names] = A.Compose(ops, additional_targets=targets)
        return self._composes[mask_names]

    def __call__(self, sample: PairSample, seed: int) -> dict:
        names = tuple(sorted(sample.masks))
        compose = self._compose(names)
        compose.set_random_seed(int(seed))
        out = compose(image=sample.cf, ffa=sample.ffa, **{f"mask_{n}": sample.masks[n] for n in names})
        result = {"cf": to_tensor_pm1(out["image"]), "ffa": to_tensor_pm1(out["ffa"])}
        for name in names:
            result[name] = torch.from_numpy(np.ascontiguousarray(out[f"mask_{name}"] > 0)).float()[None]
        return result
