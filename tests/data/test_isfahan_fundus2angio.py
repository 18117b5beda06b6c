"""Fundus2Angio's Isfahan split (reference_spec 3.1, A6): the training pairs, a fixed draw of test pairs
from the others, kept by the datamodule; evaluation on four quadrant crops per test image."""

import pytest

from fundus2ffa.data.datamodule import PairedDataModule
from fundus2ffa.data.readers.isfahan_fundus2angio import IsfahanFundus2Angio
from fundus2ffa.data.transforms import PairedTransform
from fundus2ffa.errors import ConfigError, DataError

TRAIN = ["abnormal/1", "abnormal/3", "normal/2"]


def test_split_is_training_list_plus_a_seeded_draw_of_the_rest(isfahan_root):
    reader = IsfahanFundus2Angio(isfahan_root, train_ids=TRAIN, num_test=3, test_seed=0)
    records = reader.records()
    train = [r.id for r in records if r.split == "train"]
    test = [r.id for r in records if r.split == "test"]
    assert train == TRAIN and len(test) == 3 and not set(test) & set(TRAIN)
    assert test == [r.id for r in IsfahanFundus2Angio(isfahan_root, train_ids=TRAIN, num_test=3).records() if r.split == "test"]
    seeds = {tuple(r.id for r in IsfahanFundus2Angio(isfahan_root, train_ids=TRAIN, num_test=3, test_seed=s).records()
                   if r.split == "test") for s in range(6)}
    assert len(seeds) > 1  # the seed picks the draw
    everything = IsfahanFundus2Angio(isfahan_root, train_ids=TRAIN, num_test=99).records()
    assert len(everything) == 8  # fewer remain than asked: all of them
    explicit = IsfahanFundus2Angio(isfahan_root, train_ids=TRAIN, test_ids=["normal/4"]).records()
    assert [r.id for r in explicit if r.split == "test"] == ["normal/4"]


def test_bad_ids_fail_with_the_key(isfahan_root):
    with pytest.raises(DataError, match="train_ids"):
        IsfahanFundus2Angio(isfahan_root).records()  # the paper's 17 ids are not in the 8-pair fixture
    with pytest.raises(ConfigError, match="test_ids"):
        IsfahanFundus2Angio(isfahan_root, train_ids=TRAIN, test_ids=["abnormal/1"])
    with pytest.raises(ConfigError, match="data.reader.train_ids"):
        IsfahanFundus2Angio(isfahan_root, train_ids=["left/1"])


def test_datamodule_keeps_the_split_and_evaluates_quadrants(isfahan_root):
    reader = IsfahanFundus2Angio(isfahan_root, train_ids=TRAIN, num_test=2)
    module = PairedDataModule(
        reader,
        PairedTransform(crop_size=256, crop="random"),
        PairedTransform(crop_size=256, crop="quadrants"),
        image_size=256,
        train_repeats=2,
        val_from="none",  # the preset's setting: the paper trains on all 17 pairs and selects nothing
    )
    module.setup("fit")
    assert [r.id for r in module.splits["train"]] == TRAIN
    assert not module.splits["val"] and module.val_source is None and len(module.splits["test"]) == 2
    assert len(module.datasets["train"]) == 6 and len(module.datasets["test"]) == 8  # 4 quadrants each
    item = module.datasets["test"][1]
    assert item["id"].endswith("#1") and item["cf"].shape == (3, 256, 256)
