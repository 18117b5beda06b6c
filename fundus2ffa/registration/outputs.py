"""What a registered pair becomes on disk: the FFA warped into the CF frame, the valid-overlap mask and a
quality-control image (checkerboard and vessel overlay) a person can judge at a glance."""

import cv2
import numpy as np

from fundus2ffa.priors.fov import fov_mask
from fundus2ffa.priors.vessels import vessel_representation

QC_WIDTH = 1024


def warp_into(moving: np.ndarray, matrix: np.ndarray, shape, interpolation=cv2.INTER_LINEAR) -> np.ndarray:
    """``moving`` resampled on the fixed grid of ``shape`` (H, W) through the moving -> fixed ``matrix``."""
    height, width = shape[:2]
    return cv2.warpPerspective(
        moving, matrix, (width, height), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def valid_mask(fixed: np.ndarray, moving: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """uint8 {0,1} on the fixed grid: inside both fields of view (priors/fov.py) after warping."""
    moving_fov = fov_mask(moving)
    warped = warp_into(moving_fov, matrix, fixed.shape, cv2.INTER_NEAREST)
    return (fov_mask(fixed) & warped).astype(np.uint8)


def checkerboard(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    """Alternate square tiles of two same-size grey images (vessels must continue across tile edges)."""
    height, width = a.shape[:2]
    side = max(1, max(height, width) // tiles)
    yy, xx = np.mgrid[0:height, 0:width]
    pick = ((yy // side + xx // side) % 2).astype(bool)
    return np.where(pick, b, a)


def _stretch(grey: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Contrast stretch to the 1-99 percentiles inside ``mask`` so both modalities look alike in the QC."""
    inside = grey[mask > 0]
    if inside.size == 0:
        return grey
    low, high = np.percentile(inside, (1, 99))
    scaled = (grey.astype(np.float32) - low) * (255.0 / max(high - low, 1.0))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def qc_image(cf: np.ndarray, warped_ffa: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGB QC panel: left a checkerboard of the inverted CF green channel and the warped FFA (both
    stretched), right the CF vessel map in magenta over the FFA vessel map in green (white where they
    agree). Scaled to at most :data:`QC_WIDTH` px wide."""
    cf_grey = 255 - cf[..., 1] if cf.ndim == 3 else 255 - cf
    board = checkerboard(_stretch(cf_grey, mask), _stretch(warped_ffa, mask)) * (mask > 0)
    left = np.repeat(board[..., None], 3, axis=2).astype(np.uint8)
    cf_vessels = vessel_representation(cf, "cf", mask=mask)
    ffa_vessels = vessel_representation(warped_ffa, "ffa", mask=mask)
    right = np.stack([cf_vessels, ffa_vessels, cf_vessels], axis=2)
    panel = np.hstack([left, right])
    if panel.shape[1] > QC_WIDTH:
        factor = QC_WIDTH / panel.shape[1]
        panel = cv2.resize(panel, (QC_WIDTH, max(1, round(panel.shape[0] * factor))), interpolation=cv2.INTER_AREA)
    return panel


def qc_panels(fixed: np.ndarray, moving: np.ndarray, panels: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """QC panels (:func:`qc_image`) of ``moving`` warped by each (label, matrix), stacked top to bottom, each
    labelled in its top-left corner: for pairs that were not written (failed or refused)."""
    rows = []
    for label, matrix in panels:
        warped = warp_into(moving, matrix, fixed.shape)
        panel = np.ascontiguousarray(qc_image(fixed, warped, valid_mask(fixed, moving, matrix)))
        scale = max(0.4, panel.shape[1] / 1400)
        thickness = max(1, round(2 * scale))
        cv2.putText(panel, label, (8, round(24 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(panel, label, (8, round(24 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 0), thickness, cv2.LINE_AA)
        rows.append(panel)
    width = min(r.shape[1] for r in rows)
    rows = [r if r.shape[1] == width else cv2.resize(r, (width, round(r.shape[0] * width / r.shape[1])), interpolation=cv2.INTER_AREA) for r in rows]
    return np.vstack(rows)
