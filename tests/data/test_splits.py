"""Splits (fundus2ffa.data.splits): groups never divided, stratified by category, deterministic by seed."""

import random
from collections import Counter

import pytest

from fundus2ffa.data.records import PairRecord
from fundus2ffa.data.splits import SPLITS, records_by_split, split_records
from fundus2ffa.errors import ConfigError, DataError

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def make_records(groups_per_category: dict[str, int], records_per_group: int = 1) -> list[PairRecord]:
    return [
        PairRecord(id=f"{category}-{g}-{r}", category=category, group=f"{category}-{g}")
        for category, count in groups_per_category.items()
        for g in range(count)
        for r in range(records_per_group)
    ]


def split_of_group(splits: dict[str, list[PairRecord]]) -> dict[str, set[str]]:
    where: dict[str, set[str]] = {}
    for name, records in splits.items():
        for record in records:
            where.setdefault(record.split_group, set()).add(name)
    return where


def test_no_group_in_two_splits_and_nothing_lost():
    records = make_records({"normal": 12, "abnormal": 9}, records_per_group=3)
    splits = split_records(records, FRACTIONS, seed=3)
    assert set(splits) == set(SPLITS)
    assert all(len(names) == 1 for names in split_of_group(splits).values())
    assert sorted(r.id for part in splits.values() for r in part) == sorted(r.id for r in records)


def test_group_defaults_to_id():
    records = [PairRecord(id=f"p{i}") for i in range(10)]
    splits = split_records(records, {"train": 0.5, "test": 0.5})
    assert len(splits["train"]) == len(splits["test"]) == 5 and splits["val"] == []


def test_each_category_split_in_proportion():
    """Li et al. (reference_spec 2.1) hold out 20 % of each category."""
    counts = {"normal": 302, "disc_leakage": 151, "large_focal": 448, "punctate": 329}
    splits = split_records(make_records(counts), {"train": 0.8, "test": 0.2}, seed=0)
    for category, total in counts.items():
        held_out = sum(r.category == category for r in splits["test"])
        assert abs(held_out - 0.2 * total) < 2, category
    assert len(splits["test"]) == round(0.2 * sum(counts.values()))


def test_small_categories_still_fill_every_split():
    """Many categories of two groups: rounding per category alone would leave val and test empty."""
    splits = split_records(make_records({f"c{i}": 2 for i in range(10)}), FRACTIONS, seed=0)
    assert {name: len(part) for name, part in splits.items()} == {"train": 16, "val": 2, "test": 2}


def test_every_split_gets_a_group_when_there_are_enough():
    splits = split_records(make_records({"normal": 3}), FRACTIONS, seed=0)
    assert all(len(part) == 1 for part in splits.values())


def ids(splits: dict[str, list[PairRecord]]) -> dict[str, list[str]]:
    return {name: sorted(r.id for r in part) for name, part in splits.items()}


def test_deterministic_by_seed_and_independent_of_record_order():
    records = make_records({"normal": 20, "abnormal": 20})
    first = ids(split_records(records, FRACTIONS, seed=7))
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    assert ids(split_records(shuffled, FRACTIONS, seed=7)) == first
    assert ids(split_records(records, FRACTIONS, seed=8)) != first


def test_unstratified_split_ignores_categories():
    records = make_records({"normal": 10, "abnormal": 10})
    splits = split_records(records, {"train": 0.5, "test": 0.5}, seed=0, stratify=False)
    assert len(splits["train"]) == len(splits["test"]) == 10


@pytest.mark.parametrize(
    "fractions, message",
    [
        ({"train": 0.8, "holdout": 0.2}, r"data\.split has unknown keys \['holdout'\]; use train, val and test"),
        ({"train": 0.8, "test": 0.3}, r"data\.split fractions must sum to 1"),
        ({"train": 1.2, "test": -0.2}, r"data\.split fractions must not be negative"),
    ],
)
def test_bad_fractions_name_the_key(fractions, message):
    with pytest.raises(ConfigError, match=message):
        split_records(make_records({"normal": 5}), fractions)


def test_records_by_split_uses_the_layouts_split():
    records = [PairRecord(id="a", split="train"), PairRecord(id="b", split="test"), PairRecord(id="c", split="train")]
    splits = records_by_split(records)
    assert Counter({k: len(v) for k, v in splits.items()}) == Counter({"train": 2, "test": 1, "val": 0})
    with pytest.raises(DataError, match=r"have no split .*'d'.*fill the split column"):
        records_by_split(records + [PairRecord(id="d")])
    with pytest.raises(DataError, match=r"pair 'e' has split 'holdout'; use one of train, val, test"):
        records_by_split(records + [PairRecord(id="e", split="holdout")])


@pytest.mark.parametrize("data", ["isfahan_li2020", "li2020_registered"])
def test_li2020_data_trains_on_every_training_pair_and_validates_on_none(data, isfahan_root, paired_folder_root):
    """Issue 20 item 5: Li et al. have no validation set and report the last epoch; the presets held out
    10 % of the training pairs although nothing was selected on them. Now every pair outside the test
    split trains, as in the paper."""
    from hydra.utils import instantiate

    from conftest import compose_run, data_overrides

    cfg = compose_run(data_overrides(data, isfahan_root, paired_folder_root))
    module = instantiate(cfg.data)
    module.setup("fit")
    everything = {r.id for r in module.reader.records()}
    assert not module.splits["val"] and module.val_source is None and "val" not in module.datasets
    trained, tested = {r.id for r in module.splits["train"]}, {r.id for r in module.splits["test"]}
    assert tested and not trained & tested
    assert trained | tested == everything  # nothing held out besides the test split
    assert len(trained) == 6  # 8 pairs, 80/20 within each category (4 + 4): 3 + 3 train, 1 + 1 test
    assert cfg.data.val_from == "none"
