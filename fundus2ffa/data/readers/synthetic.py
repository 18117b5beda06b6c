"""In-memory synthetic data from the procedural retina (:mod:`fundus2ffa.data.synthetic`): still pairs
(:class:`SyntheticPairs`) and FFA videos (:class:`SyntheticVideos`), the default data of the models and
their test fixtures: no files, deterministic by seed, with ground-truth masks.
"""

from collections.abc import Mapping, Sequence

import numpy as np

from fundus2ffa.data.readers.base import Reader, plain
from fundus2ffa.data.records import Frame, Record, Sample
from fundus2ffa.data.synthetic.export import _frame_times, phase_code
from fundus2ffa.data.synthetic.retina import DEFAULT_TIMES, MASK_NAMES, PHASES, eye_seed, synthesize_eye
from fundus2ffa.errors import ConfigError, DataError

SAMPLE_MASKS = ("fov", "vessel", "lesion", "leakage")


class SyntheticPairs(Reader):
    """``num_pairs`` synthetic eyes: the CF and one FFA frame each, with masks fov, vessel, lesion, leakage.

    Record ``i`` is the eye ``synthesize_eye(eye_seed(seed, i), ...)``.

    Args:
        num_pairs: number of eyes (records ``synthetic-0000`` ...).
        image_size: height and width of every image.
        seed: dataset seed; two readers with the same arguments yield identical pixels.
        frame: which FFA frame is the target: arterial | venous | late (15 s, 45 s or 300 s after
            injection, :data:`~fundus2ffa.data.synthetic.retina.DEFAULT_TIMES`; late is the target of
            Li et al., reference_spec section 2.1).
        abnormal_fraction: share of eyes with lesions, spread evenly over the record indices so every
            prefix of the records has about that share (category "abnormal", else "normal").
        cache: keep drawn pairs in memory (drawing a 256 px eye takes a few tens of milliseconds).
        geometry: fundus (default: the 45-degree synthetic fundus photograph, square) | uwf (its
            ultra-widefield view, fundus2ffa.data.synthetic.uwf: an SLO pseudo-colour "CF" of
            ``image_size`` x 1.25 ``image_size`` with eyelids, eyelashes and domain-randomised style).

    The masks describe the chosen frame: ``leakage`` (and the leakage part of ``lesion``) is the leakage
    visible in that frame, empty in arterial frames.
    """

    noun = "pair"
    synthetic = True  # not real data: no realism metrics by default (run.py)

    def __init__(
        self,
        num_pairs: int = 64,
        image_size: int = 256,
        seed: int = 0,
        frame: str = "late",
        abnormal_fraction: float = 0.5,
        cache: bool = True,
        geometry: str = "fundus",
    ):
        super().__init__(cache=cache)
        if frame not in PHASES:
            raise ConfigError(f"data.reader.frame must be one of {', '.join(PHASES)}, got {frame!r}")
        if num_pairs < 1:
            raise ConfigError(f"data.reader.num_pairs must be at least 1, got {num_pairs}")
        if not 0.0 <= abnormal_fraction <= 1.0:
            raise ConfigError(f"data.reader.abnormal_fraction must lie in [0, 1], got {abnormal_fraction}")
        if image_size < 16:
            raise ConfigError(f"data.reader.image_size must be at least 16 pixels, got {image_size}")
        if seed < 0:
            raise ConfigError(f"data.reader.seed must be non-negative, got {seed}")
        self.num_pairs, self.image_size, self.seed = int(num_pairs), int(image_size), int(seed)
        self.frame, self.abnormal_fraction = frame, float(abnormal_fraction)
        if geometry not in ("fundus", "uwf"):
            raise ConfigError(f"data.reader.geometry must be fundus or uwf, got {geometry!r}")
        self.geometry = geometry
        self._cached: dict[str, Sample] = {}

    def _is_abnormal(self, index: int) -> bool:
        # Bresenham-style spreading: index i is abnormal when floor((i + 1) f) steps up from floor(i f).
        return int((index + 1) * self.abnormal_fraction) > int(index * self.abnormal_fraction)

    def records(self) -> list[Record]:
        records = []
        for index in range(self.num_pairs):
            record_id = f"synthetic-{index:04d}"
            category = "abnormal" if self._is_abnormal(index) else "normal"
            records.append(Record(id=record_id, group=record_id, frames=(Frame(None, self.frame),), category=category))
        return records

    def check(self, records: list[Record], decode: bool = False) -> None:
        """Nothing is read from disk: only the record ids are checked to be this reader's own."""
        for record in records:
            self._index(record)

    def _index(self, record: Record) -> int:
        prefix, _, number = record.id.partition("-")
        if prefix != "synthetic" or not number.isdigit() or int(number) >= self.num_pairs:
            raise ConfigError(
                f"record {record.id!r} is not one of the {self.num_pairs} synthetic pairs "
                "(ids synthetic-0000 ...); was a split file written for another dataset?"
            )
        return int(number)

    def load(self, record: Record, indices: Sequence[int] | None = None) -> Sample:
        if record.id in self._cached:
            return self._cached[record.id]
        index = self._index(record)
        draw = synthesize_eye
        if self.geometry == "uwf":
            from fundus2ffa.data.synthetic.uwf import synthesize_uwf_eye as draw
        eye = draw(
            eye_seed(self.seed, index),
            size=self.image_size,
            times=[DEFAULT_TIMES[PHASES.index(self.frame)]],
            abnormal=self._is_abnormal(index),
        )
        sample = Sample(
            id=record.id,
            cf=eye.cf,
            frames=eye.frames[0][None],
            phases=(self.frame,),
            masks={name: eye.masks[name] for name in SAMPLE_MASKS},
            category=eye.category,
        )
        if self.cache:
            self._cached[record.id] = sample
        return sample


class SyntheticVideos(Reader):
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
        frames_per_phase, phases_drop, phase_merge, eval_frames, pad_to: see :class:`~fundus2ffa.data.readers.base.Reader`
            (sampling, after the export's phase codes are filtered and merged).
    """

    synthetic = True

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
        super().__init__(frames_per_phase, phases_drop, {"AV": "V"} if phase_merge is None else phase_merge, eval_frames, pad_to)
        if num_eyes < 1 or drawn_per_phase < 1:
            raise ConfigError(f"data.reader.num_eyes and drawn_per_phase must be at least 1, got {num_eyes}, {drawn_per_phase}")
        if image_size < 16:
            raise ConfigError(f"data.reader.image_size must be at least 16 pixels, got {image_size}")
        self.patients = (num_eyes + 1) // 2 if patients is None else int(patients)
        if not num_eyes / 2 <= self.patients <= num_eyes:
            raise ConfigError(f"data.reader.patients: {num_eyes} eyes cannot belong to {self.patients} patients")
        unknown = [name for name in plain(masks) if name not in MASK_NAMES]
        if unknown:
            raise ConfigError(f"data.reader.masks: unknown mask(s) {unknown}; choose among {', '.join(MASK_NAMES)}")
        self.num_eyes, self.image_size, self.seed = int(num_eyes), int(image_size), int(seed)
        self.drawn_per_phase, self.mask_names = int(drawn_per_phase), tuple(plain(masks))
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

    def records(self) -> list[Record]:
        records = []
        for index in range(self.num_eyes):
            (eye_id, orgid), eye = self._eye_id(index), self._eye(index)
            frames = []
            for level, time_s in enumerate(eye.times):
                phase = self.map_phase(phase_code(float(time_s)))
                if phase is not None:
                    frames.append(Frame(None, phase, float(level)))
            if not frames:
                raise ConfigError(
                    f"synthetic eye {eye_id} has no frame left after dropping phases {list(self.phases_drop)}; "
                    "drop fewer phases (data.reader.phases_drop)."
                )
            records.append(Record(id=eye_id, group=orgid, frames=tuple(frames), category=eye.category))
        return sorted(records, key=lambda record: record.id)  # as FFAVideoCSV lists an export

    def _lookup(self, record: Record):
        index = self._indices.get(record.id)
        if index is None:
            raise ConfigError(
                f"record {record.id!r} is not one of the {self.num_eyes} synthetic videos (ids P0000_OD ...); was a "
                "split written for another dataset?"
            )
        return self._eye(index)

    def check(self, records: list[Record], decode: bool = True) -> None:
        """Nothing to read from disk; the records must be this reader's own."""
        if not records:
            raise DataError("SyntheticVideos has no videos; set data.reader.num_eyes >= 1.")
        for record in records:
            self._lookup(record)

    def load_cf(self, record: Record) -> np.ndarray:
        return self._lookup(record).cf

    def load_frames(self, record: Record, frames: Sequence[Frame]) -> list[np.ndarray]:
        eye = self._lookup(record)
        return [eye.frames[int(frame.order)] for frame in frames]

    def load_masks(self, record: Record) -> dict[str, np.ndarray]:
        eye = self._lookup(record)
        return {name: eye.masks[name] for name in self.mask_names}
