"""The one dataset of stills and videos: select frames, load, preprocess, augment, knowledge mask, tensors.

Per item (reference_spec section 4.2, "Per item"; the order matters):

1. the reader selects frames (training: a seeded draw per phase; evaluation: a fixed selection; a still
   pair is its one frame) and decodes the CF, those frames and any ground-truth masks (uint8);
2. :class:`~fundus2ffa.data.preprocess.Preprocess`: the field-of-view mask (section 1.3, from the CF and
   the selected frames unless the reader gives one), optional zeroing and crop to its box, the resize
   policy; a training box crop (Fundus2Video) is cut from the native image here, so it resamples once;
3. the transform draws one crop/flip and applies it to everything (no CF-only flip, F2);
4. the knowledge mask (video models) on the uint8 green channels of the transformed frames (first and
   last frame, or the ``phase_early_late`` pair, F11) *before* normalisation, so it is recomputed for
   every draw and aligned with the frames by construction;
5. tensors in [-1, 1] (masks in {0, 1}), in the batch format of the model kind: ``image`` items have
   ``ffa`` 1 x H x W (the one frame); ``video`` items have ``frames`` T x C x H x W, ``order`` and ``phases``.

Seeds: a training item (or any item of a random transform) draws one seed from torch's RNG, so runs are
reproducible under ``seed_everything(workers=True)`` and evaluation never moves the training RNG stream;
frame sampling, the box crop and the albumentations draw use independent streams derived from it.
"""

from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import Dataset

from fundus2ffa.data.preprocess import Preprocess
from fundus2ffa.data.readers.base import Reader
from fundus2ffa.data.records import Record, Sample
from fundus2ffa.data.transforms import Transform
from fundus2ffa.errors import ConfigError, DataError
from fundus2ffa.priors.knowledge_mask import DEFAULT_THRESHOLD, KM_FRAMES, km_frame_indices, knowledge_mask

KINDS = ("image", "video")
KM_KEYS = ("frames", "threshold", "early_phase", "late_phase")


def km_settings(km: dict | None) -> dict:
    """The knowledge-mask settings with defaults: frames (sampled_first_last | phase_early_late),
    threshold (45, uint8 green), early_phase / late_phase (phase_early_late only; None: the first /
    last phase of the video)."""
    from fundus2ffa.data.readers.base import plain

    settings = {"frames": "sampled_first_last", "threshold": DEFAULT_THRESHOLD, "early_phase": None, "late_phase": None}
    given = dict(plain(km) or {})
    unknown = sorted(set(given) - set(KM_KEYS))
    if unknown:
        raise ConfigError(f"data.km has unknown key(s) {unknown}; use {', '.join(KM_KEYS)}.")
    settings.update(given)
    if settings["frames"] not in KM_FRAMES:
        raise ConfigError(f"data.km.frames must be one of {'|'.join(KM_FRAMES)}, got {settings['frames']!r}")
    settings["threshold"] = float(settings["threshold"])
    return settings


class FFADataset(Dataset):
    """Items of one split (module notes).

    Args:
        reader: lists, selects and decodes. records: the records of this split.
        transform: the shared-geometry augmentation. preprocess: the deterministic preprocessing.
        train: random frame sampling per item (else the reader's evaluation selection).
        kind: image (``cf``, ``ffa``) | video (``cf``, ``frames``, ``order``, ``phases``).
        km: knowledge-mask settings (:func:`km_settings`); None makes none (still models).
        cache: keep decoded samples of a fixed frame selection in memory (small datasets).
        repeats: each record appears this many times per epoch (random crops of a few large images).
    """

    def __init__(
        self,
        reader: Reader,
        records: list[Record],
        transform: Transform,
        preprocess: Preprocess | None = None,
        train: bool = False,
        kind: str = "image",
        km: dict | None = None,
        cache: bool = True,
        repeats: int = 1,
    ):
        if kind not in KINDS:
            raise ConfigError(f"data.kind must be one of {'|'.join(KINDS)}, got {kind!r}")
        self.reader, self.records, self.transform = reader, list(records), transform
        self.preprocess = preprocess or Preprocess()
        self.train, self.kind, self.cache, self.repeats = bool(train), kind, cache, int(repeats)
        self.km = None if km is None else km_settings(km)
        self._cached: dict[tuple, Sample] = {}

    def __len__(self) -> int:
        return len(self.records) * self.repeats * self.transform.num_views

    def _km_indices(self, record: Record) -> tuple[int, int] | None:
        if self.km is None or self.km["frames"] != "phase_early_late":
            return None
        try:
            return km_frame_indices(record.phases, "phase_early_late", self.km["early_phase"], self.km["late_phase"])
        except ValueError as exc:
            raise DataError(f"video {record.id!r}: {exc}. Set data.km.early_phase / late_phase to phases every video has.") from None

    def _load(self, index: int, indices: list[int]) -> Sample:
        key = (index, tuple(indices))
        if key in self._cached:
            return self._cached[key]
        sample = self.reader.load(self.records[index], indices)
        sample = replace(sample, masks=dict(sample.masks))  # never edit a reader's cached sample
        if "fov" not in sample.masks:  # computed once per cached sample (section 1.3), from every loaded frame
            sample.masks["fov"] = self.preprocess.field_of_view(sample.cf, sample.frames)
        if self.cache and (not self.train or len(self.records[index].frames) == 1):
            self._cached[key] = sample
        return sample

    def draw(self, index: int, seed: int | None = None, view: int = 0) -> Sample:
        """Steps 1-4 for record ``index``: the uint8 sample after preprocessing and augmentation, with
        ``fov`` (and ``knowledge_mask``) in its masks. ``seed`` drives the random parts."""
        record = self.records[index]
        if seed is None and (self.train or self.transform.is_random):
            raise ValueError("a training or randomly augmented draw needs a seed")
        sampling = np.random.default_rng([seed, 0]) if self.train else None
        selected = self.reader.select_frames(record, sampling)
        km_pair = self._km_indices(record)
        sample = self._load(index, selected + list(km_pair or ()))
        frames, km_frames = sample.frames, None
        if km_pair is not None:
            frames, km_frames = sample.frames[:-2], sample.frames[-2:]
            sample = replace(sample, phases=sample.phases[:-2], order=sample.order[:-2])
        pre = self.preprocess
        geometry = pre.plan(sample.cf, sample.frames, sample.masks.get("fov"), self.transform.load_size, f"{self.reader.noun} {record.id!r}")
        box = self.transform.draw_box(None if seed is None else np.random.default_rng([seed, 1]), *geometry.size)
        masks = {name: pre.resample(mask, geometry, nearest=True, sub_box=box) for name, mask in sample.masks.items()}
        sample = replace(
            sample,
            cf=pre.resample(sample.cf, geometry, sub_box=box),
            frames=pre.resample(frames, geometry, stack=True, sub_box=box),
            masks=masks,
            km_frames=None if km_frames is None else pre.resample(km_frames, geometry, stack=True, sub_box=box),
        )
        sample = self.transform.geometry(sample, 0 if seed is None else seed, view)
        if self.km is not None:
            early, late = (sample.frames[0], sample.frames[-1]) if sample.km_frames is None else sample.km_frames
            km = knowledge_mask(early, late, self.km["threshold"])
            if not pre.fov_crop:
                km &= sample.masks["fov"]
            sample.masks["knowledge_mask"] = km
        sample.km_frames = None
        return sample

    def __getitem__(self, index: int) -> dict:
        views = self.transform.num_views
        view, index = index % views, index // views
        index %= len(self.records)
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) if self.train or self.transform.is_random else None
        sample = self.draw(index, seed, view)
        item = self.transform.to_tensors(sample)
        if self.kind == "image":
            item["ffa"] = item.pop("frames")[0]
        else:
            item["order"] = torch.tensor(sample.order, dtype=torch.float32)
            item["phases"] = tuple(sample.phases)
        item["id"] = sample.id if views == 1 else f"{sample.id}#{view}"
        item["category"] = sample.category
        return item


def VideoDataset(reader, records, transform, image_size: int = 512, train: bool = False, km=None, fov_crop: bool = True) -> FFADataset:  # noqa: N802
    """Fundus2Video's items (section 4.2): FOV crop resized to ``image_size`` square (bilinear), knowledge mask."""
    preprocess = Preprocess(resize="square", size=int(image_size), fov_crop=bool(fov_crop), interpolation="linear")
    return FFADataset(reader, records, transform, preprocess, train=train, kind="video", km=km or {}, cache=False)


def collate(items: list[dict]) -> dict:
    """Batch items: tensors stacked (B x ...), strings and phase tuples kept as lists.

    Videos of a batch must have the same number of frames T: batch size 1 (Fundus2Video's default) or a
    fixed T (``data.reader.pad_to`` = frames_per_phase x number of phases with ``eval_frames: even``).
    """
    if "frames" in items[0]:
        lengths = [item["frames"].shape[0] for item in items]
        if len(set(lengths)) > 1:
            raise DataError(
                f"videos of one batch have different numbers of frames {lengths} (ids {[i['id'] for i in items]}); "
                "use data.batch_size=1 (the Fundus2Video default) or give every video the same length with "
                "data.reader.pad_to=<frames_per_phase x number of phases>."
            )
    batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch


collate_videos = collate
PairedDataset = FFADataset
