"""Base class of readers: list the pairs of a layout, check them before training, load one pair."""

import cv2
import numpy as np

from fundus2ffa.data.io import check_bit_depth, image_size, read_cf, read_grey
from fundus2ffa.data.records import PairRecord, PairSample
from fundus2ffa.errors import DataError


class PairReader:
    """Reads CF/FFA pairs from files.

    Subclasses implement :meth:`records`. :meth:`check` runs before training starts (headers only:
    existence, readability, matching sizes), so bad input fails before any output is written.

    Args:
        allow_grey_cf: accept a grey CF (normally a swapped pair or a wrong export).
        ffa_channel: luma | green (Fundus2Video keeps the FA green channel).
        resize_ffa_to_cf: resample an FFA whose size differs from its CF instead of refusing the pair.
        bit_depth: significant bits of 16-bit FFA files, auto | 8 | 10 | 12 | 14 | 16 (``io.read_grey``).
    """

    def __init__(
        self, allow_grey_cf: bool = False, ffa_channel: str = "luma", resize_ffa_to_cf: bool = False,
        bit_depth: str | int = "auto",
    ):
        self.allow_grey_cf = allow_grey_cf
        self.bit_depth = check_bit_depth(bit_depth)
        self.ffa_channel = ffa_channel
        self.resize_ffa_to_cf = resize_ffa_to_cf

    def records(self) -> list[PairRecord]:  # pragma: no cover - interface
        raise NotImplementedError

    def check(self, records: list[PairRecord], decode: bool = True) -> None:
        """Check every pair before training: both files readable, of one size (unless resized or
        aligned), and with ``decode`` fully decoded, so a truncated image or a grey CF fails now and
        not hours into training."""
        if not records:
            raise DataError(f"{type(self).__name__} found no image pairs; check data.reader.root and the folder layout.")
        for record in records:
            if record.cf is None:
                continue
            cf_size, ffa_size = image_size(record.cf), image_size(record.ffa)
            if cf_size != ffa_size and not self.resize_ffa_to_cf and record.affine is None:
                raise DataError(
                    f"pair {record.id!r}: CF {record.cf} is {cf_size[0]}x{cf_size[1]} but FFA {record.ffa} is "
                    f"{ffa_size[0]}x{ffa_size[1]} (width x height). Register/resize the pair, or set "
                    "data.reader.resize_ffa_to_cf=true to resample the FFA onto the CF grid."
                )
            if decode:
                self.load(record)

    def load(self, record: PairRecord) -> PairSample:
        """Decode a pair; an ``affine`` (2x3, CF -> FFA) warps the CF onto the FFA grid."""
        cf = read_cf(record.cf, allow_grey=self.allow_grey_cf)
        ffa = read_grey(record.ffa, channel=self.ffa_channel, bit_depth=self.bit_depth)
        height, width = ffa.shape
        if record.affine is not None:
            matrix = np.asarray(record.affine, dtype=np.float64).reshape(2, 3)
            cf = cv2.warpAffine(cf, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        elif cf.shape[:2] != ffa.shape:
            if not self.resize_ffa_to_cf:
                raise DataError(
                    f"pair {record.id!r}: CF {record.cf} and FFA {record.ffa} differ in size "
                    f"({cf.shape[1]}x{cf.shape[0]} vs {width}x{height}); set data.reader.resize_ffa_to_cf=true "
                    "or register the pair."
                )
            ffa = cv2.resize(ffa, (cf.shape[1], cf.shape[0]), interpolation=cv2.INTER_CUBIC)
        return PairSample(id=record.id, cf=cf, ffa=ffa, category=record.category)
