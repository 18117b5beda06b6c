"""The few-shot sampler: k per class, disjoint from the test set, reproducible by seed."""

import numpy as np
import pytest

from fundus2ffa.errors import DataError
from fundus2ffa.transfer.fewshot import few_shot_indices, split_pool_test, summarise


def test_k_per_class_disjoint_from_test_and_reproducible():
    labels = np.repeat([0, 1, 2], [12, 20, 9])
    pool, test = split_pool_test(len(labels), 0.25, seed=3, labels=labels)
    assert set(pool).isdisjoint(test) and len(pool) + len(test) == len(labels)
    assert set(np.unique(labels[test])) == {0, 1, 2}  # every class is tested
    for k in (1, 5):
        for seed in range(4):
            chosen = few_shot_indices(pool, k, seed, labels)
            assert set(chosen) <= set(pool) and set(chosen).isdisjoint(test)
            assert len(set(chosen)) == len(chosen)
            assert np.bincount(labels[chosen]).tolist() == [k, k, k]
            assert np.array_equal(chosen, few_shot_indices(pool, k, seed, labels))
    draws = {tuple(few_shot_indices(pool, 5, seed, labels)) for seed in range(4)}
    assert len(draws) > 1  # seeds draw different subsets
    assert np.array_equal(few_shot_indices(pool, "all", 0, labels), pool)


def test_unlabelled_images_and_errors():
    pool, test = split_pool_test(10, 0.3, seed=0)
    assert len(test) == 3 and set(pool).isdisjoint(test)
    chosen = few_shot_indices(pool, 4, 1)
    assert len(chosen) == 4 and set(chosen) <= set(pool)
    with pytest.raises(DataError, match="k=9 images requested but the training pool has 7"):
        few_shot_indices(pool, 9, 0)
    labels = np.array([0] * 6 + [1] * 2)
    pool, _ = split_pool_test(8, 0.5, 0, labels)
    with pytest.raises(DataError, match="class 1 has 1 in the training pool"):
        few_shot_indices(pool, 2, 0, labels)


def test_summarise_matches_numpy():
    values = [0.5, 0.7, 0.9]
    mean, sd, n = summarise(values)
    assert (mean, n) == (pytest.approx(0.7), 3) and sd == pytest.approx(np.std(values, ddof=1))
