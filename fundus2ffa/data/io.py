"""Image reading with errors that name the file and the fix.

Images keep H x W (PIL/OpenCV order, no transposition). CF is read as RGB and must be colour; FFA is
read as one grey channel (an RGB-stored grey angiogram is accepted, its channels being equal).

Every read applies the EXIF orientation tag (``PIL.ImageOps.exif_transpose``): cameras and phones store
a rotated photograph as unrotated pixels plus a tag, and a CF read without it is 90 degrees off its FFA.
:func:`image_size` reports the size after orientation, so header checks agree with decoded images.

16-bit grey images (angiograms from 10/12/14-bit sensors are commonly stored in 16-bit PNG or TIFF) are
scaled to 8 bits by their real bit depth (:func:`bit_depth_of`), not by 65535: a 12-bit angiogram divided
by 65535 would be near-black. ``data.reader.bit_depth`` (auto | 8 | 10 | 12 | 14 | 16) sets it.
"""

import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fundus2ffa.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
BIT_DEPTHS = (8, 10, 12, 14, 16)
EXIF_ORIENTATION = 0x0112
SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations that transpose (90 / 270 degree rotations)
DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "F")


def missing_reason(path: Path) -> str | None:
    """Why ``path`` is not a readable file, in words (None when it is one): a broken symbolic link is
    reported as such, with its target, since "not found" would send the user looking in the wrong place."""
    path = Path(path)
    if path.is_file():
        return None
    if path.is_symlink():
        try:
            target = path.readlink()
        except OSError:
            target = "?"
        return (
            f"image {path} is a broken symbolic link (its target {target} does not exist). "
            "Restore the target or re-create the link."
        )
    if path.is_dir():
        return f"image path {path} is a folder, not an image file. Check the data path (data.reader.root)."
    return f"image file not found: {path}. Check the data path (data.reader.root) and that the file exists."


def _check_exists(path: Path) -> None:
    reason = missing_reason(path)
    if reason:
        raise DataError(reason)


def _corrupt(path: Path, exc: Exception) -> DataError:
    return DataError(
        f"cannot read image {path} ({exc.__class__.__name__}: {exc}). The file is corrupt or not an image; "
        "re-export it or remove it from the dataset."
    )


def _open(path: Path) -> Image.Image:
    """Decode ``path`` with its EXIF orientation applied."""
    path = Path(path)
    _check_exists(path)
    try:
        image = Image.open(path)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # no copy when there is no orientation tag
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _corrupt(path, exc) from exc
    return image


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened (not decoded) image, read from its header (1 when absent).

    PNG keeps EXIF in an ``eXIf`` chunk; only one before the image data is read here, as Pillow writes
    it (one after IDAT would need a full decode, which header checks avoid)."""
    if image.format == "PNG":
        raw = image.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
    else:
        exif = image.getexif()
    try:
        return int(exif.get(EXIF_ORIENTATION, 1))
    except (TypeError, ValueError):
        return 1


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) after EXIF orientation, from the header only, with the errors of :func:`read_cf`."""
    path = Path(path)
    _check_exists(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            if _orientation(image) in SWAPS_AXES:
                width, height = height, width
            return width, height
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _corrupt(path, exc) from exc


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
    grey_mode = image.mode in ("L", "LA", "1", *DEEP_MODES)
    rgb = np.asarray(image.convert("RGB"))
    if not allow_grey and (grey_mode or is_grey(rgb)):
        raise DataError(
            f"colour fundus image {path} is greyscale, but the CF input must be an RGB colour photograph. "
            "Check that CF and FFA are not swapped for this pair, or add ++data.reader.allow_grey_cf=true to the command line to accept grey input."
        )
    return rgb


def check_bit_depth(bit_depth) -> str | int:
    """``data.reader.bit_depth`` checked: 'auto' or one of :data:`BIT_DEPTHS`."""
    if bit_depth is None or str(bit_depth).lower() == "auto":
        return "auto"
    try:
        depth = int(bit_depth)
    except (TypeError, ValueError):
        depth = None
    if depth not in BIT_DEPTHS:
        raise ConfigError(
            f"data.reader.bit_depth must be auto or one of {', '.join(map(str, BIT_DEPTHS))}, got {bit_depth!r}; "
            "use the sensor's bit depth (e.g. data.reader.bit_depth=12) or auto."
        )
    return depth


def png_significant_bits(path: Path) -> int | None:
    """The grey significant bits of a PNG's ``sBIT`` chunk (PNG spec 11.3.3.4), None without one.

    Pillow does not expose sBIT, so the chunks before the image data are walked here (header only)."""
    try:
        with open(path, "rb") as handle:
            if handle.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            while True:
                head = handle.read(8)
                if len(head) < 8:
                    return None
                length, kind = struct.unpack(">I4s", head)
                if kind == b"sBIT":
                    data = handle.read(length)
                    return int(data[0]) if data else None
                if kind in (b"IDAT", b"IEND"):
                    return None
                handle.seek(length + 4, 1)  # chunk data and CRC
    except OSError:
        return None


def bit_depth_of(path: Path, values: np.ndarray) -> int:
    """The real bit depth of a 16-bit (or wider) grey image: the PNG sBIT chunk where present, else the
    smallest of 8/10/12/14/16 bits that holds the largest value. Inference from the maximum cannot tell a
    dark 16-bit image from a bright 12-bit one; set ``data.reader.bit_depth`` when it matters."""
    significant = png_significant_bits(path) if Path(path).suffix.lower() == ".png" else None
    if significant and 1 <= significant <= 16:
        return significant
    top = float(np.max(values)) if values.size else 0.0
    for depth in BIT_DEPTHS:
        if top < 2**depth:
            return depth
    return 16


def read_grey(path: Path, channel: str = "luma", bit_depth: str | int = "auto") -> np.ndarray:
    """An angiogram (or mask) as H x W uint8.

    ``channel``: luma (ITU-R 601 grey) | green (Fundus2Video, section 4.2). ``bit_depth`` (16-bit and
    float images only): auto (module notes) or the number of significant bits; values are scaled by
    255 / (2**bit_depth - 1), so full scale at the real depth is 255.
    """
    bit_depth = check_bit_depth(bit_depth)
    image = _open(path)
    if channel == "green" and image.mode not in ("L", "1", *DEEP_MODES):
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., 1])
    if image.mode in DEEP_MODES:
        arr = np.asarray(image, dtype=np.float64)
        depth = bit_depth_of(path, arr) if bit_depth == "auto" else bit_depth
        top = float(2**depth - 1)
        return np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(image.convert("L"))


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` sorted by name, or a clear error for a missing/empty folder
    (or for a broken symbolic link among them, which would otherwise vanish from the list)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder}. Set data.reader.root to the folder that holds your images.")
    candidates = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    broken = [p for p in candidates if p.is_symlink() and not p.exists()]
    if broken:
        raise DataError(missing_reason(broken[0]) + (f" ({len(broken)} broken links in {folder})" if len(broken) > 1 else ""))
    files = [p for p in candidates if p.is_file()]
    if not files:
        raise DataError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}. Put the images there or point data.reader.root elsewhere."
        )
    return files
