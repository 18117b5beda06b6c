"""Field-of-view mask of a fundus image (reference_spec section 1.3).

Fundus2Video's recipe: threshold the CF green channel (> 11 on uint8), AND with (green > 2) of every
given FA frame, keep the largest 8-connected component, dilate once with an 11x11 cross, fill holes.
The field of view is computed, never assumed circular: ultra-widefield images and burned-in
annotation boxes break that assumption (../shared/data/README.md).
"""

import cv2
import numpy as np
from scipy import ndimage


def fov_mask(
    cf: np.ndarray,
    frames: list[np.ndarray] | tuple = (),
    cf_threshold: int = 11,
    frame_threshold: int = 2,
    dilate: int = 11,
) -> np.ndarray:
    """H x W uint8 {0,1} field-of-view mask from a uint8 CF (H x W x 3 or H x W) and optional FA frames."""
    green = cf[..., 1] if cf.ndim == 3 else cf
    mask = green > cf_threshold
    for frame in frames:
        grey = frame[..., 1] if frame.ndim == 3 else frame
        mask &= grey > frame_threshold
    if not mask.any():
        return np.zeros(mask.shape, np.uint8)
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == sizes.argmax()
    if dilate:
        kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (dilate, dilate))
        mask = cv2.dilate(mask.astype(np.uint8), kernel, iterations=1) > 0
    mask = ndimage.binary_fill_holes(mask)
    return mask.astype(np.uint8)


def disc_mask(height: int, width: int) -> np.ndarray:
    """H x W uint8 disc inscribed in the image (diameter = width), 1 inside and on the circle.

    Li et al. (2020) section 2.1 multiply patches by such a disc so the model sees circular fields.
    """
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx, radius = (height - 1) / 2.0, (width - 1) / 2.0, width / 2.0
    return (((yy - cy) ** 2 + (xx - cx) ** 2) <= radius**2).astype(np.uint8)
