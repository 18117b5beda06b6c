"""The one reader interface: list a layout's :class:`Record` s, check them before training, choose the
frames of an item and decode them into a :class:`Sample` (still pairs are one-frame videos).

Frame selection (reference_spec section 4.2, "Per item", steps 1-2):

* training (a seeded ``numpy.random.Generator`` is given): for each kept phase draw ``frames_per_phase``
  of its frames *with replacement*, drop duplicates and sort by the order key, so T <= frames_per_phase
  x (number of phases) and T varies between draws, as in the official code;
* evaluation (no generator), ``eval_frames``: ``even`` (default) takes ``frames_per_phase`` evenly
  spaced frames of each phase (first and last included; all of them when the phase has fewer), so T is
  fixed and val/test metrics are reproducible; ``all`` takes every kept frame; ``sampled`` makes the
  training draw with a generator seeded by the eye id;
* ``pad_to``: the spec's "if paths are fewer than expected, pad with the last frame": None (default)
  pads nothing; an integer repeats the last frame until the video has that many frames (batches of
  more than one video must share T).

A one-frame record (a still pair) always selects its frame. Phase codes (section 4.2 [D]): raw phases in
``phases_drop`` are removed, then ``phase_merge`` relabels the rest (video readers: drop A and C, AV
becomes V, as train.py).
"""

import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from fundus2ffa.data.io import MAX_PIXELS, check_bit_depth, check_max_pixels, image_size, missing_reason, read_cf, read_grey
from fundus2ffa.data.records import Frame, Record, Sample
from fundus2ffa.errors import ConfigError, DataError

EVAL_FRAMES = ("even", "all", "sampled")
FFA_CHANNELS = ("luma", "green")


def plain(value):
    """OmegaConf containers -> plain Python (readers are also built by Hydra)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


class Reader:
    """Base class of every reader: phase filtering, frame selection, decoding with size checks, cache.

    Args:
        frames_per_phase: frames drawn per kept phase for each item (4 in the Fundus2Video code).
        phases_drop: raw phase codes removed. phase_merge: raw code -> label after dropping.
        eval_frames: even | all | sampled, the evaluation selection (module notes).
        pad_to: repeat the last selected frame until a video has this many frames (None: no padding).
        allow_grey_cf: accept a grey CF (normally a swapped pair or a wrong export).
        ffa_channel: luma | green (Fundus2Video keeps the FA green channel, section 4.2).
        resize_to_cf: resample frames and masks whose size differs from the CF (bilinear/bicubic frames,
            nearest masks) instead of refusing the eye; registered data never needs it.
        cache: keep decoded images in memory (small datasets; each DataLoader worker keeps its own).
        bit_depth: significant bits of 16-bit FFA files, auto | 8 | 10 | 12 | 14 | 16 (``io.read_grey``).
        max_pixels: images with more pixels (width x height) are refused from their header before decoding
            (``io.MAX_PIXELS``, Pillow's own limit, by default; None: no limit).
    """

    noun = "video"  # how errors name one record
    synthetic = False  # drawn by the synthetic retina (not real data: no realism metrics by default, run.py)
    resize_key = "resize_to_cf"  # the config key that allows resampling
    resize_interpolation = cv2.INTER_LINEAR

    def __init__(
        self,
        frames_per_phase: int = 4,
        phases_drop: Sequence[str] = (),
        phase_merge: Mapping[str, str] | None = None,
        eval_frames: str = "even",
        pad_to: int | None = None,
        allow_grey_cf: bool = False,
        ffa_channel: str = "green",
        resize_to_cf: bool = False,
        cache: bool = False,
        bit_depth: str | int = "auto",
        max_pixels: int | None = MAX_PIXELS,
    ):
        if int(frames_per_phase) < 1:
            raise ConfigError(f"data.reader.frames_per_phase must be at least 1, got {frames_per_phase}")
        if eval_frames not in EVAL_FRAMES:
            raise ConfigError(f"data.reader.eval_frames must be one of {'|'.join(EVAL_FRAMES)}, got {eval_frames!r}")
        if pad_to is not None and int(pad_to) < 1:
            raise ConfigError(f"data.reader.pad_to must be null or at least 1, got {pad_to}")
        if ffa_channel not in FFA_CHANNELS:
            raise ConfigError(f"data.reader.ffa_channel must be one of {'|'.join(FFA_CHANNELS)}, got {ffa_channel!r}")
        self.frames_per_phase = int(frames_per_phase)
        self.phases_drop = tuple(str(p) for p in (plain(phases_drop) or ()))
        self.phase_merge = {str(k): str(v) for k, v in dict(plain(phase_merge) or {}).items()}
        self.eval_frames = eval_frames
        self.pad_to = None if pad_to is None else int(pad_to)
        self.allow_grey_cf, self.ffa_channel = allow_grey_cf, ffa_channel
        self.resize_to_cf, self.cache = resize_to_cf, cache
        self.bit_depth = check_bit_depth(bit_depth)
        self.max_pixels = check_max_pixels(max_pixels)
        self._images: dict[Path, np.ndarray] = {}

    # Listing -------------------------------------------------------------------------------------

    def records(self) -> list[Record]:  # pragma: no cover - interface
        raise NotImplementedError

    def map_phase(self, phase: str) -> str | None:
        """The label of a raw phase code after dropping (None) and merging."""
        phase = str(phase).strip()
        if phase in self.phases_drop:
            return None
        return self.phase_merge.get(phase, phase)

    # Frame selection -----------------------------------------------------------------------------

    def select_frames(self, record: Record, rng: np.random.Generator | None = None) -> list[int]:
        """Indices into ``record.frames`` for one item, in temporal order (module notes)."""
        if not record.frames:
            raise DataError(f"{self.noun} {record.id!r} has no frames to sample")
        if len(record.frames) == 1 and self.pad_to is None:
            return [0]
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

    # Decoding ------------------------------------------------------------------------------------

    def _image(self, path: Path, kind: str) -> np.ndarray:
        if path in self._images:
            return self._images[path]
        if kind == "cf":
            image = read_cf(path, allow_grey=self.allow_grey_cf, max_pixels=self.max_pixels)
        else:
            channel = self.ffa_channel if kind == "frame" else "luma"
            image = read_grey(path, channel=channel, bit_depth=self.bit_depth, max_pixels=self.max_pixels)
            if kind == "mask":
                image = (image > 127).astype(np.uint8)
        if self.cache:
            self._images[path] = image
        return image

    def load_cf(self, record: Record) -> np.ndarray:
        return self._image(record.cf, "cf")

    def load_frames(self, record: Record, frames: Sequence[Frame]) -> list[np.ndarray]:
        return [self._image(frame.path, "frame") for frame in frames]

    def load_masks(self, record: Record) -> dict[str, np.ndarray]:
        return {name: self._image(path, "mask") for name, path in record.masks}

    def _mismatch(self, record: Record, what: str, size: tuple, cf_size: tuple) -> DataError:
        """Sizes are (width, height)."""
        return DataError(
            f"{self.noun} {record.id!r}: CF {record.cf} is {cf_size[0]}x{cf_size[1]} but {what} is {size[0]}x{size[1]} "
            f"(width x height). Register/resize the images to the CF, or set data.reader.{self.resize_key}=true to "
            "resample them onto the CF grid."
        )

    def _fit(self, record: Record, image: np.ndarray, what: str, cf_shape: tuple, mask: bool) -> np.ndarray:
        if image.shape[:2] == cf_shape:
            return image
        if not self.resize_to_cf:
            raise self._mismatch(record, what, image.shape[1::-1], cf_shape[::-1])
        interpolation = cv2.INTER_NEAREST if mask else self.resize_interpolation
        return cv2.resize(image, (cf_shape[1], cf_shape[0]), interpolation=interpolation)

    def load(self, record: Record, indices: Sequence[int] | None = None) -> Sample:
        """Decode the CF, the frames ``indices`` (default: all) and the ground-truth masks of ``record``.

        An ``affine`` (2x3, CF -> FFA) warps the CF onto the frames' grid (Isfahan alignment metadata)."""
        indices = list(range(len(record.frames))) if indices is None else list(indices)
        if not indices:
            raise DataError(f"{self.noun} {record.id!r}: no frames selected")
        unique = sorted(set(indices))
        cf = self.load_cf(record)
        decoded = dict(zip(unique, self.load_frames(record, [record.frames[i] for i in unique])))
        if record.affine is not None:
            height, width = decoded[unique[0]].shape[:2]
            matrix = np.asarray(record.affine, dtype=np.float64).reshape(2, 3)
            cf = cv2.warpAffine(cf, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        shape = cf.shape[:2]
        for i in unique:
            decoded[i] = self._fit(record, decoded[i], f"FFA {record.frames[i].path or i}", shape, mask=False)
        masks = {name: self._fit(record, m, f"mask {name!r}", shape, mask=True) for name, m in self.load_masks(record).items()}
        return Sample(
            id=record.id,
            cf=cf,
            frames=np.stack([decoded[i] for i in indices]),
            phases=tuple(record.frames[i].phase for i in indices),
            order=tuple(float(record.frames[i].order) for i in indices),
            masks=masks,
            category=record.category,
        )

    # Checks before training ----------------------------------------------------------------------

    def check(self, records: list[Record], decode: bool = True) -> None:
        """Before training: every named file exists and is readable, frames match their CF in size (unless
        resampled or aligned), and with ``decode`` every image is decoded once, so a truncated file or a
        grey CF fails now and not hours into training."""
        if not records:
            raise DataError(f"{type(self).__name__} found no {self.noun}s; check data.reader and the data layout.")
        paths = [p for r in records for p in (r.cf, *(f.path for f in r.frames), *(m for _, m in r.masks))]
        missing = sorted({missing_reason(p) for p in paths if p is not None and not Path(p).is_file()})
        if missing:
            shown = "\n  ".join(missing[:8])
            raise DataError(
                f"{len(missing)} image file(s) listed for {type(self).__name__} do not exist, e.g.:\n  {shown}\n"
                "Check the paths (data.reader.root, or the CSV's folder for relative paths)."
            )
        for record in records:
            if record.cf is None:
                continue
            cf_size = image_size(record.cf, self.max_pixels)
            for what, path in [("FFA", f.path) for f in record.frames] + [("mask", m) for _, m in record.masks]:
                size = image_size(path, self.max_pixels)
                if size != cf_size and not self.resize_to_cf and record.affine is None:
                    raise self._mismatch(record, f"{what} {path}", size, cf_size)
            if decode:
                self.load(record)


class PairReader(Reader):
    """Readers of still CF/FFA pairs (one frame per record): luma FFA, bicubic resampling, pair wording.

    Args:
        allow_grey_cf: accept a grey CF. ffa_channel: luma | green.
        resize_ffa_to_cf: resample an FFA whose size differs from its CF instead of refusing the pair.
        bit_depth: significant bits of 16-bit FFA files (``io.read_grey``). cache: keep decoded images in memory.
        max_pixels: the size limit of :class:`Reader`.
    """

    noun = "pair"
    resize_key = "resize_ffa_to_cf"
    resize_interpolation = cv2.INTER_CUBIC

    def __init__(
        self, allow_grey_cf: bool = False, ffa_channel: str = "luma", resize_ffa_to_cf: bool = False,
        bit_depth: str | int = "auto", cache: bool = False, max_pixels: int | None = MAX_PIXELS,
    ):
        super().__init__(
            allow_grey_cf=allow_grey_cf, ffa_channel=ffa_channel, resize_to_cf=resize_ffa_to_cf, cache=cache, bit_depth=bit_depth,
            max_pixels=max_pixels,
        )
