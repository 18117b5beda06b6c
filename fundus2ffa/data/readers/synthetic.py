"""In-memory CF/FFA pairs from the procedural synthetic retina (:mod:`fundus2ffa.data.synthetic`).

The default dataset of the still-image models and their test fixture: no files, deterministic by
seed, with ground-truth masks. Record ``i`` is the eye ``synthesize_eye(eye_seed(seed, i), ...)``.
"""

from fundus2ffa.data.readers.base import PairReader
from fundus2ffa.data.records import PairRecord, PairSample
from fundus2ffa.data.synthetic.retina import DEFAULT_TIMES, PHASES, eye_seed, synthesize_eye
from fundus2ffa.errors import ConfigError

SAMPLE_MASKS = ("fov", "vessel", "lesion", "leakage")


class SyntheticPairs(PairReader):
    """``num_pairs`` synthetic eyes: the CF and one FFA frame each, with masks fov, vessel, lesion, leakage.

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

    The masks describe the chosen frame: ``leakage`` (and the leakage part of ``lesion``) is the leakage
    visible in that frame, empty in arterial frames.
    """

    def __init__(
        self,
        num_pairs: int = 64,
        image_size: int = 256,
        seed: int = 0,
        frame: str = "late",
        abnormal_fraction: float = 0.5,
        cache: bool = True,
    ):
        super().__init__()
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
        self.frame, self.abnormal_fraction, self.cache = frame, float(abnormal_fraction), cache
        self._cached: dict[str, PairSample] = {}

    def _is_abnormal(self, index: int) -> bool:
        # Bresenham-style spreading: index i is abnormal when floor((i + 1) f) steps up from floor(i f).
        return int((index + 1) * self.abnormal_fraction) > int(index * self.abnormal_fraction)

    def records(self) -> list[PairRecord]:
        records = []
        for index in range(self.num_pairs):
            record_id = f"synthetic-{index:04d}"
            category = "abnormal" if self._is_abnormal(index) else "normal"
            records.append(PairRecord(id=record_id, category=category, group=record_id))
        return records

    def check(self, records: list[PairRecord], decode: bool = False) -> None:
        """Nothing is read from disk: only the record ids are checked to be this reader's own."""
        for record in records:
            self._index(record)

    def _index(self, record: PairRecord) -> int:
        prefix, _, number = record.id.partition("-")
        if prefix != "synthetic" or not number.isdigit() or int(number) >= self.num_pairs:
            raise ConfigError(
                f"record {record.id!r} is not one of the {self.num_pairs} synthetic pairs "
                "(ids synthetic-0000 ...); was a split file written for another dataset?"
            )
        return int(number)

    def load(self, record: PairRecord) -> PairSample:
        if record.id in self._cached:
            return self._cached[record.id]
        index = self._index(record)
        eye = synthesize_eye(
            eye_seed(self.seed, index),
            size=self.image_size,
            times=[DEFAULT_TIMES[PHASES.index(self.frame)]],
            abnormal=self._is_abnormal(index),
        )
        sample = PairSample(
            id=record.id,
            cf=eye.cf,
            ffa=eye.frames[0],
            masks={name: eye.masks[name] for name in SAMPLE_MASKS},
            category=eye.category,
        )
        if self.cache:
            self._cached[record.id] = sample
        return sample
