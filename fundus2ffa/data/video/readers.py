"""Readers of FFA video layouts: the Fundus2Video CSV, the two-phase UWF eyes and in-memory synthetic videos.

A reader lists :class:`VideoRecord` s (one per eye, frames already phase-filtered and in temporal order),
checks them before training, chooses which frames an item uses, and decodes them into a
:class:`VideoSample` of uint8 arrays. Field-of-view cropping, augmentation and the knowledge mask happen
later, in :class:`~fundus2ffa.data.video.dataset.VideoDataset`.

Frame selection (reference_spec section 4.2, "Per item", steps 1-2):

* training (a seeded ``numpy.random.Generator`` is given): for each kept phase draw ``frames_per_phase``
  of its frames *with replacement*, drop duplicates and sort by the order key, so T <= frames_per_phase
  x (number of phases) and T varies between draws, as in the official code;
* evaluation (no generator), ``eval_frames``: ``even`` (default) takes ``frames_per_phase`` evenly
  spaced frames of each phase (np.linspace over the phase's frames, first and last included; all of
  them when the phase has fewer), so T is fixed and val/test metrics are reproducible; ``all`` takes every
  kept frame; ``sampled`` makes the training draw with a generator seeded by the eye id (the code
  samples validation videos at random too; this keeps that, reproducibly);
* ``pad_to``: the spec's "if paths are fewer than expected, pad with the last frame". The expected
  count is not stated [D]: None (default) pads nothing (the autoregressive loop clamps window indices,
  section 4.6, so any T >= 1 works); an integer repeats the last frame until the video has that many
  frames (needed for batches of more than one video, which must share T).

Phase codes (section 4.2 [D]): rows whose raw phase is in ``phases_drop`` are removed first, then
``phase_merge`` relabels the rest (default: drop A and C, AV becomes V, as train.py).
"""

import csv
import logging
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from fundus2ffa.data.io import check_bit_depth, image_size, missing_reason, read_cf, read_grey
from fundus2ffa.data.readers.uwf_phases import UWFPhases
from fundus2ffa.data.splits import SPLITS
from fundus2ffa.data.synthetic.export import _frame_times, phase_code
from fundus2ffa.data.synthetic.retina import MASK_NAMES, eye_seed, synthesize_eye
from fundus2ffa.data.video.records import VideoFrame, VideoRecord, VideoSample
from fundus2ffa.errors import ConfigError, DataError

log = logging.getLogger(__name__)

EVAL_FRAMES = ("even", "all", "sampled")
CSV_COLUMNS = ("pid_eye", "orgid", "Phase", "level_1", "fa_rigid", "co_rigid")
"""Columns of the Fundus2Video CSV (reference_spec 4.2); ``category`` and ``split`` are optional extras."""
DEFAULT_PHASE_MERGE = {"AV": "V"}


def _plain(value):
    """OmegaConf containers -> plain Python (readers are also built by Hydra)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        pass
    return value


class VideoReader:
    """Base class: phase filtering, frame selection, decoding with size checks, optional cache.

    Args:
        frames_per_phase: frames drawn per kept phase for each item (4 in the code).
        phases_drop: raw phase codes removed (the code: A and C).
        phase_merge: raw code -> label after dropping (None: {AV: V}, the code; {} merges nothing).
        eval_frames: even | all | sampled, the evaluation selection (module notes).
        pad_to: repeat the last selected frame until a video has this many frames (None: no padding).
        allow_grey_cf: accept a grey CF (normally a swapped CF/FA or a wrong export).
        resize_to_cf: resample frames and masks whose size differs from the CF (bilinear frames,
            nearest masks) instead of refusing the eye; registered data never needs it.
        cache: keep decoded images in memory (small datasets; each DataLoader worker keeps its own).
        bit_depth: significant bits of 16-bit frame files, auto | 8 | 10 | 12 | 14 | 16 (``io.read_grey``).
    """

    def __init__(
        self,
        frames_per_phase: int = 4,
        phases_drop: Sequence[str] = ("A", "C"),
        phase_merge: Mapping[str, str] | None = None,
        eval_frames: str = "even",
        pad_to: int | None = None,
        allow_grey_cf: bool = False,
        resize_to_cf: bool = False,
        cache: bool = False,
        bit_depth: str | int = "auto",
    ):
        if int(frames_per_phase) < 1:
            raise ConfigError(f"data.reader.frames_per_phase must be at least 1, got {frames_per_phase}")
        if eval_frames not in EVAL_FRAMES:
            raise ConfigError(f"data.reader.eval_frames must be one of {'|'.join(EVAL_FRAMES)}, got {eval_frames!r}")
        if pad_to is not None and int(pad_to) < 1:
            raise ConfigError(f"data.reader.pad_to must be null or at least 1, got {pad_to}")
        self.frames_per_phase = int(frames_per_phase)
        self.phases_drop = tuple(str(p) for p in (_plain(phases_drop) or ()))
        merge = DEFAULT_PHASE_MERGE if phase_merge is None else _plain(phase_merge)
        self.phase_merge = {str(k): str(v) for k, v in dict(merge).items()}
        self.eval_frames = eval_frames
        self.pad_to = None if pad_to is None else int(pad_to)
        self.allow_grey_cf, self.resize_to_cf, self.cache = allow_grey_cf, resize_to_cf, cache
        self.bit_depth = check_bit_depth(bit_depth)
        self._images: dict[Path, np.ndarray] = {}

    # ---------------------------------------------------------------------------------------------
    # Listing

    def records(self) -> list[VideoRecord]:  # pragma: no cover - interface
        raise NotImplementedError

    def map_phase(self, phase: str) -> str | None:
        """The label of a raw phase code after dropping (None) and merging."""
        phase = str(phase).strip()
        if phase in self.phases_drop:
            return None
        return self.phase_merge.get(phase, phase)

    # ---------------------------------------------------------------------------------------------
    # Frame selection

    def select_frames(self, record: VideoRecord, rng: np.random.Generator | None = None) -> list[int]:
        """Indices into ``record.frames`` for one item, in temporal order (module notes).

        ``rng``: a generator for the training draw; None for the evaluation selection ``eval_frames``.
        """
        if not record.frames:
            raise DataError(f"video {record.id!r} has no frames to sample")
        by_phase: dict[str, list[int]] = {}
        for index, frame in enumerate(record.frames):
            by_phase.setdefault(frame.phase, []).append(index)
        if rng is None and self.eval_frames == "sampled":
            rng = np.random.default_rng(zlib.crc32(record.id.encode()))
        chosen: set[int] = set()
        for indices in by_phase.values():
            if rng is not None:
                picks = rng.integers(0, len(indices), size=self.frames_per_phase)
            elif self.eval_frames == "all":
                picks = np.arange(len(indices))
            else:  # even
                count = min(self.frames_per_phase, len(indices))
                picks = np.round(np.linspace(0, len(indices) - 1, count)).astype(int)
            chosen.update(indices[int(p)] for p in picks)
        selected = sorted(chosen)  # record frames are in temporal order, so index order is time order
        if self.pad_to is not None and len(selected) < self.pad_to:
            selected += [selected[-1]] * (self.pad_to - len(selected))
        return selected

    # ---------------------------------------------------------------------------------------------
    # Decoding

    def _image(self, path: Path, kind: str) -> np.ndarray:
        if path in self._images:
            return self._images[path]
        if kind == "cf":
            image = read_cf(path, allow_grey=self.allow_grey_cf)
        else:
            image = read_grey(path, channel="green", bit_depth=self.bit_depth)  # Fundus2Video keeps the FA green channel (4.2)
            if kind == "mask":
                image = (image > 127).astype(np.uint8)
        if self.cache:
            self._images[path] = image
        return image

    def load_cf(self, record: VideoRecord) -> np.ndarray:
        return self._image(record.cf, "cf")

    def load_frames(self, record: VideoRecord, frames: Sequence[VideoFrame]) -> list[np.ndarray]:
        return [self._image(frame.path, "frame") for frame in frames]

    def load_masks(self, record: VideoRecord) -> dict[str, np.ndarray]:
        return {name: self._image(path, "mask") for name, path in record.masks}

    def _fit(self, record: VideoRecord, image: np.ndarray, what: str, cf_shape: tuple, mask: bool) -> np.ndarray:
        if image.shape[:2] == cf_shape:
            return image
        if not self.resize_to_cf:
            raise DataError(
                f"video {record.id!r}: {what} is {image.shape[1]}x{image.shape[0]} but its CF {record.cf} is "
                f"{cf_shape[1]}x{cf_shape[0]} (width x height). Register the frames to the CF, or set "
                "data.reader.resize_to_cf=true to resample them onto the CF grid."
            )
        interpolation = cv2.INTER_NEAREST if mask else cv2.INTER_LINEAR
        return cv2.resize(image, (cf_shape[1], cf_shape[0]), interpolation=interpolation)

    def load(self, record: VideoRecord, indices: Sequence[int] | None = None) -> VideoSample:
        """Decode the CF, the frames ``indices`` (default: all) and the ground-truth masks of ``record``."""
        indices = list(range(len(record.frames))) if indices is None else list(indices)
        if not indices:
            raise DataError(f"video {record.id!r}: no frames selected")
        unique = sorted(set(indices))
        cf = self.load_cf(record)
        decoded = dict(zip(unique, self.load_frames(record, [record.frames[i] for i in unique])))
        shape = cf.shape[:2]
        for i in unique:
            frame = record.frames[i]
            decoded[i] = self._fit(record, decoded[i], f"frame {frame.path or i}", shape, mask=False)
        masks = {
            name: self._fit(record, mask, f"mask {name!r}", shape, mask=True)
            for name, mask in self.load_masks(record).items()
        }
        return VideoSample(
            id=record.id,
            cf=cf,
            frames=np.stack([decoded[i] for i in indices]),
            phases=tuple(record.frames[i].phase for i in indices),
            order=tuple(float(record.frames[i].order) for i in indices),
            masks=masks,
            category=record.category,
        )

    # ---------------------------------------------------------------------------------------------
    # Checks before training

    def check(self, records: list[VideoRecord], decode: bool = True) -> None:
        """Before training: every named file exists and is readable, frames match their CF in size, and
        with ``decode`` every image is decoded once (a truncated file fails now, not mid-training)."""
        if not records:
            raise DataError(f"{type(self).__name__} found no videos; check data.reader and the data layout.")
        paths = [p for r in records for p in (r.cf, *(f.path for f in r.frames), *(m for _, m in r.masks))]
        missing = sorted({missing_reason(p) for p in paths if p is not None and not Path(p).is_file()})
        if missing:
            shown = "\n  ".join(missing[:8])
            raise DataError(
                f"{len(missing)} image file(s) listed for {type(self).__name__} do not exist, e.g.:\n  {shown}\n"
                "Check the paths (relative to the CSV's folder unless absolute; data.reader.root overrides it)."
            )
        for record in records:
            if decode:
                self.load(record)
                continue
            if record.cf is None:
                continue
            cf_size = image_size(record.cf)
            for path in [f.path for f in record.frames] + [m for _, m in record.masks]:
                size = image_size(path)
                if size != cf_size and not self.resize_to_cf:
                    raise DataError(
                        f"video {record.id!r}: {path} is {size[0]}x{size[1]} but its CF {record.cf} is "
                        f"{cf_size[0]}x{cf_size[1]} (width x height). Register the frames to the CF, or set "
                        "data.reader.resize_to_cf=true."
                    )


class FFAVideoCSV(VideoReader):
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
        cache, bit_depth: see :class:`VideoReader`.
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
    ):
        super().__init__(
            frames_per_phase, phases_drop, phase_merge, eval_frames, pad_to, allow_grey_cf, resize_to_cf, cache, bit_depth
        )
        self.csv = Path(csv)
        self.root = Path(root) if root is not None else self.csv.parent
        self.mask_patterns = {str(k): str(v) for k, v in dict(_plain(mask_patterns) or {}).items()}
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

    def records(self) -> list[VideoRecord]:
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
                VideoRecord(
                    id=eye_id,
                    group=patients[0],
                    cf=self._path(first["co_rigid"]),
                    frames=tuple(VideoFrame(self._path(row["fa_rigid"]), phase, order) for order, row, phase in kept),
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


class UWFVideo(VideoReader):
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
    ):
        super().__init__(
            frames_per_phase, (), {}, eval_frames, pad_to, allow_grey_cf=allow_grey_cf, cache=cache, bit_depth=bit_depth
        )
        self.layout = UWFPhases(root)

    def records(self) -> list[VideoRecord]:
        return [
            VideoRecord(
                id=eye.id,
                group=eye.id,
                cf=eye.cf,
                frames=tuple(VideoFrame(path, phase, float(i)) for i, (path, phase) in enumerate(zip(eye.frames, eye.phases))),
                split=eye.split,
            )
            for eye in self.layout.eyes()
        ]


class SyntheticVideos(VideoReader):
    """In-memory synthetic FFA videos, the same eyes as :func:`~fundus2ffa.data.synthetic.export.export_video_csv`.

    Eye ``i`` is ``synthesize_eye(eye_seed(seed, i), image_size, ...)`` with ``drawn_per_phase`` frames
    in each synthetic phase (arterial, venous, late) at the export's frame times, the export's phase codes
    (C, A, AV, V, L), ids (``P0000_OD`` ...) and patients, so reading an export with :class:`FFAVideoCSV`
    gives the same videos. No files; the default video data of tests and demos.

    Args:
        num_eyes: number of videos.
        image_size: height and width.
        drawn_per_phase: frames synthesised per synthetic phase (the export's ``frames_per_phase``); the
            video has 3 x drawn_per_phase frames before phase filtering.
        seed: dataset seed.
        patients: number of patients (default: half the eyes, rounded up, as the export).
        masks: ground-truth masks served with each video, among
            :data:`~fundus2ffa.data.synthetic.retina.MASK_NAMES` (``leakage`` is the leakage at the eye's
            last frame, as the export writes it).
        frames_per_phase, phases_drop, phase_merge, eval_frames, pad_to: see :class:`VideoReader`
            (sampling, after the export's phase codes are filtered and merged).
    """

    def __init__(
        self,
        num_eyes: int = 16,
        image_size: int = 128,
        drawn_per_phase: int = 4,
        seed: int = 0,
        patients: int | None = None,
        masks: Sequence[str] = ("leakage",),
        frames_per_phase: int = 4,
        phases_drop: Sequence[str] = ("A", "C"),
        phase_merge: Mapping[str, str] | None = None,
        eval_frames: str = "even",
        pad_to: int | None = None,
    ):
        super().__init__(frames_per_phase, phases_drop, phase_merge, eval_frames, pad_to)
        if num_eyes < 1 or drawn_per_phase < 1:
            raise ConfigError(f"data.reader.num_eyes and drawn_per_phase must be at least 1, got {num_eyes}, {drawn_per_phase}")
        if image_size < 16:
            raise ConfigError(f"data.reader.image_size must be at least 16 pixels, got {image_size}")
        self.patients = (num_eyes + 1) // 2 if patients is None else int(patients)
        if not num_eyes / 2 <= self.patients <= num_eyes:
            raise ConfigError(f"data.reader.patients: {num_eyes} eyes cannot belong to {self.patients} patients")
        unknown = [name for name in _plain(masks) if name not in MASK_NAMES]
        if unknown:
            raise ConfigError(f"data.reader.masks: unknown mask(s) {unknown}; choose among {', '.join(MASK_NAMES)}")
        self.num_eyes, self.image_size, self.seed = int(num_eyes), int(image_size), int(seed)
        self.drawn_per_phase, self.mask_names = int(drawn_per_phase), tuple(_plain(masks))
        self._eyes: dict[str, object] = {}
        self._indices = {self._eye_id(i)[0]: i for i in range(self.num_eyes)}

    def _eye_id(self, index: int) -> tuple[str, str]:
        """(eye id, patient) of eye ``index``, named as the export names them."""
        orgid = f"P{index % self.patients:04d}"
        return f"{orgid}_{'OD' if index < self.patients else 'OS'}", orgid

    def _eye(self, index: int):
        eye_id, _ = self._eye_id(index)
        if eye_id not in self._eyes:
            this_seed = eye_seed(self.seed, index)
            times = _frame_times(this_seed, self.drawn_per_phase)
            self._eyes[eye_id] = synthesize_eye(this_seed, size=self.image_size, times=times, laterality=eye_id[-2:])
        return self._eyes[eye_id]

    def records(self) -> list[VideoRecord]:
        records = []
        for index in range(self.num_eyes):
            (eye_id, orgid), eye = self._eye_id(index), self._eye(index)
            frames = []
            for level, time_s in enumerate(eye.times):
                phase = self.map_phase(phase_code(float(time_s)))
                if phase is not None:
                    frames.append(VideoFrame(None, phase, float(level)))
            if not frames:
                raise ConfigError(
                    f"synthetic eye {eye_id} has no frame left after dropping phases {list(self.phases_drop)}; "
                    "drop fewer phases (data.reader.phases_drop)."
                )
            records.append(VideoRecord(id=eye_id, group=orgid, frames=tuple(frames), category=eye.category))
        return sorted(records, key=lambda record: record.id)  # as FFAVideoCSV lists an export

    def _lookup(self, record: VideoRecord):
        index = self._indices.get(record.id)
        if index is None:
            raise ConfigError(
                f"record {record.id!r} is not one of the {self.num_eyes} synthetic videos (ids P0000_OD ...); was a "
                "split written for another dataset?"
            )
        return self._eye(index)

    def check(self, records: list[VideoRecord], decode: bool = True) -> None:
        """Nothing to read from disk; the records must be this reader's own."""
        if not records:
            raise DataError("SyntheticVideos has no videos; set data.reader.num_eyes >= 1.")
        for record in records:
            self._lookup(record)

    def load_cf(self, record: VideoRecord) -> np.ndarray:
        return self._lookup(record).cf

    def load_frames(self, record: VideoRecord, frames: Sequence[VideoFrame]) -> list[np.ndarray]:
        eye = self._lookup(record)
        return [eye.frames[int(frame.order)] for frame in frames]

    def load_masks(self, record: VideoRecord) -> dict[str, np.ndarray]:
        eye = self._lookup(record)
        return {name: eye.masks[name] for name in self.mask_names}
