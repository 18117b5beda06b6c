"""Fundus2Angio's Isfahan MISP split (Kamran et al. 2020; reference_spec 3.1, pitfall A6).

The paper trains on the 17 aligned or near-aligned pairs (:data:`FUNDUS2ANGIO_IDS`) and reports FID on
"14 images, 4 crops of 512x512 (one per quadrant)"; neither the test images nor their selection are in
the official code. The 17 training pairs cannot also supply 14 held-out images, so here the test images
are drawn from the *other* pairs: ``num_test`` of them, uniformly with a fixed ``test_seed`` from the
usable pairs outside the training list (or named explicitly with ``test_ids``). Those pairs are not
aligned, which does not matter for FID and KID (unpaired) but makes the paired PSNR/SSIM of the test
split meaningless: read them on aligned data only. Records carry their split, so the datamodule keeps
it. There is no validation split (the paper has none and reports the last model): the data config sets
``val_from: none``, so nothing is validated or selected, least of all on the test pairs.

NORMAL 10/11. The release's NORMAL pairs 10 and 11 have swapped angiograms (a quirk of the data, noted
in ../shared/data/README.md beside the public alignment file; neither paper mentions it). Fundus2Angio's
code reads the files as released (``random_crop.py``: ``NORMAL/11-11.jpg`` as the fundus with
``NORMAL/11.jpg`` as its angiogram), so this reader's ``fix_normal_10_11`` defaults to false, the data as
released and as the code trained on it: the training pair normal/11 keeps its released angiogram
(issue 20 item 5). ``fix_normal_10_11=true`` re-pairs it with its true angiogram.
"""

import dataclasses
import random
from pathlib import Path

from fundus2ffa.data.readers.isfahan import FUNDUS2ANGIO_IDS, IsfahanMISP, parse_pair_id
from fundus2ffa.data.records import PairRecord
from fundus2ffa.errors import ConfigError, DataError


class IsfahanFundus2Angio(IsfahanMISP):
    """Isfahan MISP pairs with Fundus2Angio's train/test split.

    Args:
        root: folder holding ``ABNORMAL/`` and ``NORMAL/``.
        train_ids: the training pairs (default: the 17 of the paper).
        num_test: test pairs drawn from the remaining pairs (14, the paper's count; fewer if fewer remain).
        test_seed: seed of that draw (fixed, so every run and seed shares the split).
        test_ids: explicit test pairs instead of a draw.
        fix_normal_10_11: false (default: the pairs as released, as Fundus2Angio's code reads them) | true
            (NORMAL 10 and 11 re-paired with their true angiograms); module docstring.
        exclude, alignment, ...: as :class:`IsfahanMISP`.
    """

    def __init__(
        self,
        root: str | Path,
        train_ids: list[str] | tuple[str, ...] = FUNDUS2ANGIO_IDS,
        num_test: int = 14,
        test_seed: int = 0,
        test_ids: list[str] | None = None,
        fix_normal_10_11: bool = False,
        **kwargs,
    ):
        if "ids" in kwargs:
            raise ConfigError("IsfahanFundus2Angio selects pairs with data.reader.train_ids and test_ids, not data.reader.ids")
        super().__init__(root, ids=None, fix_normal_10_11=fix_normal_10_11, **kwargs)
        self.train_ids = [f"{c}/{n}" for c, n in (parse_pair_id(i, "data.reader.train_ids") for i in train_ids)]
        self.test_ids = None if test_ids is None else [f"{c}/{n}" for c, n in (parse_pair_id(i, "data.reader.test_ids") for i in test_ids)]
        if int(num_test) < 0:
            raise ConfigError(f"data.reader.num_test must be >= 0, got {num_test}")
        self.num_test, self.test_seed = int(num_test), int(test_seed)
        overlap = sorted(set(self.train_ids) & set(self.test_ids or ()))
        if overlap:
            raise ConfigError(f"data.reader.test_ids repeats training pairs {overlap}; a pair is in one split only")

    def records(self) -> list[PairRecord]:
        by_id = {record.id: record for record in super().records()}
        missing = [i for i in self.train_ids + (self.test_ids or []) if i not in by_id]
        if missing:
            raise DataError(
                f"{self.root} has no usable pair(s) {missing} (missing files, or left out by data.reader.exclude); "
                "fix data.reader.train_ids / test_ids or the data path"
            )
        if self.test_ids is not None:
            test = self.test_ids
        else:
            rest = sorted(i for i in by_id if i not in set(self.train_ids))
            test = sorted(random.Random(self.test_seed).sample(rest, min(self.num_test, len(rest))))
        return [dataclasses.replace(by_id[i], split="train") for i in self.train_ids] + [
            dataclasses.replace(by_id[i], split="test") for i in test
        ]
