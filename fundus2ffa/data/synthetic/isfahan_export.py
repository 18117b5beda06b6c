"""Write CF/FFA pairs in the Isfahan MISP on-disk layout, quirks included, to test its reader.

The real set cannot be redistributed (../shared/data/README.md), so :class:`IsfahanMISP` is tested on
synthetic eyes exported here exactly as the set is laid out: ``ABNORMAL/N.jpg`` colour fundus and
``ABNORMAL/N-N.jpg`` angiogram, the naming reversed in ``NORMAL/``, the angiograms of NORMAL 10 and 11
swapped, NORMAL 30 not a valid pair, and an alignment file with one 2x3 matrix per pair.
"""

from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from fundus2ffa.writers import write_text

ALIGNMENT_FILE = "alignment.csv"
FOLDER_CASES = ("upper", "lower", "title")


def export_isfahan(
    root: Path,
    pairs: list[tuple[np.ndarray, np.ndarray, str]],
    quirks: bool = True,
    alignment: bool = True,
    folder_case: str = "upper",
    cf_shift: tuple[int, int] = (0, 0),
) -> Path:
    """Write ``pairs`` (CF H x W x 3 uint8, FFA H x W uint8, category normal|abnormal) as JPEG; return ``root``.

    Pairs are numbered 1, 2, ... per category in the order given. With ``quirks`` (and when those
    numbers exist): NORMAL ``10.jpg`` holds the angiogram of eye 11 and ``11.jpg`` that of eye 10, and
    NORMAL pair 30's angiogram is replaced by an unrelated image (the pair's own, rotated 180 degrees).

    With ``alignment``, ``root/alignment.csv`` gets one line per pair in the public metadata format
    ``normal/1.jpg,normal/1-1.jpg,a11,a12,a13,a21,a22,a23,`` (the matrix maps the first named image onto
    the second; lines name ``N.jpg`` first, so ABNORMAL lines map CF -> FFA and NORMAL lines FFA -> CF,
    and the swapped pairs 10/11 are named by the files that really hold each eye). ``cf_shift`` =
    (dx, dy) pixels translates every written CF, and the matrices undo it, so a reader that applies them
    gets the CF back onto the FFA grid; (0, 0) gives identity matrices.

    ``folder_case``: upper (ABNORMAL), lower (abnormal) or title (Abnormal), as the zips vary.
    """
    if folder_case not in FOLDER_CASES:
        raise ValueError(f"folder_case must be one of {'|'.join(FOLDER_CASES)}, got {folder_case!r}")
    root = Path(root)
    numbered: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {"abnormal": {}, "normal": {}}
    for cf, ffa, category in pairs:
        if category not in numbered:
            raise ValueError(f"category must be 'abnormal' or 'normal', got {category!r}")
        if cf.dtype != np.uint8 or ffa.dtype != np.uint8 or cf.ndim != 3 or cf.shape[:2] != ffa.shape:
            raise ValueError(f"need CF H x W x 3 and FFA H x W uint8 of one size, got {cf.shape} and {ffa.shape}")
        numbered[category][len(numbered[category]) + 1] = (cf, ffa)

    dx, dy = cf_shift
    shift = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    unshift = np.array([[1.0, 0.0, -dx], [0.0, 1.0, -dy]])
    lines = []
    for category, eyes in numbered.items():
        if not eyes:
            continue
        folder = root / getattr(category, folder_case)()
        folder.mkdir(parents=True, exist_ok=True)
        swapped = quirks and category == "normal" and {10, 11} <= eyes.keys()
        for number, (cf, ffa) in eyes.items():
            # The number in the angiogram's file name: eye 10's angiogram is written as 11's partner.
            ffa_number = {10: 11, 11: 10}.get(number, number) if swapped else number
            if quirks and category == "normal" and number == 30:
                ffa = np.ascontiguousarray(ffa[::-1, ::-1])
            height, width = ffa.shape
            cf = cv2.warpAffine(cf, shift, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            if category == "abnormal":
                cf_name, ffa_name = f"{number}.jpg", f"{number}-{number}.jpg"
                lines.append(_alignment_line(f"{category}/{cf_name}", f"{category}/{ffa_name}", unshift))
            else:
                cf_name, ffa_name = f"{number}-{number}.jpg", f"{ffa_number}.jpg"
                lines.append(_alignment_line(f"{category}/{ffa_name}", f"{category}/{cf_name}", shift))
            Image.fromarray(cf).save(folder / cf_name, quality=95)
            Image.fromarray(ffa).save(folder / ffa_name, quality=95)
    if alignment:
        write_text(root / ALIGNMENT_FILE, "".join(lines))
    return root


def _alignment_line(first: str, second: str, matrix: np.ndarray) -> str:
    """One metadata line: the two names, the six matrix entries, and the trailing comma of the public file."""
    return ",".join([first, second, *(f"{v:.6g}" for v in matrix.ravel())]) + ",\n"
