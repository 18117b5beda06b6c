"""Torch dataset over a reader's records: load, add the field-of-view mask, transform."""

import torch
from torch.utils.data import Dataset

from fundus2ffa.data.readers.base import PairReader
from fundus2ffa.data.records import PairRecord, PairSample
from fundus2ffa.data.transforms import PairedTransform
from fundus2ffa.priors.fov import fov_mask


class PairedDataset(Dataset):
    """Items are dicts: ``cf`` 3xHxW and ``ffa`` 1xHxW in [-1, 1], ``fov`` (and any reader masks)
    1xHxW in {0, 1}, ``id`` and ``category`` strings.

    Args:
        reader: loads a record's pixels.
        records: the records of this split.
        transform: the paired geometry/intensity transform.
        cache: keep decoded pairs in memory (small datasets such as Isfahan MISP and the synthetic
            retina; each DataLoader worker keeps its own copy).
        repeats: each record appears this many times per epoch (random crops of a few large images).
    """

    def __init__(
        self,
        reader: PairReader,
        records: list[PairRecord],
        transform: PairedTransform,
        cache: bool = True,
        repeats: int = 1,
    ):
        self.reader, self.records, self.transform = reader, list(records), transform
        self.cache, self.repeats = cache, int(repeats)
        self._cached: dict[int, PairSample] = {}

    def __len__(self) -> int:
        return len(self.records) * self.repeats * self.transform.num_views

    def sample(self, index: int) -> PairSample:
        """The decoded pair of record ``index`` with its ``fov`` mask, before any transform."""
        if index in self._cached:
            return self._cached[index]
        sample = self.reader.load(self.records[index])
        if "fov" not in sample.masks:
            sample.masks["fov"] = fov_mask(sample.cf, [sample.ffa])
        if self.cache:
            self._cached[index] = sample
        return sample

    def __getitem__(self, index: int) -> dict:
        views = self.transform.num_views
        view, index = index % views, index // views
        record_index = index % len(self.records)
        # Per-sample seed from torch's RNG: reproducible under seed_everything(workers=True). Only
        # random transforms draw one, so evaluation never moves the training RNG stream.
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) if self.transform.is_random else 0
        sample = self.sample(record_index)
        item = self.transform(sample, seed, view)
        item["id"] = sample.id if views == 1 else f"{sample.id}#{view}"
        item["category"] = sample.category
        return item
