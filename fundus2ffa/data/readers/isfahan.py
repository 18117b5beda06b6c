"""Reader of the Isfahan MISP fundus/angiography set (Hajeb Mohammad Alipour et al. 2012).

59 usable CF/FA pairs, 720x576, in two folders whose name case varies between the distributed zips
(../shared/data/README.md, reference_spec section 3.1):

    ABNORMAL/N.jpg    colour fundus      ABNORMAL/N-N.jpg  angiogram
    NORMAL/N.jpg      angiogram          NORMAL/N-N.jpg    colour fundus     (naming reversed)

Known quirks, handled by default: in NORMAL the angiograms of pairs 10 and 11 are swapped (the file
named as 10's partner holds 11's angiogram and vice versa), and NORMAL pair 30 is not a valid pair.
Where that comes from: the data as released, noted beside its public alignment file
(../shared/data/README.md); no paper and no reference code mentions or fixes it. Fundus2Angio's code
reads the release as it is, so its reader (isfahan_fundus2angio.py) defaults ``fix_normal_10_11`` to false.

An optional public alignment file holds one line per pair,
``abnormal/1.jpg,abnormal/1-1.jpg,a11,a12,a13,a21,a22,a23,``: a 2x3 matrix mapping the first named
image onto the second. Lines are matched to pairs by their two file names, so the order of the names
decides the direction; the reader turns every matrix into CF -> FFA (inverting it when the line names
the angiogram first, as NORMAL lines do) for :attr:`PairRecord.affine`.
"""

import re
from pathlib import Path

import cv2
import numpy as np

from fundus2ffa.data.io import list_images
from fundus2ffa.data.readers.base import PairReader
from fundus2ffa.data.records import PairRecord
from fundus2ffa.errors import ConfigError, DataError

CATEGORIES = ("abnormal", "normal")
# The 17 aligned or near-aligned pairs Fundus2Angio trains on (reference_spec section 3.1).
FUNDUS2ANGIO_IDS = tuple(
    [f"abnormal/{n}" for n in (4, 5, 6, 8, 18, 21, 28)] + [f"normal/{n}" for n in (1, 4, 7, 8, 11, 15, 16, 21, 24, 28)]
)
_PAIR_ID = re.compile(r"^\s*(abnormal|normal)\s*/\s*0*(\d+)\s*$", re.IGNORECASE)
_SINGLE_NAME = re.compile(r"^0*(\d+)$")  # N
_DOUBLE_NAME = re.compile(r"^0*(\d+)-0*(\d+)$")  # N-N


def parse_pair_id(text: object, key: str) -> tuple[str, int]:
    """'abnormal/4' (any case) -> ('abnormal', 4); anything else is a ConfigError naming ``key``."""
    match = _PAIR_ID.match(str(text))
    if match is None:
        raise ConfigError(
            f"{key}: {text!r} is not an Isfahan pair id; write it as abnormal/<N> or normal/<N>, e.g. normal/4."
        )
    return match.group(1).lower(), int(match.group(2))


class IsfahanMISP(PairReader):
    """CF/FFA pairs of the Isfahan MISP layout, with its naming reversal and quirks fixed.

    Records have ids like ``abnormal/4``, category ``abnormal``/``normal`` and group = id (one pair per
    eye). Loading checks that the image taken as CF is colour (``io.read_cf``), so a pair whose files
    are swapped fails with the grey-CF error instead of training on an angiogram as input.

    Args:
        root: folder holding ``ABNORMAL/`` and ``NORMAL/`` (any letter case).
        ids: pairs to use (``abnormal/4``, any case), e.g. :data:`FUNDUS2ANGIO_IDS`; None uses every pair found.
        exclude: pairs to leave out; by default NORMAL 30, which is not a valid pair.
        fix_normal_10_11: re-pair NORMAL 10 and 11 with their true angiograms.
        alignment: alignment metadata file (relative paths are under ``root``); None for no alignment.
            Every selected pair must have a line in it.
        allow_grey_cf, ffa_channel, resize_ffa_to_cf, bit_depth: see :class:`PairReader`.
    """

    def __init__(
        self,
        root: str | Path,
        ids: list[str] | str | None = None,
        exclude: list[str] | str | tuple[str, ...] = ("normal/30",),
        fix_normal_10_11: bool = True,
        alignment: str | Path | None = None,
        **options,
    ):
        super().__init__(**options)  # allow_grey_cf, ffa_channel, resize_ffa_to_cf, bit_depth, cache
        self.root = Path(root)
        ids, exclude = ([items] if isinstance(items, str) else items for items in (ids, exclude or ()))
        self.ids = None if ids is None else {parse_pair_id(i, "data.reader.ids") for i in ids}
        self.exclude = {parse_pair_id(i, "data.reader.exclude") for i in exclude}
        conflicting = sorted(f"{c}/{n}" for c, n in set(self.ids or ()) & self.exclude)
        if conflicting:
            raise ConfigError(
                f"data.reader.ids selects {conflicting}, which data.reader.exclude leaves out; "
                "remove them from one of the two lists."
            )
        self.fix_normal_10_11 = fix_normal_10_11
        self.alignment = None
        if alignment is not None:
            alignment = Path(alignment)
            self.alignment = alignment if alignment.is_absolute() else self.root / alignment

    def records(self) -> list[PairRecord]:
        needed = CATEGORIES if self.ids is None else {category for category, _ in self.ids}
        files = {c: self._pair_files(c, folder) for c, folder in self._folders().items() if c in needed}
        wanted = self.ids if self.ids is not None else [(c, n) for c in files for n in files[c]]
        selected = sorted(set(wanted) - self.exclude, key=lambda pair: (CATEGORIES.index(pair[0]), pair[1]))
        matrices = _read_alignment(self.alignment) if self.alignment is not None else None
        records, unaligned = [], []
        for category, number in selected:
            pair_id = f"{category}/{number}"
            if number not in files.get(category, {}):
                raise DataError(
                    f"data.reader.ids names {pair_id}, but {self.root} has no such pair (no {category.upper()}/"
                    f"{number}.jpg or {number}-{number}.jpg). Fix the id or the data path."
                )
            cf, ffa = files[category][number]
            affine = None
            if matrices is not None:
                affine = _cf_to_ffa(matrices, _name(category, cf), _name(category, ffa))
                if affine is None:
                    unaligned.append(pair_id)
            records.append(PairRecord(id=pair_id, cf=cf, ffa=ffa, category=category, group=pair_id, affine=affine))
        if unaligned:
            raise DataError(
                f"alignment file {self.alignment} has no line for pair(s) {unaligned} (a line names the pair's two "
                "files, e.g. abnormal/1.jpg,abnormal/1-1.jpg,...). Add the lines, exclude those pairs "
                "(data.reader.exclude), or set data.reader.alignment=null."
            )
        return records

    def _folders(self) -> dict[str, Path]:
        """Category -> folder, accepting any letter case (ABNORMAL, Abnormal, abnormal)."""
        if not self.root.is_dir():
            raise DataError(
                f"Isfahan data folder not found: {self.root}. Set data.reader.root to the folder that holds "
                "ABNORMAL/ and NORMAL/ (download the set from its authors' site)."
            )
        folders: dict[str, Path] = {}
        for child in sorted(self.root.iterdir()):
            category = child.name.lower()
            if child.is_dir() and category in CATEGORIES:
                if category in folders:
                    raise DataError(
                        f"{folders[category]} and {child} differ only in letter case; keep one of them."
                    )
                folders[category] = child
        if not folders:
            raise DataError(
                f"no ABNORMAL/ or NORMAL/ folder in {self.root}; point data.reader.root at the unpacked "
                "Isfahan MISP set (the folder that contains them)."
            )
        return folders

    def _pair_files(self, category: str, folder: Path) -> dict[int, tuple[Path, Path]]:
        """Pair number -> (CF path, FFA path) of the selected pairs of one folder.

        Applies the naming reversal and, in NORMAL, the 10/11 angiogram swap. Files not named N.<ext>
        or N-N.<ext> are not part of the set and are skipped.
        """
        single, double = {}, {}
        for path in list_images(folder):
            if match := _SINGLE_NAME.match(path.stem):
                single[int(match.group(1))] = path
            elif (match := _DOUBLE_NAME.match(path.stem)) and match.group(1) == match.group(2):
                double[int(match.group(1))] = path
        cf_files, ffa_files = (single, double) if category == "abnormal" else (double, single)
        swap = {10: 11, 11: 10} if category == "normal" and self.fix_normal_10_11 else {}
        pairs = {}
        for number in sorted(set(single) | set(double)):
            if (category, number) in self.exclude or (self.ids is not None and (category, number) not in self.ids):
                continue
            ffa_number = swap.get(number, number)
            cf, ffa = cf_files.get(number), ffa_files.get(ffa_number)
            if cf is None or ffa is None:
                present = cf or single.get(number) or double.get(number)
                kind, missing_number = ("colour fundus", number) if cf is None else ("angiogram", ffa_number)
                single_role = (category == "abnormal") == (kind == "colour fundus")
                missing = f"{missing_number}" if single_role else f"{missing_number}-{missing_number}"
                raise DataError(
                    f"Isfahan pair {category}/{number}: {present} has no partner (the {kind} "
                    f"{folder / missing}{present.suffix} is missing). Restore the file from the dataset zip or "
                    f"leave the pair out with data.reader.exclude=[{category}/{number}]."
                )
            pairs[number] = (cf, ffa)
        return pairs


def _name(category: str, path: Path) -> str:
    """How the alignment file names an image: lower-case ``category/file``."""
    return f"{category}/{path.name.lower()}"


def _read_alignment(path: Path) -> dict[tuple[str, str], np.ndarray]:
    """(first name, second name) -> 2x3 float matrix mapping the first image onto the second."""
    if not path.is_file():
        raise DataError(
            f"alignment file not found: {path}. Set data.reader.alignment to the Isfahan alignment metadata "
            "(relative paths are under data.reader.root), or to null to use the pairs unaligned."
        )
    matrices = {}
    for line_number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        fields = [f.strip() for f in line.split(",")]
        while fields and not fields[-1]:
            fields.pop()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            if len(fields) != 8:
                raise ValueError(f"{len(fields)} fields")
            values = np.array([float(v) for v in fields[2:]], dtype=np.float64).reshape(2, 3)
        except ValueError as exc:
            raise DataError(
                f"alignment file {path} line {line_number} ({exc}) is not 'first.jpg,second.jpg,a11,a12,a13,a21,"
                "a22,a23': two image names and six numbers. Fix or delete the line."
            ) from exc
        first, second = (f.replace("\\", "/").removeprefix("./").lower() for f in fields[:2])
        matrices[(first, second)] = values
    return matrices


def _cf_to_ffa(matrices: dict[tuple[str, str], np.ndarray], cf: str, ffa: str) -> tuple | None:
    """The CF -> FFA matrix of a pair as nested tuples, inverting an FFA -> CF line; None without a line."""
    if (cf, ffa) in matrices:
        matrix = matrices[(cf, ffa)]
    elif (ffa, cf) in matrices:
        inverse = matrices[(ffa, cf)]
        if abs(np.linalg.det(inverse[:, :2])) < 1e-12:
            raise DataError(f"alignment matrix of {ffa} -> {cf} is singular and cannot be inverted; fix its line.")
        matrix = cv2.invertAffineTransform(inverse)
    else:
        return None
    return tuple(tuple(float(v) + 0.0 for v in row) for row in matrix)  # + 0.0: no negative zeros

