"""Multiscale vessel enhancement: a Hessian ridge filter shared by registration and structure metrics.

Vessels are thin ridges: across a vessel the image curves strongly, along it hardly at all. At scale
sigma the scale-normalised Hessian ``sigma^2 * H(G_sigma * I)`` of a bright ridge has one strongly
negative eigenvalue (across) and one near zero (along); a bright blob (optic disc, leakage) has two
negative eigenvalues of similar size. The response

    R_sigma = sigma^2 * max(0, -lambda_min - |lambda_max|)

is therefore high on bright ridges and about zero on blobs, edges and flat background (a simplified
Frangi et al. 1998 vesselness without its exponentials: fewer parameters, the same ridge/blob
separation, and linear in the image contrast). The map is the maximum over ``sigmas``.

Polarity follows the modality: in a colour fundus photograph (and an SLO) the vessels are dark in the
green channel, in a fluorescein angiogram bright (when filled). :func:`vessel_representation` turns
either into bright-ridge form, so both modalities yield comparable maps: that is what makes
multimodal keypoint matching work (registration) and what lets a generated FFA be compared to a real
one on structure rather than intensity (metrics/structure.py).

Pure numpy/OpenCV functions on H x W arrays.
"""

import cv2
import numpy as np

from fundus2ffa.priors.fov import fov_mask

DEFAULT_SIGMAS = (1.0, 2.0, 4.0)
MODALITIES = ("cf", "ffa")


def vesselness(grey: np.ndarray, sigmas=DEFAULT_SIGMAS, mask: np.ndarray | None = None) -> np.ndarray:
    """Bright-ridge response (float32, >= 0) of an H x W image; max over ``sigmas`` (pixels).

    ``mask`` (H x W, nonzero inside): outside it the image is replaced by the mean inside before
    filtering and the response is zeroed, and a border of ~2 sigma inside the mask edge is dropped,
    so the edge of the field of view does not read as a vessel.
    """
    image = np.asarray(grey, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"vesselness expects an H x W image, got shape {image.shape}")
    inside = None
    if mask is not None:
        inside = np.asarray(mask) > 0
        if inside.any():
            image = np.where(inside, image, np.float32(image[inside].mean()))
    best = np.zeros(image.shape, np.float32)
    for sigma in sigmas:
        smooth = cv2.GaussianBlur(image, (0, 0), float(sigma), borderType=cv2.BORDER_REFLECT)
        dxx = cv2.Sobel(smooth, cv2.CV_32F, 2, 0, ksize=3) / 1.0
        dyy = cv2.Sobel(smooth, cv2.CV_32F, 0, 2, ksize=3) / 1.0
        dxy = cv2.Sobel(smooth, cv2.CV_32F, 1, 1, ksize=3) / 4.0
        half_trace = 0.5 * (dxx + dyy)
        root = np.sqrt((0.5 * (dxx - dyy)) ** 2 + dxy**2)
        lam_min, lam_max = half_trace - root, half_trace + root
        response = np.float32(sigma**2) * np.maximum(0.0, -lam_min - np.abs(lam_max))
        np.maximum(best, response, out=best)
    if inside is not None:
        margin = int(round(3 * max(sigmas))) * 2 + 1
        eroded = cv2.erode(inside.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (margin, margin)))
        best *= eroded
    return best


def bright_vessel_image(image: np.ndarray, modality: str) -> np.ndarray:
    """The image in which vessels are bright, float32 in [0, 255].

    cf: 255 - green channel (CF and the red/green UWF SLO have dark vessels in green);
    ffa: the grey angiogram itself (filled vessels are bright; an RGB-stored grey FFA uses its green).
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {'|'.join(MODALITIES)}, got {modality!r}")
    grey = image[..., 1] if image.ndim == 3 else image
    grey = grey.astype(np.float32)
    return 255.0 - grey if modality == "cf" else grey


def vessel_representation(
    image: np.ndarray,
    modality: str,
    sigmas=DEFAULT_SIGMAS,
    mask: np.ndarray | None = None,
    percentile: float = 99.0,
) -> np.ndarray:
    """uint8 H x W vessel map of a CF (``modality='cf'``) or FFA (``'ffa'``) image, vessels bright.

    The vesselness is divided by its ``percentile`` inside the field of view (``mask``; computed with
    :func:`fundus2ffa.priors.fov.fov_mask` when None), so the two modalities share one intensity
    scale whatever their contrast; the top percent saturate.
    """
    if mask is None:
        mask = fov_mask(image, dilate=0)
    response = vesselness(bright_vessel_image(image, modality), sigmas, mask)
    inside = response[np.asarray(mask) > 0]
    scale = float(np.percentile(inside, percentile)) if inside.size else 0.0
    if scale <= 0:
        return np.zeros(response.shape, np.uint8)
    return np.clip(response * (255.0 / scale), 0, 255).astype(np.uint8)


def vessel_segmentation(
    grey: np.ndarray, sigmas=DEFAULT_SIGMAS, area_fraction: float = 0.12, mask: np.ndarray | None = None,
    min_response: float = 1.0,
) -> np.ndarray:
    """Binary (uint8 {0,1}) bright-vessel map: the ``area_fraction`` of pixels (inside ``mask``) with the
    highest vesselness, and only where the response exceeds ``min_response`` grey levels (a flat image
    has no vessels). A fixed area fraction makes the map independent of contrast: the vessel tree of a
    fundus image covers roughly 10-15 % of the field of view.
    """
    response = vesselness(grey, sigmas, mask)
    valid = response if mask is None else response[np.asarray(mask) > 0]
    if valid.size == 0:
        return np.zeros(response.shape, np.uint8)
    threshold = max(float(np.quantile(valid, 1.0 - area_fraction)), float(min_response))
    return (response > threshold).astype(np.uint8)
