"""The few-shot protocol (reference_spec 4.9 [D]): a fixed held-out test set, then k labelled training
samples per class (segmentation: k images) drawn from the rest, for several seeds.

The test set is drawn once (``split_seed``), stratified by class, and never changes with the few-shot
seed, so every k and seed is scored on the same images; the k-shot draw only ever sees the pool outside
it. ``k = "all"`` takes the whole pool. The same (labels, k, seed) always give the same indices.
"""

import numpy as np

from fundus2ffa.errors import ConfigError, DataError


def parse_k(value) -> int | str:
    if str(value).lower() == "all":
        return "all"
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"downstream.shots: each k must be a positive integer or 'all', got {value!r}") from None
    if k < 1:
        raise ConfigError(f"downstream.shots: each k must be at least 1, got {k}")
    return k


def split_pool_test(num: int, test_fraction: float, seed: int, labels=None, test_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pool, test) index arrays; stratified by ``labels`` when given (each class keeps >= 1 test item)."""
    rng = np.random.default_rng(seed)
    if labels is None:
        n_test = int(test_size) if test_size else max(1, int(round(num * float(test_fraction))))
        if n_test >= num:
            raise DataError(f"{num} samples cannot hold a test set of {n_test} and a training pool; add data or lower downstream.test_fraction")
        order = rng.permutation(num)
        return np.sort(order[n_test:]), np.sort(order[:n_test])
    labels = np.asarray(labels)
    pool, test = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = max(1, int(round(len(members) * float(test_fraction))))
        if n_test >= len(members):
            raise DataError(f"class {c} has {len(members)} samples: too few for a test item and a training pool; add data or drop the class")
        test.extend(members[:n_test])
        pool.extend(members[n_test:])
    return np.sort(np.asarray(pool)), np.sort(np.asarray(test))


def few_shot_indices(pool: np.ndarray, k, seed: int, labels=None) -> np.ndarray:
    """k items per class (or k items without labels) of ``pool``, reproducibly by ``seed``."""
    k = parse_k(k)
    pool = np.asarray(pool)
    if k == "all":
        return np.sort(pool)
    rng = np.random.default_rng(seed)
    if labels is None:
        if k > len(pool):
            raise DataError(f"k={k} images requested but the training pool has {len(pool)}; lower the k in downstream.shots or add data")
        return np.sort(rng.choice(pool, size=k, replace=False))
    labels = np.asarray(labels)
    chosen = []
    for c in np.unique(labels[pool]):
        members = pool[labels[pool] == c]
        if k > len(members):
            raise DataError(f"k={k} per class requested but class {c} has {len(members)} in the training pool; lower k or add data")
        chosen.extend(rng.choice(members, size=k, replace=False))
    return np.sort(np.asarray(chosen))


def summarise(values) -> tuple[float, float, int]:
    """(mean, sample standard deviation (0 for one value), count)."""
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan"), 0
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0, int(values.size)
