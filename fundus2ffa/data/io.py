"""Image reading with errors that name the file and the fix.

Images keep H x W (PIL/OpenCV order, no transposition). CF is read as RGB and must be colour; FFA is
read as one grey channel (an RGB-stored grey angiogram is accepted, its channels being equal).
"""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fundus2ffa.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _open(path: Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}. Check the data path (data.reader.root) and that the file exists.")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"cannot read image {path} ({exc.__class__.__name__}: {exc}). The file is corrupt or not an image; "
            "re-export it or remove it from the dataset."
        ) from exc
    return image


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only, with the same errors as :func:`read_image`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}. Check the data path (data.reader.root) and that the file exists.")
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"cannot read image {path} ({exc.__class__.__name__}: {exc}). The file is corrupt or not an image; "
            "re-export it or remove it from the dataset."
        ) from exc


def is_grey(rgb: np.ndarray, tolerance: int = 2) -> bool:
    """True when the three channels of an H x W x 3 uint8 image are (nearly) equal everywhere."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    return int(np.abs(r - g).max()) <= tolerance and int(np.abs(g - b).max()) <= tolerance


def read_cf(path: Path, allow_grey: bool = False) -> np.ndarray:
    """A colour fundus photograph as H x W x 3 uint8 RGB.

    A grey (single-channel, or three equal channels) image is refused unless ``allow_grey``: it is
    almost always an angiogram given as the CF (swapped pair) or a wrong export.
    """
    image = _open(path)
    grey_mode = image.mode in ("L", "LA", "I", "I;16", "F", "1")
    rgb = np.asarray(image.convert("RGB"))
    if not allow_grey and (grey_mode or is_grey(rgb)):
        raise DataError(
            f"colour fundus image {path} is greyscale, but the CF input must be an RGB colour photograph. "
            "Check that CF and FFA are not swapped for this pair, or add ++data.reader.allow_grey_cf=true to the command line to accept grey input."
        )
    return rgb


def read_grey(path: Path, channel: str = "luma") -> np.ndarray:
    """An angiogram as H x W uint8. ``channel``: luma (ITU-R 601 grey) | green (Fundus2Video, section 4.2)."""
    image = _open(path)
    if channel == "green" and image.mode not in ("L", "I", "I;16", "F", "1"):
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., 1])
    if image.mode in ("I", "I;16", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        return np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(image.convert("L"))


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` sorted by name, or a clear error for a missing/empty folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder}. Set data.reader.root to the folder that holds your images.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}. Put the images there or point data.reader.root elsewhere."
        )
    return files


def write_png(path: Path, array: np.ndarray) -> None:
    """Write an H x W or H x W x 3 uint8 array as PNG, atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    Image.fromarray(array).save(tmp, format="PNG")
    tmp.replace(path)
