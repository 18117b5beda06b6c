"""Structure agreement between a generated and a real FFA: vessel Dice and leakage Dice.

PSNR and SSIM reward getting the mean intensity right: a constant grey image can beat a model that
draws every vessel a few pixels off (issue 11: 14.2 dB for a trained pix2pix against 24.4 dB for a
constant image). These two scores instead ask whether the structures a reader looks for are where the
real angiogram has them. Both binarise the generated and the real image with the same fixed extractor
and report the Dice overlap 2|A and B| / (|A| + |B|) inside the region given (valid x field of view);
two empty maps agree perfectly (Dice 1).

Extractors (fixed, documented, no learned parts):

* vessels: the multiscale Hessian ridge filter of priors/vessels.py (sigmas 1, 2 px of the evaluated
  image, bright ridges as in an FFA), keeping the :data:`VESSEL_AREA` (12 %) of pixels in the region with
  the highest response (and only where it exceeds 1 grey level, so a flat image has no vessels). The
  fixed area fraction makes the map independent of contrast: it compares where the vessels are, not how
  bright.
* leakage: Li et al.'s local saliency map (priors/saliency.py: Gaussian 7x7 minus median 51x51, section
  2.2), i.e. how much brighter a pixel is than its background, thresholded at :data:`LEAKAGE_LEVEL`
  (25 grey levels of 255), then a morphological opening with a disc of diameter ``side / 64`` px
  (at least 3) that removes thin bright vessels and keeps blobs: hyperfluorescent leakage, staining
  and the optic disc.
"""

import cv2
import numpy as np
import torch

from fundus2ffa.metrics.convert import to_uint8
from fundus2ffa.metrics.full_precision import full_precision
from fundus2ffa.priors.saliency import saliency_map
from fundus2ffa.priors.vessels import vessel_segmentation

VESSEL_SIGMAS = (1.0, 2.0)
VESSEL_AREA = 0.12
LEAKAGE_LEVEL = 25.0 / 255.0


def dice(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float:
    """Dice of two binary maps inside ``region`` (all pixels when None); 1.0 when both are empty."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    if region is not None:
        inside = np.asarray(region) > 0
        a, b = a[inside], b[inside]
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


def vessel_map(image: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """Binary vessel map (uint8 {0,1}) of an H x W uint8 FFA (vessels bright)."""
    return vessel_segmentation(image.astype(np.float32), VESSEL_SIGMAS, VESSEL_AREA, mask=region)


def leakage_maps(images: torch.Tensor) -> np.ndarray:
    """Binary bright-leakage maps N x H x W (uint8) of N x 1 x H x W FFA tensors in [-1, 1]."""
    saliency = saliency_map(images.float(), value_range=(-1.0, 1.0), median_gradient="detach")
    bright = (saliency[:, 0] * 0.5 > LEAKAGE_LEVEL).cpu().numpy().astype(np.uint8)  # [-1,1] map is twice the [0,1] map
    side = max(3, int(round(min(images.shape[-2:]) / 64)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    return np.stack([cv2.morphologyEx(b, cv2.MORPH_OPEN, disc) for b in bright])


@torch.no_grad()
@full_precision
def structure_agreement(fake: torch.Tensor, real: torch.Tensor, region: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-image ``vessel_dice`` and ``leakage_dice`` of N x 1 x H x W tensors in [-1, 1] inside
    ``region`` (N x 1 x H x W, nonzero = evaluated; None: the whole image)."""
    fake_u8, real_u8 = to_uint8(fake[:, :1]).cpu().numpy(), to_uint8(real[:, :1]).cpu().numpy()
    regions = None if region is None else (region[:, 0] > 0).cpu().numpy()
    fake_leak, real_leak = leakage_maps(fake[:, :1]), leakage_maps(real[:, :1])
    vessels, leakage = [], []
    for i in range(fake.shape[0]):
        inside = None if regions is None else regions[i]
        vessels.append(dice(vessel_map(fake_u8[i, 0], inside), vessel_map(real_u8[i, 0], inside), inside))
        leakage.append(dice(fake_leak[i], real_leak[i], inside))
    return {
        "vessel_dice": torch.tensor(vessels, dtype=torch.float32),
        "leakage_dice": torch.tensor(leakage, dtype=torch.float32),
    }
