"""Train/val/test splits in which no group (patient or eye) appears in two splits.

Stratified by category (Li et al. 2020, reference_spec section 2.1: 20 % of each category held out):
the groups of each category are shuffled with a seed derived from ``seed`` and the category, laid end
to end category after category, and dealt split labels from one evenly interleaved sequence with
exactly the target count of each split. So each split has its target size over all categories, and each
category is split in the given proportions up to rounding (less than two groups off per split).
Rounding each category on its own instead would put every small category entirely into train and could
leave val or test empty however many groups there are.
"""

import logging
import math
import random
from collections import defaultdict
from typing import Protocol, TypeVar

from fundus2ffa.data.records import PairRecord
from fundus2ffa.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
VAL_FROM = ("train", "test", "none")
VAL_SOURCES = ("val", "val_carved_from_train", "test", None)
log = logging.getLogger(__name__)


class Splittable(Protocol):
    """What :func:`split_records` needs of a record: its group (patient or eye) and its category."""

    @property
    def split_group(self) -> str: ...

    @property
    def category(self) -> str: ...


R = TypeVar("R", bound=Splittable)


def split_records(
    records: list[R], fractions: dict[str, float], seed: int = 0, stratify: bool = True
) -> dict[str, list[R]]:
    """Split records into ``fractions`` (keys among train/val/test, non-negative, summing to 1) by group.

    Any record with ``split_group`` and ``category`` works: :class:`PairRecord` (still pairs) and
    :class:`~fundus2ffa.data.video.records.VideoRecord` (videos, grouped by patient).

    Every split with a positive fraction gets at least one group when there are enough groups. The
    result depends only on the records, the fractions and ``seed`` (not on the record order). Returns
    all three keys, records in their given order within each split.
    """
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ConfigError(f"data.split has unknown keys {sorted(unknown)}; use train, val and test.")
    negative = {name: value for name, value in fractions.items() if value < 0}
    if negative:
        raise ConfigError(f"data.split fractions must not be negative, got {negative}.")
    total = sum(fractions.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ConfigError(f"data.split fractions must sum to 1, got {dict(fractions)} (sum {total}).")

    groups_by_category: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for record in records:
        if record.split_group not in seen:
            seen.add(record.split_group)
            groups_by_category[record.category if stratify else ""].append(record.split_group)
    ordered_groups = []
    for category in sorted(groups_by_category):
        groups = sorted(groups_by_category[category])
        random.Random(f"{seed}/{category}").shuffle(groups)
        ordered_groups += groups

    names = [name for name in SPLITS if fractions.get(name, 0) > 0]
    counts = _allocate(len(ordered_groups), [fractions[name] for name in names])
    assignment = {group: names[i] for group, i in zip(ordered_groups, _interleave(counts))}
    out: dict[str, list[R]] = {name: [] for name in SPLITS}
    for record in records:
        out[assignment[record.split_group]].append(record)
    return out


def carve_validation(
    train: list[R], fraction: float, seed: int = 0, stratify: bool = True, min_train_groups: int = 2
) -> tuple[list[R], list[R]]:
    """Hold ``fraction`` of the training groups out as a validation split: (train, val).

    Grouped by ``split_group`` (patient or eye) and stratified by category with :func:`split_records`,
    seeded by ``seed`` (the data's ``split_seed``, independent of the training seed, so every run of a
    sweep validates on the same records). Returns ``(train, [])`` when it would leave fewer than
    ``min_train_groups`` training groups (or no validation group).
    """
    groups = {r.split_group for r in train}
    if fraction <= 0 or len(groups) < min_train_groups + 1:
        return list(train), []
    parts = split_records(train, {"train": 1.0 - fraction, "val": fraction}, seed=f"{seed}/carved_val", stratify=stratify)
    if not parts["val"] or len({r.split_group for r in parts["train"]}) < min_train_groups:
        return list(train), []
    return parts["train"], parts["val"]


def fill_validation(
    splits: dict[str, list[R]], val_from: str, fraction: float, seed: int = 0, stratify: bool = True
) -> str | None:
    """Give ``splits`` a validation split when the data has none (issue 15: never validate on test silently).

    ``val_from``: ``train`` (default) carves one from the training records (:func:`carve_validation`),
    or leaves validation empty, with a warning, when too few records remain for training; ``test``
    validates on the test split, with a warning (checkpoint selection on test: marked in metrics.json and
    the report); ``none`` runs without validation. A data config's own validation split is always used.
    Edits ``splits`` in place and returns where validation comes from: ``val``,
    ``val_carved_from_train``, ``test`` or None (no validation: no monitored metric).
    """
    if val_from not in VAL_FROM:
        raise ConfigError(f"data.val_from must be one of {'|'.join(VAL_FROM)}, got {val_from!r}")
    if splits.get("val"):
        if val_from == "test":
            log.warning("data.val_from=test is ignored: the data has its own validation split (%d records)", len(splits["val"]))
        return "val"
    if val_from == "none":
        log.warning("data.val_from=none: no validation split; checkpoints are not selected by any metric")
        return None
    if val_from == "test":
        if not splits.get("test"):
            raise ConfigError("data.val_from=test but the data has no test split; use data.val_from=train")
        log.warning(
            "data.val_from=test: validating on the TEST split (%d records); checkpoint selection, early stopping and "
            "sweep objectives then read test metrics, so test results are not independent (marked in metrics.json)",
            len(splits["test"]),
        )
        splits["val"] = list(splits["test"])
        return "test"
    train, val = carve_validation(splits.get("train", []), fraction, seed=seed, stratify=stratify)
    if not val:
        log.warning(
            "no validation split, and %d training record(s) are too few to carve one (data.val_fraction=%s): "
            "training without validation, so no monitored metric selects checkpoints (metrics.json: selected_on null)",
            len(splits.get("train", [])), fraction,
        )
        return None
    log.warning(
        "no validation split: validating on %d training record(s) held out by group (data.val_fraction=%s, "
        "data.split_seed=%s); %d remain for training. The test split is never used for validation.",
        len(val), fraction, seed, len(train),
    )
    splits["train"], splits["val"] = train, val
    return "val_carved_from_train"


def records_by_split(records: list[PairRecord]) -> dict[str, list[PairRecord]]:
    """The split a layout fixes itself (:attr:`PairRecord.split`: a manifest column, UWF train/test folders).

    Every record must carry a split; a layout that fixes some but not all is refused rather than guessed.
    """
    missing = [r.id for r in records if not r.split]
    if missing:
        raise DataError(
            f"{len(missing)} pair(s) have no split (e.g. {missing[:3]}) while the data is read with its own "
            "split; fill the split column for every pair, or draw the split instead (data.split fractions)."
        )
    out: dict[str, list[PairRecord]] = {name: [] for name in SPLITS}
    for record in records:
        if record.split not in out:
            raise DataError(f"pair {record.id!r} has split {record.split!r}; use one of {', '.join(SPLITS)}.")
        out[record.split].append(record)
    return out


def _allocate(n: int, fractions: list[float]) -> list[int]:
    """Largest-remainder allocation of n items, at least one per split when n allows."""
    raw = [f * n for f in fractions]
    counts = [int(math.floor(x)) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    if n >= len(counts):
        for i, c in enumerate(counts):
            if c == 0:
                donor = max(range(len(counts)), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] += 1
    return counts


def _interleave(counts: list[int]) -> list[int]:
    """A sequence holding index i exactly counts[i] times, spread evenly (smooth weighted round robin).

    Every prefix holds each index in proportion to its count to within one, so any stretch of it (the
    groups of one category) does to within two.
    """
    total = sum(counts)
    credit = [0] * len(counts)
    sequence = []
    for _ in range(total):
        credit = [c + w for c, w in zip(credit, counts)]
        chosen = max(range(len(counts)), key=lambda i: credit[i])
        credit[chosen] -= total
        sequence.append(chosen)
    return sequence
