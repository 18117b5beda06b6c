"""Image reading with errors that name the file and the fix.

Images keep H x W (PIL/OpenCV order, no transposition). CF is read as RGB and must be colour; FFA is
read as one grey channel (an RGB-stored grey angiogram is accepted, its channels being equal).

Every read applies the EXIF orientation tag (``PIL.ImageOps.exif_transpose``): cameras and phones store
a rotated photograph as unrotated pixels plus a tag, and a CF read without it is 90 degrees off its FFA.
:func:`image_size` reports the size after orientation, so header checks agree with decoded images.

16-bit grey images (angiograms from 10/12/14-bit sensors are commonly stored in 16-bit PNG or TIFF) are
scaled to 8 bits by their real bit depth (:func:`bit_depth_of`), not by 65535: a 12-bit angiogram divided
by 65535 would be near-black. ``data.reader.bit_depth`` (auto | 8 | 10 | 12 | 14 | 16) sets it.

Size limit (``data.reader.max_pixels``, default :data:`MAX_PIXELS`): an image with more pixels is refused
from its header, before it is decoded, with a DataError naming the file, its pixel count and the limit
(a 20000 x 20000 PNG would take 1.2 GB decoded; a small file claiming such a size is a decompression
bomb). The default is Pillow's own refusal threshold, so what Pillow read before still reads; Pillow's
check is replaced by this one, which names the file and the setting (Pillow's error named neither).

Listing (:func:`list_images`, :func:`image_files`) skips macOS AppleDouble files (``._name.png``: resource
forks a Mac writes beside every file on a non-Mac disk; they carry an image suffix but are not images),
with one log line saying how many.

``where`` (the reading functions): the setting or argument that names the data, said in the fix of a
missing-file or empty-folder error (``data.reader.root`` for training; e.g. ``CF_DIR`` for register,
``predict.input_dir`` for predict).
"""

import logging
import struct
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fundus2ffa.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
BIT_DEPTHS = (8, 10, 12, 14, 16)
EXIF_ORIENTATION = 0x0112
SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations that transpose (90 / 270 degree rotations)
DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "F")
# Pillow refuses images above 2 x Image.MAX_IMAGE_PIXELS (178,956,970 px, about 13,377 px square) unnamed;
# the same number is the default here, named and settable (data.reader.max_pixels; None: no limit).
MAX_PIXELS = 2 * 89_478_485
ROOT_KEY = "data.reader.root"
APPLEDOUBLE_PREFIX = "._"
ALPHA_WARN_FRACTION = 0.01  # a CF with more of its pixels (semi-)transparent than this gets a warning
_PIL_LIMIT = threading.Lock()
_warned_alpha: set[Path] = set()


def check_max_pixels(max_pixels, key: str = "data.reader.max_pixels") -> int | None:
    """``max_pixels`` checked: a positive whole number of pixels, or None (no limit)."""
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ConfigError(
            f"{key} must be a positive whole number of pixels (width x height) or null for no limit, got {max_pixels!r}; "
            f"e.g. {key}={MAX_PIXELS}"
        )
    return max_pixels


def _too_large(path: Path, size: tuple[int, int], max_pixels: int | None, key: str) -> None:
    width, height = size
    pixels = int(width) * int(height)
    if max_pixels is not None and pixels > max_pixels:
        raise DataError(
            f"image {path} has {pixels} pixels ({width} x {height}), more than the limit of {max_pixels} pixels "
            f"({key}): decoded it would take about {pixels * 3 / 2**30:.1f} GiB, and a file this large is usually a wrong "
            f"export or a decompression bomb. Downscale the image, or if it is genuine raise the limit: {key}=<pixels> "
            "(null: no limit)."
        )


def missing_reason(path: Path, where: str = ROOT_KEY) -> str | None:
    """Why ``path`` is not a readable file, in words (None when it is one): a broken symbolic link is
    reported as such, with its target, since "not found" would send the user looking in the wrong place.
    ``where``: the setting that names the data, said in the fix."""
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
        return f"image path {path} is a folder, not an image file. Check the data path ({where})."
    return f"image file not found: {path}. Check the data path ({where}) and that the file exists."


def _check_exists(path: Path, where: str = ROOT_KEY) -> None:
    reason = missing_reason(path, where)
    if reason:
        raise DataError(reason)


def _corrupt(path: Path, exc: Exception) -> DataError:
    return DataError(
        f"cannot read image {path} ({exc.__class__.__name__}: {exc}). The file is corrupt or not an image; "
        "re-export it or remove it from the dataset."
    )


def _header(path: Path, max_pixels: int | None, key: str) -> Image.Image:
    """``path`` opened (header read, pixels not decoded), refused above ``max_pixels`` (module notes)."""
    try:
        with warnings.catch_warnings():  # Pillow's DecompressionBombWarning: the check below replaces it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError:
        # above Pillow's own threshold: open again without it (under a lock, the setting being global) to
        # learn the size, then apply this limit (which may be higher)
        with _PIL_LIMIT:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                image = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    try:
        _too_large(path, image.size, max_pixels, key)
    except DataError:
        image.close()
        raise
    return image


def _open(path: Path, max_pixels: int | None = MAX_PIXELS, where: str = ROOT_KEY, key: str = "data.reader.max_pixels") -> Image.Image:
    """Decode ``path`` with its EXIF orientation applied (at most ``max_pixels`` pixels)."""
    path = Path(path)
    _check_exists(path, where)
    try:
        image = _header(path, max_pixels, key)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # no copy when there is no orientation tag
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise _corrupt(path, exc) from exc
    except Image.DecompressionBombError as exc:  # a frame of a multi-frame file larger than its header said
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


def image_size(path: Path, max_pixels: int | None = MAX_PIXELS, where: str = ROOT_KEY, key: str = "data.reader.max_pixels") -> tuple[int, int]:
    """(width, height) after EXIF orientation, from the header only, with the errors of :func:`read_cf`
    (an image above ``max_pixels`` included)."""
    path = Path(path)
    _check_exists(path, where)
    try:
        with _header(path, max_pixels, key) as image:
            width, height = image.size
            if _orientation(image) in SWAPS_AXES:
                width, height = height, width
            return width, height
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise _corrupt(path, exc) from exc


def is_grey(rgb: np.ndarray, tolerance: int = 2) -> bool:
    """True when the three channels of an H x W x 3 uint8 image are (nearly) equal everywhere."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    return int(np.abs(r - g).max()) <= tolerance and int(np.abs(g - b).max()) <= tolerance


def read_cf(
    path: Path, allow_grey: bool = False, max_pixels: int | None = MAX_PIXELS, where: str = ROOT_KEY,
    key: str = "data.reader.max_pixels",
) -> np.ndarray:
    """A colour fundus photograph as H x W x 3 uint8 RGB.

    A grey (single-channel, or three equal channels) image is refused unless ``allow_grey``: it is
    almost always an angiogram given as the CF (swapped pair) or a wrong export. An image above
    ``max_pixels`` pixels is refused before decoding (DataError naming the file, its pixels and ``key``).
    An alpha channel is dropped (the colour values are used as stored); when more than 1 % of the pixels
    are transparent or half-transparent a warning says so, once per file.
    """
    image = _open(path, max_pixels, where, key)
    grey_mode = image.mode in ("L", "LA", "1", *DEEP_MODES)
    _warn_alpha(Path(path), image)
    rgb = np.asarray(image.convert("RGB"))
    if not allow_grey and (grey_mode or is_grey(rgb)):
        raise DataError(
            f"colour fundus image {path} is greyscale, but the CF input must be an RGB colour photograph. "
            "Check that CF and FFA are not swapped for this pair, or add ++data.reader.allow_grey_cf=true to the command line to accept grey input."
        )
    return rgb


def _warn_alpha(path: Path, image: Image.Image) -> None:
    """Warn (once per file) when a CF's alpha channel makes a visible share of it (semi-)transparent."""
    if path in _warned_alpha or not (image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info):
        return
    try:
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
    except (OSError, ValueError):
        return
    see_through = float((alpha < 255).mean()) if alpha.size else 0.0
    if see_through > ALPHA_WARN_FRACTION:
        _warned_alpha.add(path)
        log.warning(
            "CF %s is %.0f%% transparent or half-transparent (alpha channel); the alpha is dropped and the colour "
            "values stored beneath it are used, which may not be what the image shows. Flatten it onto black "
            "(e.g. an image editor's 'flatten') if those pixels should be background.", path, 100 * see_through,
        )


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


def read_grey(
    path: Path, channel: str = "luma", bit_depth: str | int = "auto", max_pixels: int | None = MAX_PIXELS,
    where: str = ROOT_KEY, key: str = "data.reader.max_pixels",
) -> np.ndarray:
    """An angiogram (or mask) as H x W uint8.

    ``channel``: luma (ITU-R 601 grey) | green (Fundus2Video, section 4.2). ``bit_depth`` (16-bit and
    float images only): auto (module notes) or the number of significant bits; values are scaled by
    255 / (2**bit_depth - 1), so full scale at the real depth is 255. ``max_pixels``: as :func:`read_cf`.
    """
    bit_depth = check_bit_depth(bit_depth)
    image = _open(path, max_pixels, where, key)
    if channel == "green" and image.mode not in ("L", "1", *DEEP_MODES):
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., 1])
    if image.mode in DEEP_MODES:
        arr = np.asarray(image, dtype=np.float64)
        depth = bit_depth_of(path, arr) if bit_depth == "auto" else bit_depth
        top = float(2**depth - 1)
        return np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(image.convert("L"))


def is_appledouble(path: Path) -> bool:
    """A macOS AppleDouble file (``._<name>``): metadata a Mac writes beside each file on a non-Mac disk."""
    return Path(path).name.startswith(APPLEDOUBLE_PREFIX)


def image_files(paths, folder: Path | None = None, suffixes=IMAGE_SUFFIXES) -> list[Path]:
    """The paths with an image suffix, sorted, without macOS AppleDouble files (one log line says how many
    were skipped, naming ``folder``). Existence is not checked here."""
    candidates = sorted(Path(p) for p in paths if Path(p).suffix.lower() in suffixes)
    skipped = [p for p in candidates if is_appledouble(p)]
    if skipped:
        log.info("skipped %d macOS metadata file(s) (._*, e.g. %s) in %s", len(skipped), skipped[0].name, folder or skipped[0].parent)
    return [p for p in candidates if not is_appledouble(p)]


def list_images(folder: Path, where: str = ROOT_KEY) -> list[Path]:
    """Image files directly in ``folder`` sorted by name, or a clear error for a missing/empty folder
    (or for a broken symbolic link among them, which would otherwise vanish from the list). macOS
    AppleDouble files (``._*``) are skipped (:func:`image_files`). ``where``: the setting that names the
    folder, said in the fix."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder}. Set {where} to the folder that holds your images.")
    candidates = image_files(folder.iterdir(), folder)
    broken = [p for p in candidates if p.is_symlink() and not p.exists()]
    if broken:
        raise DataError(missing_reason(broken[0], where) + (f" ({len(broken)} broken links in {folder})" if len(broken) > 1 else ""))
    files = [p for p in candidates if p.is_file()]
    if not files:
        raise DataError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}. Put the images there or point {where} elsewhere."
        )
    return files
