"""Readers of FFA video layouts: the Fundus2Video CSV and the two-phase UWF eyes as 2-frame videos.

Both implement :class:`~fundus2ffa.data.readers.base.Reader` (frame selection and decoding are there);
the in-memory synthetic videos are :class:`~fundus2ffa.data.readers.synthetic.SyntheticVideos`.
"""

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from fundus2ffa.data.io import MAX_PIXELS
from fundus2ffa.data.readers.base import Reader, plain
from fundus2ffa.data.readers.uwf_phases import UWFPhases
from fundus2ffa.data.records import Frame, Record
from fundus2ffa.data.splits import SPLITS
from fundus2ffa.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CSV_COLUMNS = ("pid_eye", "orgid", "Phase", "level_1", "fa_rigid", "co_rigid")
"""Columns of the Fundus2Video CSV (reference_spec 4.2); ``category`` and ``split`` are optional extras."""
DEFAULT_PHASE_MERGE = {"AV": "V"}


class FFAVideoCSV(Reader):
    """The Fundus2Video CSV layout (reference_spec 4.2): one row per FA frame.

    Columns: ``pid_eye`` (the video: one eye), ``orgid`` (the patient; splits never divide one),
    ``Phase`` (phase code), ``level_1`` (numeric temporal order key), ``fa_rigid`` (the FA frame),
    ``co_rigid`` (the CF, rigidly registered with the frames); optional ``category`` and ``split``
    (train/val/test: fixes the split instead of drawing it). Paths are relative to the CSV's folder
    (or ``root``) unless absolute. The CF of an eye is the ``co_rigid`` of its earliest kept row.

    Args:
        csv: the CSV file.
        root: folder relative paths start from (default: the CSV's folder).
        mask_patterns: optional ground-truth masks, name -> path pattern with ``{pid_eye}`` and
            ``{orgid}`` (e.g. ``{leakage: "masks/{pid_eye}_leakage.png"}`` for the synthetic export).
        skip_empty: leave out (with a warning) eyes with no frame left after phase filtering instead of
            refusing the CSV.
        frames_per_phase, phases_drop, phase_merge, eval_frames, pad_to, allow_grey_cf, resize_to_cf,
        cache, bit_depth: see :class:`~fundus2ffa.data.readers.base.Reader`.
    """

    def __init__(
        self,
        csv: str | Path,
        root: str | Path | None = None,
        phases_drop: Sequence[str] = ("A", "C"),
        phase_merge: Mapping[str, str] | None = None,
        frames_per_phase: int = 4,
        eval_frames: str = "even",
        pad_to: int | None = None,
        mask_patterns: Mapping[str, str] | None = None,
        skip_empty: bool = False,
        allow_grey_cf: bool = False,
        resize_to_cf: bool = False,
        cache: bool = False,
        bit_depth: str | int = "auto",
        max_pixels: int | None = MAX_PIXELS,
    ):
        super().__init__(
            frames_per_phase, phases_drop, DEFAULT_PHASE_MERGE if phase_merge is None else phase_merge, eval_frames, pad_to,
            allow_grey_cf=allow_grey_cf, resize_to_cf=resize_to_cf, cache=cache, bit_depth=bit_depth, max_pixels=max_pixels,
        )
        self.csv = Path(csv)
        self.root = Path(root) if root is not None else self.csv.parent
        self.mask_patterns = {str(k): str(v) for k, v in dict(plain(mask_patterns) or {}).items()}
        self.skip_empty = skip_empty

    def _path(self, value: str) -> Path:
        path = Path(value.strip())
        return path if path.is_absolute() else self.root / path

    def _rows(self) -> list[dict]:
        if not self.csv.is_file():
            raise DataError(f"video CSV not found: {self.csv}. Set data.reader.csv to the Fundus2Video frame table.")
        with open(self.csv, newline="", encoding="utf-8-sig") as handle:
            table = csv.DictReader(handle)
            header = [name.strip() for name in (table.fieldnames or [])]
            missing = [name for name in CSV_COLUMNS if name not in header]
            if missing:
                raise DataError(
                    f"{self.csv} lacks the column(s) {', '.join(missing)} (it has: {', '.join(header) or 'no header'}). "
                    f"The Fundus2Video layout needs {', '.join(CSV_COLUMNS)} (reference_spec 4.2); rename the columns."
                )
            table.fieldnames = header
            rows = list(table)
        if not rows:
            raise DataError(f"{self.csv} has a header but no rows; it must list one row per FA frame.")
        return rows

    def records(self) -> list[Record]:
        rows = self._rows()
        eyes: dict[str, list[tuple[float, int, dict]]] = {}
        for line, row in enumerate(rows, start=2):
            for column in ("pid_eye", "orgid", "fa_rigid", "co_rigid"):
                if not (row.get(column) or "").strip():
                    raise DataError(f"{self.csv} line {line}: empty {column}; every row needs {', '.join(CSV_COLUMNS)}.")
            try:
                order = float(row["level_1"])
            except (TypeError, ValueError):
                raise DataError(
                    f"{self.csv} line {line}: level_1 = {row.get('level_1')!r} is not a number; level_1 is the "
                    "frame's temporal order key and must be numeric."
                ) from None
            eyes.setdefault(row["pid_eye"].strip(), []).append((order, line, row))

        records, empty = [], []
        for eye_id in sorted(eyes):
            rows_of_eye = sorted(eyes[eye_id], key=lambda item: (item[0], item[1]))
            patients = sorted({row["orgid"].strip() for _, _, row in rows_of_eye})
            if len(patients) > 1:
                raise DataError(
                    f"{self.csv}: eye {eye_id!r} has rows of several patients (orgid {patients}); an eye belongs to "
                    "one patient. Fix the orgid column."
                )
            kept = [(order, row, phase) for order, _, row in rows_of_eye if (phase := self.map_phase(row["Phase"])) is not None]
            if not kept:
                empty.append((eye_id, sorted({row["Phase"].strip() for _, _, row in rows_of_eye})))
                continue
            cf_paths = {row["co_rigid"].strip() for _, row, _ in kept}
            if len(cf_paths) > 1:
                log.warning("eye %s lists %d CF paths; using the earliest row's %s", eye_id, len(cf_paths), kept[0][1]["co_rigid"])
            first = kept[0][1]
            split = {(row.get("split") or "").strip() for _, row, _ in kept}
            if len(split) > 1 or not split <= {"", *SPLITS}:
                raise DataError(
                    f"{self.csv}: eye {eye_id!r} has split value(s) {sorted(split)}; use one of {', '.join(SPLITS)} "
                    "for all rows of an eye (or leave the split column empty to draw the split)."
                )
            try:
                masks = tuple(
                    (name, self._path(pattern.format(pid_eye=eye_id, orgid=patients[0])))
                    for name, pattern in self.mask_patterns.items()
                )
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(
                    f"data.reader.mask_patterns: cannot fill {self.mask_patterns} ({exc}); patterns may use "
                    "{pid_eye} and {orgid} only."
                ) from None
            records.append(
                Record(
                    id=eye_id,
                    group=patients[0],
                    cf=self._path(first["co_rigid"]),
                    frames=tuple(Frame(self._path(row["fa_rigid"]), phase, order) for order, row, phase in kept),
                    category=(first.get("category") or "").strip(),
                    split=split.pop(),
                    masks=masks,
                )
            )
        if empty:
            listed = "; ".join(f"{eye} (phases {', '.join(phases)})" for eye, phases in empty[:5])
            message = (
                f"{len(empty)} eye(s) in {self.csv} have no frame left after dropping phases "
                f"{list(self.phases_drop)}: {listed}{' ...' if len(empty) > 5 else ''}."
            )
            if not self.skip_empty or not records:
                raise DataError(
                    message + " Change data.reader.phases_drop, remove those eyes, or set data.reader.skip_empty=true "
                    "to leave them out."
                )
            log.warning("%s Leaving them out (data.reader.skip_empty=true).", message)
        return records


class UWFVideo(Reader):
    """The two-phase ultra-widefield eyes (../shared/data/uwf_slo_fa_phases) as 2-frame videos.

    Each eye is the SLO pseudo-colour image (the "CF") with its early and its late FA frame, phases
    ``early`` and ``late`` (one frame each, so every selection gives T = 2). The train/ and test/ folders
    fix the split. Reuses :class:`~fundus2ffa.data.readers.uwf_phases.UWFPhases` for the layout.
    The three images are only roughly registered (a few to tens of pixels), so the knowledge mask also
    marks misregistered vessel edges.
    """

    def __init__(
        self,
        root: str | Path,
        frames_per_phase: int = 4,
        eval_frames: str = "even",
        pad_to: int | None = None,
        cache: bool = True,
        allow_grey_cf: bool = False,
        bit_depth: str | int = "auto",
        max_pixels: int | None = MAX_PIXELS,
    ):
        super().__init__(
            frames_per_phase, (), {}, eval_frames, pad_to, allow_grey_cf=allow_grey_cf, cache=cache, bit_depth=bit_depth,
            max_pixels=max_pixels,
        )
        self.layout = UWFPhases(root)

    def records(self) -> list[Record]:
        return [
            Record(
                id=eye.id,
                group=eye.id,
                cf=eye.cf,
                frames=tuple(Frame(path, phase, float(i)) for i, (path, phase) in enumerate(zip(eye.frames, eye.phases))),
                split=eye.split,
            )
            for eye in self.layout.eyes()
        ]
