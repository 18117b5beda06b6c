"""LightningDataModule for still CF -> FFA pairs from any reader."""

import logging

import lightning as L
from torch.utils.data import DataLoader

from fundus2ffa.data.dataset import PairedDataset
from fundus2ffa.data.readers.base import PairReader
from fundus2ffa.data.splits import fill_validation, split_records
from fundus2ffa.data.transforms import PairedTransform
from fundus2ffa.errors import ConfigError

log = logging.getLogger(__name__)


class SplitLoaders(L.LightningDataModule):
    """Loaders over ``self.datasets`` (train/val/test), shared by the image and video datamodules.

    Subclasses fill ``datasets`` in ``setup`` and set ``batch_size``, ``eval_batch_size``,
    ``num_workers`` and ``pin_memory``; ``collate_fn`` batches their items (None: torch's default).
    """

    collate_fn = None
    datasets: dict

    def _loader(self, name: str, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(
            self.datasets[name],
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=type(self).collate_fn,
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


class PairedDataModule(SplitLoaders):
    """Splits a reader's records (by group, stratified by category) and serves paired batches.

    Records that carry a ``split`` of their own (a reader with fixed train/test folders) keep it; the
    others are split by ``split`` fractions. Without any validation record, one is carved from the
    training records, never taken from test unless asked (:func:`~fundus2ffa.data.splits.fill_validation`).

    Args:
        reader: a :class:`PairReader` (Isfahan MISP, paired folder, two-phase UWF, synthetic ...).
        train_transform / eval_transform: paired transforms for training and for val/test.
        image_size: side of the square images the networks see (after crops); prediction resizes to it.
        split: fractions for train/val/test.
        split_seed: seed of the split (independent of the training seed, so seeds share a split).
        train_repeats: passes over each training record per epoch (random crops of large images).
        verify: decode every image once before training (``header`` reads headers only, for very
            large datasets).
        val_from / val_fraction: where validation comes from when the data has no validation split
            (train: carve ``val_fraction`` of the training groups | test | none); see ``fill_validation``.
            ``val_source`` tells which it was after ``setup``.
    """

    def __init__(
        self,
        reader: PairReader,
        train_transform: PairedTransform,
        eval_transform: PairedTransform,
        image_size: int = 256,
        split: dict | None = None,
        split_seed: int = 0,
        batch_size: int = 1,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        cache: bool = True,
        train_repeats: int = 1,
        verify: str = "decode",
        val_from: str = "train",
        val_fraction: float = 0.1,
    ):
        super().__init__()
        self.val_from, self.val_fraction, self.val_source = val_from, float(val_fraction), None
        self.reader = reader
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.image_size = image_size
        self.split = dict(split or {"train": 0.8, "val": 0.1, "test": 0.1})
        self.split_seed = split_seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.pin_memory, self.cache = num_workers, pin_memory, cache
        self.train_repeats = train_repeats
        if verify not in ("decode", "header"):
            raise ConfigError(f"data.verify must be decode or header, got {verify!r}")
        self.verify = verify
        self.splits: dict | None = None
        self.datasets: dict[str, PairedDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        """Read and check every record once; raises DataError before any training starts."""
        if self.splits is not None:
            return
        records = self.reader.records()
        self.reader.check(records, decode=self.verify == "decode")
        preset = [r for r in records if getattr(r, "split", "")]
        free = [r for r in records if not getattr(r, "split", "")]
        splits = {"train": [], "val": [], "test": []}
        for r in preset:
            splits[r.split].append(r)
        if free:
            for name, part in split_records(free, self.split, seed=self.split_seed).items():
                splits[name].extend(part)
        self.val_source = fill_validation(splits, self.val_from, self.val_fraction, seed=self.split_seed)
        self.splits = splits
        for name, part in splits.items():
            if not part:
                continue
            transform = self.train_transform if name == "train" else self.eval_transform
            repeats = self.train_repeats if name == "train" else 1
            self.datasets[name] = PairedDataset(self.reader, part, transform, cache=self.cache, repeats=repeats)
