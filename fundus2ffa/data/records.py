"""What a reader yields: pair metadata (:class:`PairRecord`) and loaded pixels (:class:`PairSample`)."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class PairRecord:
    """One CF/FFA pair on disk (or in memory, for the synthetic retina).

    id: unique, stable identifier (used for splits, file names of predictions and reports).
    cf, ffa: image paths (None for in-memory sources).
    category: e.g. normal/abnormal; splits are stratified by it and reports break down by it.
    group: the unit no split may divide (patient or eye); defaults to ``id``.
    affine: optional 2x3 matrix mapping the CF onto the FFA (Isfahan alignment metadata).
    valid: optional mask image (nonzero = valid) on the CF grid, e.g. the overlap of a registered pair;
        loaded as the sample's ``valid`` mask, outside which losses and metrics ignore pixels.
    split: train | val | test when the layout itself fixes the split (a manifest's ``split`` column, the
        ``train/`` and ``test/`` folders of the UWF phases data); empty when a split is to be drawn.
    """

    id: str
    cf: Path | None = None
    ffa: Path | None = None
    category: str = ""
    group: str = ""
    affine: tuple | None = None
    split: str = ""
    valid: Path | None = None

    @property
    def split_group(self) -> str:
        return self.group or self.id


@dataclass
class PairSample:
    """Pixels of one pair: ``cf`` H x W x 3 uint8, ``ffa`` H x W uint8, ``masks`` name -> H x W uint8 {0,1}."""

    id: str
    cf: np.ndarray
    ffa: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    category: str = ""
