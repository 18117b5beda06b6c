"""The one LightningDataModule of stills and videos, configured by the data config.

``kind: image`` serves still pairs (``cf``, ``ffa``), ``kind: video`` serves videos (``cf``, ``frames``,
``knowledge_mask``, ...); models are paired with data of their kind. :class:`PairedDataModule` and
:class:`VideoDataModule` are the same module with each kind's defaults (splits, seeds, preprocessing).
"""


import logging

import lightning as L
from torch.utils.data import DataLoader

from fundus2ffa.data.dataset import KINDS, FFADataset, collate, km_settings
from fundus2ffa.data.preprocess import Preprocess
from fundus2ffa.data.readers.base import Reader
from fundus2ffa.data.splits import SPLITS, fill_validation, split_records
from fundus2ffa.data.transforms import Transform
from fundus2ffa.errors import ConfigError, DataError

log = logging.getLogger(__name__)
MIN_SPLIT_IMAGES = 3  # fewer make a split's mean score anecdotal (issue 11 item 3)



class DataModule(L.LightningDataModule):
    """Splits a reader's records (by group: patient or eye; stratified by category) and serves batches.

    Records that carry a ``split`` of their own (fixed train/test folders, a manifest or CSV column) keep
    it; the others are split by ``split`` fractions with ``split_seed`` (independent of the training seed).
    Without any validation record, one is carved from the training records, never taken from test unless
    asked (``val_from``; :func:`~fundus2ffa.data.splits.fill_validation`).

    Args:
        reader: a :class:`~fundus2ffa.data.readers.base.Reader`.
        train_transform / eval_transform: :class:`~fundus2ffa.data.transforms.Transform` for training
            and for val/test.
        preprocess: the ``data.preprocess`` settings (:class:`~fundus2ffa.data.preprocess.Preprocess`),
            shared with prediction through the checkpoint's stored config.
        image_size: side of the images the networks see (after crops).
        kind: image | video (module notes).
        split, split_seed, stratify: the drawn split.
        batch_size, eval_batch_size, num_workers, pin_memory: loaders.
        cache: keep decoded samples in memory. train_repeats: passes over each training record per epoch.
        km: knowledge-mask settings (video; :func:`~fundus2ffa.data.dataset.km_settings`).
        verify: decode every image once before training (``header`` reads headers only, for large sets).
        val_from / val_fraction: where validation comes from when the data has no validation split
            (train: carve ``val_fraction`` of the training groups | test | none); ``val_source`` tells
            which it was after ``setup``.
    """

    def __init__(
        self,
        reader: Reader,
        train_transform: Transform,
        eval_transform: Transform,
        preprocess: dict | None = None,
        image_size: int = 256,
        kind: str = "image",
        split: dict | None = None,
        split_seed: int = 0,
        stratify: bool = True,
        batch_size: int = 1,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        cache: bool = True,
        train_repeats: int = 1,
        km: dict | None = None,
        verify: str = "decode",
        val_from: str = "train",
        val_fraction: float = 0.1,
    ):
        super().__init__()
        self.val_from, self.val_fraction, self.val_source = val_from, float(val_fraction), None
        if kind not in KINDS:
            raise ConfigError(f"data.kind must be one of {'|'.join(KINDS)}, got {kind!r}")
        if verify not in ("decode", "header"):
            raise ConfigError(f"data.verify must be decode or header, got {verify!r}")
        if int(image_size) < 16:
            raise ConfigError(f"data.image_size must be at least 16, got {image_size}")
        self.reader, self.kind = reader, kind
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.preprocess = preprocess if isinstance(preprocess, Preprocess) else Preprocess.from_config(preprocess)
        self.image_size = int(image_size)
        self.split = dict(split or {"train": 0.8, "val": 0.1, "test": 0.1})
        self.split_seed, self.stratify = split_seed, stratify
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers, self.pin_memory, self.cache = num_workers, pin_memory, cache
        self.train_repeats = int(train_repeats)
        self.km = km_settings(km) if kind == "video" else None
        self.verify = verify
        self.splits: dict | None = None
        self.datasets: dict[str, FFADataset] = {}

    def setup(self, stage: str | None = None) -> None:
        """Read and check every record once; raises DataError before any training starts."""
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
                raise DataError(f"{self.reader.noun} {record.id!r} has split {record.split!r}; use one of {', '.join(SPLITS)}.")
        if free:
            for name, part in split_records(free, self.split, seed=self.split_seed, stratify=self.stratify).items():
                splits[name].extend(part)
        if not splits["train"] or (self.kind == "video" and not (splits["val"] or splits["test"])):
            raise DataError(
                f"{len(records)} {self.reader.noun}(s) of {len({r.split_group for r in records})} group(s) leave "
                f"{'no training' if not splits['train'] else 'no validation or test'} records with data.split="
                f"{self.split}; add data or change data.split."
            )
        self.val_source = fill_validation(splits, self.val_from, self.val_fraction, seed=self.split_seed, stratify=self.stratify)
        self.splits = splits
        for name, part in splits.items():
            if 0 < len(part) < MIN_SPLIT_IMAGES:
                log.warning(
                    "the %s split holds only %d image(s): its metrics are anecdotal (one image decides the mean). "
                    "Add images or change data.split so that every split holds at least %d.",
                    name, len(part), MIN_SPLIT_IMAGES,
                )
            if part:
                train = name == "train"
                self.datasets[name] = FFADataset(
                    self.reader,
                    part,
                    self.train_transform if train else self.eval_transform,
                    self.preprocess,
                    train=train,
                    kind=self.kind,
                    km=self.km,
                    cache=self.cache,
                    repeats=self.train_repeats if train else 1,
                )

    def _loader(self, name: str, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(
            self.datasets[name],
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader | list:
        if "val" not in self.datasets:  # no validation split (data.val_from): no validation loop
            return []
        return self._loader("val", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size)


class PairedDataModule(DataModule):
    """Still pairs: native-scale images unless ``preprocess`` says otherwise; 80/10/10 stratified split."""


class VideoDataModule(DataModule):
    """Videos (Fundus2Video, reference_spec 4.2): FOV crop resized to ``image_size`` (bilinear); split by
    patient 90/5/5 with seed 7, not stratified (GroupShuffleSplit's guarantees, not its permutation);
    images checked by header; batch size 1 (videos differ in length; larger batches need
    ``data.reader.pad_to``)."""

    def __init__(self, reader, train_transform, eval_transform, image_size: int = 512, kind: str = "video", **kwargs):
        if kind != "video":
            raise ConfigError(f"data.kind must be video for VideoDataModule, got {kind!r}")
        defaults = {"split": {"train": 0.9, "val": 0.05, "test": 0.05}, "split_seed": 7, "stratify": False, "verify": "header", "cache": False}
        kwargs = {**defaults, **kwargs}
        kwargs.setdefault("preprocess", {"resize": "square", "size": int(image_size), "fov_crop": True, "interpolation": "linear"})
        super().__init__(reader, train_transform, eval_transform, image_size=image_size, kind="video", **kwargs)
