"""Torch dataset of FFA videos: select frames, field-of-view crop, augment, knowledge mask, tensors.

Per item (reference_spec section 4.2, "Per item"; the order matters):

1. the reader selects frames (training: a seeded draw of ``frames_per_phase`` per phase with
   replacement, deduplicated, sorted; evaluation: a fixed selection) and decodes the CF, those frames
   and any ground-truth masks (uint8);
2. the field-of-view mask of section 1.3 is computed from the CF and the selected frames, every image is
   zeroed outside it, cropped to its bounding box and resized to ``image_size`` (steps 1-6);
3. the transform draws one crop/flip and applies it to everything (no CF-only flip, F2);
4. the knowledge mask is computed on the uint8 green channels of the transformed frames (first and
   last selected frame, or the ``phase_early_late`` pair, F11) *before* normalisation, so it is
   recomputed for every draw and aligned with the frames by construction;
5. everything becomes tensors in [-1, 1] (masks in {0, 1}).

Seeds: a training item draws one seed from torch's RNG (reproducible under
``seed_everything(workers=True)``, as :class:`~fundus2ffa.data.dataset.PairedDataset`); frame
sampling and augmentation use independent numpy streams derived from it.
"""

import zlib

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from fundus2ffa.data.video.readers import VideoReader
from fundus2ffa.data.video.records import VideoRecord, VideoSample
from fundus2ffa.data.video.transforms import VideoTransform, resize_stack
from fundus2ffa.errors import ConfigError, DataError
from fundus2ffa.priors.fov import fov_bbox, fov_crop, fov_mask
from fundus2ffa.priors.knowledge_mask import DEFAULT_THRESHOLD, KM_FRAMES, km_frame_indices, knowledge_mask

KM_KEYS = ("frames", "threshold", "early_phase", "late_phase")


def km_settings(km: dict | None) -> dict:
    """The knowledge-mask settings with defaults: frames (sampled_first_last | phase_early_late),
    threshold (45, uint8 green), early_phase / late_phase (phase_early_late only; None: the first /
    last phase of the video)."""
    settings = {"frames": "sampled_first_last", "threshold": DEFAULT_THRESHOLD, "early_phase": None, "late_phase": None}
    given = dict(km or {})
    unknown = sorted(set(given) - set(KM_KEYS))
    if unknown:
        raise ConfigError(f"data.km has unknown key(s) {unknown}; use {', '.join(KM_KEYS)}.")
    settings.update(given)
    if settings["frames"] not in KM_FRAMES:
        raise ConfigError(f"data.km.frames must be one of {'|'.join(KM_FRAMES)}, got {settings['frames']!r}")
    settings["threshold"] = float(settings["threshold"])
    return settings


class VideoDataset(Dataset):
    """Items are dicts: ``cf`` 3 x H x W and ``frames`` T x C x H x W in [-1, 1]; ``fov``,
    ``knowledge_mask`` and the reader's masks (e.g. ``leakage``) 1 x H x W in {0, 1}; ``order`` (T,)
    order keys; ``id``, ``category`` strings; ``phases`` a tuple of T phase labels.

    Args:
        reader: lists, selects and decodes videos.
        records: the videos of this split.
        transform: the shared-geometry augmentation and tensor conversion.
        image_size: side w of the square images after the field-of-view crop (512 in the code).
        train: random frame sampling and augmentation per item; else the reader's evaluation selection.
        km: knowledge-mask settings (:func:`km_settings`).
        fov_crop: zero outside the field of view and crop to its box before resizing (section 1.3 step 6);
            False resizes the whole image and multiplies the knowledge mask by the field of view instead.
    """

    def __init__(
        self,
        reader: VideoReader,
        records: list[VideoRecord],
        transform: VideoTransform,
        image_size: int = 512,
        train: bool = False,
        km: dict | None = None,
        fov_crop: bool = True,
    ):
        self.reader, self.records, self.transform = reader, list(records), transform
        self.image_size, self.train, self.fov_crop = int(image_size), bool(train), bool(fov_crop)
        self.km = km_settings(km)

    def __len__(self) -> int:
        return len(self.records)

    def _km_indices(self, record: VideoRecord) -> tuple[int, int] | None:
        if self.km["frames"] != "phase_early_late":
            return None
        try:
            return km_frame_indices(record.phases, "phase_early_late", self.km["early_phase"], self.km["late_phase"])
        except ValueError as exc:
            raise DataError(f"video {record.id!r}: {exc}. Set data.km.early_phase / late_phase to phases every video has.") from None

    def _crop(self, sample: VideoSample, record: VideoRecord) -> VideoSample:
        """Field-of-view mask from the CF and every loaded frame, then section 1.3 step 6."""
        frames = list(sample.frames) + (list(sample.km_frames) if sample.km_frames is not None else [])
        fov = fov_mask(sample.cf, frames)
        size = self.image_size
        box = None
        if self.fov_crop:
            if not fov.any():
                raise DataError(
                    f"video {record.id!r}: empty field of view (no pixel with CF green > 11 and every selected frame "
                    f"> 2; CF {record.cf}). Check that the CF and frames are registered and not black, or set "
                    "data.fov_crop=false."
                )
            box = fov_bbox(fov)
            top, bottom, left, right = box
            inside = fov[top:bottom, left:right]

        def shrink(image: np.ndarray, nearest: bool) -> np.ndarray:
            interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
            if box is None:
                return cv2.resize(image, (size, size), interpolation=interpolation)
            return fov_crop(image, fov, size, box, interpolation)

        def stack(frames: np.ndarray) -> np.ndarray:
            if box is not None:
                frames = frames[:, top:bottom, left:right] * inside
            return resize_stack(frames, size, size, cv2.INTER_LINEAR)

        masks = {name: shrink(mask, True) for name, mask in sample.masks.items()}
        masks["fov"] = shrink(fov, True)
        return VideoSample(
            id=sample.id,
            cf=shrink(sample.cf, False),
            frames=stack(sample.frames),
            phases=sample.phases,
            order=sample.order,
            masks=masks,
            category=sample.category,
            km_frames=None if sample.km_frames is None else stack(sample.km_frames),
        )

    def draw(self, index: int, seed: int | None = None) -> VideoSample:
        """Steps 1-4 of the module notes for video ``index``: the uint8 sample after the field-of-view crop
        and augmentation, with ``fov`` and ``knowledge_mask`` in its masks. ``seed`` drives the training
        draw (ignored for evaluation, which is deterministic)."""
        record = self.records[index]
        if self.train:
            if seed is None:
                raise ValueError("a training VideoDataset draw needs a seed")
            sampling, augmenting = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
        else:
            sampling, augmenting = None, np.random.default_rng([zlib.crc32(record.id.encode()), 1])
        selected = self.reader.select_frames(record, sampling)
        km_pair = self._km_indices(record)
        sample = self.reader.load(record, selected + list(km_pair or ()))
        if km_pair is not None:
            sample.km_frames = sample.frames[-2:]
            sample.frames, sample.phases, sample.order = sample.frames[:-2], sample.phases[:-2], sample.order[:-2]
        sample = self._crop(sample, record)
        sample = self.transform.geometry(sample, augmenting)
        early, late = (sample.frames[0], sample.frames[-1]) if sample.km_frames is None else sample.km_frames
        km = knowledge_mask(early, late, self.km["threshold"])
        if not self.fov_crop:
            km &= sample.masks["fov"]
        sample.masks["knowledge_mask"] = km
        sample.km_frames = None
        return sample

    def __getitem__(self, index: int) -> dict:
        # Only training draws a seed, so evaluation never moves the training RNG stream.
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) if self.train else None
        sample = self.draw(index, seed)
        item = self.transform.to_tensors(sample)
        item["order"] = torch.tensor(sample.order, dtype=torch.float32)
        item["phases"] = tuple(sample.phases)
        item["id"] = sample.id
        item["category"] = sample.category
        return item


def collate_videos(items: list[dict]) -> dict:
    """Batch video items: tensors stacked (B x ...), strings and phase tuples kept as lists.

    Videos of a batch must have the same number of frames T: batch size 1 (the default, as the code) or a
    fixed T (``data.reader.pad_to`` = frames_per_phase x number of phases with ``eval_frames: even``).
    """
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
