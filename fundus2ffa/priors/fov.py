"""Field-of-view mask of a fundus image (reference_spec section 1.3).

Fundus2Video's recipe: threshold the CF green channel (> 11 on uint8), AND with (green > 2) of every
given FA frame, keep the largest 8-connected component, dilate once with an 11x11 cross, fill holes
(:func:`fov_mask`, steps 1-5); then zero every image outside the mask, crop to its bounding box and
resize to w x w (:func:`fov_crop`, step 6).
The field of view is computed, never assumed circular: ultra-widefield images and burned-in
annotation boxes break that assumption (../shared/data/README.md).
"""

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

PIL_BICUBIC = "pil_bicubic"
"""``interpolation`` value of :func:`resize_image` for PIL's bicubic resampling."""


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


def fov_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the mask's bounding box, ends exclusive; ValueError for an empty mask."""
    x, y, w, h = cv2.boundingRect((np.asarray(mask) > 0).astype(np.uint8))
    if w == 0 or h == 0:
        raise ValueError("the field-of-view mask is empty: nothing to crop to")
    return y, y + h, x, x + w


def fov_crop(
    image: np.ndarray,
    mask: np.ndarray | None,
    size: int | tuple[int, int] | None = 512,
    bbox: tuple[int, int, int, int] | None = None,
    interpolation: int | str = cv2.INTER_LINEAR,
) -> np.ndarray:
    """Section 1.3 step 6: zero ``image`` outside ``mask``, crop to the mask's bounding box, resize to
    ``size`` x ``size`` (cv2 bilinear by default, as Fundus2Video; ``cv2.INTER_NEAREST`` for masks;
    :data:`PIL_BICUBIC` for pix2pix's resampling, see :func:`resize_image`).

    ``image``: H x W or H x W x C (any C up to OpenCV's 512, e.g. a T x H x W video moved to H x W x T),
    same H x W as ``mask``. ``size`` None keeps the cropped size; (h, w) resizes to that (the
    aspect-preserving policies of :class:`~fundus2ffa.data.preprocess.Preprocess`). In the code the box is
    stretched to a square (the aspect ratio of a non-circular field of view, e.g. ultra-widefield, is not
    kept). ``bbox`` (from :func:`fov_bbox`, or any box) saves recomputing it for every image of a sample.
    ``mask`` None crops and resizes without zeroing.
    """
    if mask is not None and image.shape[:2] != np.asarray(mask).shape[:2]:
        raise ValueError(f"fov_crop: image {image.shape[:2]} and mask {np.asarray(mask).shape[:2]} differ in size")
    top, bottom, left, right = fov_bbox(mask) if bbox is None else bbox
    cropped = image[top:bottom, left:right]
    if mask is not None:
        inside = np.asarray(mask)[top:bottom, left:right] > 0
        cropped = cropped * (inside[..., None] if cropped.ndim == 3 else inside).astype(cropped.dtype)
    height, width = (size, size) if isinstance(size, int) else (size or cropped.shape[:2])
    if cropped.shape[:2] == (height, width):
        return np.ascontiguousarray(cropped)
    return resize_image(cropped, int(height), int(width), interpolation)


def resize_image(image: np.ndarray, height: int, width: int, interpolation: int | str = cv2.INTER_LINEAR) -> np.ndarray:
    """Resize an H x W or H x W x C array (any C, dtype kept) to ``height`` x ``width``.

    ``interpolation``: an OpenCV flag, or :data:`PIL_BICUBIC`: PIL's ``Image.BICUBIC``, which is what
    pix2pix, CycleGAN and pix2pixHD load images with (torchvision ``Resize`` on PIL images). It is not
    OpenCV's ``INTER_CUBIC``: when shrinking, PIL widens the cubic kernel by the reduction factor, so it
    low-pass filters first (antialiasing), while OpenCV's cubic reads 4 x 4 source pixels whatever the
    factor. Shrinking a 3900 x 3000 ultra-widefield angiogram to 286 px with OpenCV's cubic breaks its
    thin bright vessels into aliased dots; PIL's does not. 8-bit grey and RGB images are resized as PIL
    ``L``/``RGB`` images (exactly pix2pix's numbers); other dtypes and channel counts channel by channel
    as 32-bit float (mode ``F``), rounded and clipped back to an integer dtype.
    """
    image = np.ascontiguousarray(image)
    if interpolation != PIL_BICUBIC:
        resized = cv2.resize(image, (width, height), interpolation=interpolation)
        if image.ndim == 3 and resized.ndim == 2:  # OpenCV drops a single channel
            resized = resized[..., None]
        return resized
    if image.dtype == np.uint8 and (image.ndim == 2 or image.shape[2] in (1, 3)):
        # what pix2pix resizes: 8-bit L or RGB images
        flat = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
        out = np.array(Image.fromarray(flat).resize((width, height), Image.BICUBIC))  # writable (torch.from_numpy)
        return out[..., None] if image.ndim == 3 and out.ndim == 2 else out
    planes = image[..., None] if image.ndim == 2 else image
    out = np.empty((height, width, planes.shape[2]), np.float32)
    for c in range(planes.shape[2]):
        plane = Image.fromarray(planes[..., c].astype(np.float32))  # mode F
        out[..., c] = np.asarray(plane.resize((width, height), Image.BICUBIC))
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    out = out.astype(image.dtype)
    return out[..., 0] if image.ndim == 2 else out
