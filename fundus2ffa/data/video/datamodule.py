"""LightningDataModule for CF -> FFA videos (Fundus2Video, reference_spec section 4.2)."""

import logging

from fundus2ffa.data.datamodule import SplitLoaders
from fundus2ffa.data.splits import SPLITS, fill_validation, split_records
from fundus2ffa.data.video.dataset import VideoDataset, collate_videos, km_settings
from fundus2ffa.data.video.readers import VideoReader
from fundus2ffa.data.video.transforms import VideoTransform
from fundus2ffa.errors import ConfigError, DataError

log = logging.getLogger(__name__)

KINDS = ("video",)


class VideoDataModule(SplitLoaders):
    """Splits a video reader's eyes by patient and serves video batches.

    The split follows the code (section 4.2): grouped by patient (``orgid``, the record's ``group``) so no
    patient is in two splits, 90 % train and the held-out 10 % halved into val and test, seed 7. It is
    drawn with :func:`~fundus2ffa.data.splits.split_records` (group-wise, fractions 0.9/0.05/0.05), which
    matches GroupShuffleSplit's guarantees but not scikit-learn's exact permutation; ``stratify`` by
    category is off by default, as GroupShuffleSplit is not stratified. Records whose layout fixes a split
    (UWF train/ and test/ folders, a CSV ``split`` column) keep it. Without validation videos, some are
    carved from the training videos by patient, never taken from test unless asked (``val_from``;
    :func:`~fundus2ffa.data.splits.fill_validation`).

    Batches: ``batch_size`` 1 by default (the code; videos differ in length). Larger batches need videos
    of equal length (``data.reader.pad_to``); :func:`~fundus2ffa.data.video.dataset.collate_videos`
    refuses mixed lengths with an error saying so.

    Args:
        reader: a :class:`~fundus2ffa.data.video.readers.VideoReader` (FFAVideoCSV, UWFVideo, SyntheticVideos).
        train_transform / eval_transform: :class:`VideoTransform` for training and for val/test.
        image_size: side w of the square frames after the field-of-view crop (512 in the code).
        kind: what the datamodule serves, read by configs and tests ("video"; still-image datamodules
            serve pairs), so model configs can be paired with data they can train on.
        split, split_seed, stratify: the drawn split (see above).
        km: knowledge-mask settings: ``frames`` (sampled_first_last | phase_early_late, F11),
            ``threshold`` (45), ``early_phase`` / ``late_phase``.
        fov_crop: field-of-view zero/crop/resize (section 1.3 step 6) before anything else.
        verify: decode every image once before training (``header``: read image headers only, for large
            video sets).
        val_from / val_fraction: validation without a validation split (train | test | none), see
            ``fill_validation``; ``val_source`` tells which it was after ``setup``.
    """

    collate_fn = staticmethod(collate_videos)

    def __init__(
        self,
        reader: VideoReader,
        train_transform: VideoTransform,
        eval_transform: VideoTransform,
        image_size: int = 512,
        kind: str = "video",
        split: dict | None = None,
        split_seed: int = 7,
        stratify: bool = False,
        batch_size: int = 1,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        km: dict | None = None,
        fov_crop: bool = True,
        verify: str = "header",
        val_from: str = "train",
        val_fraction: float = 0.1,
    ):
        super().__init__()
        self.val_from, self.val_fraction, self.val_source = val_from, float(val_fraction), None
        if kind not in KINDS:
            raise ConfigError(f"data.kind must be one of {'|'.join(KINDS)} for VideoDataModule, got {kind!r}")
        if verify not in ("decode", "header"):
            raise ConfigError(f"data.verify must be decode or header, got {verify!r}")
        if int(image_size) < 16:
            raise ConfigError(f"data.image_size must be at least 16, got {image_size}")
        self.reader = reader
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.image_size, self.kind = int(image_size), kind
        self.split = dict(split or {"train": 0.9, "val": 0.05, "test": 0.05})
        self.split_seed, self.stratify = split_seed, stratify
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.km = km_settings(km)
        self.fov_crop, self.verify = fov_crop, verify
        self.splits: dict | None = None
        self.datasets: dict[str, VideoDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        """Read and check every video once; raises DataError before any training starts."""
        if self.splits is not None:
            return
        records = self.reader.records()
        self.reader.check(records, decode=self.verify == "decode")
        splits = {name: [] for name in SPLITS}
        free = []
        for record in records:
            if not record.split:
                free.append(record)
            elif record.split in splits:
                splits[record.split].append(record)
            else:
                raise DataError(f"video {record.id!r} has split {record.split!r}; use one of {', '.join(SPLITS)}.")
        if free:
            for name, part in split_records(free, self.split, seed=self.split_seed, stratify=self.stratify).items():
                splits[name].extend(part)
        if not splits["train"] or not (splits["val"] or splits["test"]):
            raise DataError(
                f"{len(records)} video(s) of {len({r.split_group for r in records})} patient(s) leave "
                f"{'no training' if not splits['train'] else 'no validation or test'} videos with data.split="
                f"{self.split}; add videos (patients) or change data.split."
            )
        self.val_source = fill_validation(splits, self.val_from, self.val_fraction, seed=self.split_seed, stratify=self.stratify)
        self.splits = splits
        for name, part in splits.items():
            if not part:
                continue
            train = name == "train"
            self.datasets[name] = VideoDataset(
                self.reader,
                part,
                self.train_transform if train else self.eval_transform,
                image_size=self.image_size,
                train=train,
                km=self.km,
                fov_crop=self.fov_crop,
            )

