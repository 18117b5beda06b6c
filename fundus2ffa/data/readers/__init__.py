"""Readers of on-disk (and in-memory) CF/FFA layouts.

Each turns a layout into :class:`~fundus2ffa.data.records.PairRecord` lists and loads one pair as uint8
arrays; Hydra configs name them by ``_target_`` (e.g. ``fundus2ffa.data.readers.IsfahanMISP``).
"""

from fundus2ffa.data.readers.base import PairReader
from fundus2ffa.data.readers.folder import PairedFolder
from fundus2ffa.data.readers.isfahan import IsfahanMISP
from fundus2ffa.data.readers.synthetic import SyntheticPairs
from fundus2ffa.data.readers.uwf_phases import UWFEye, UWFPhases

__all__ = ["IsfahanMISP", "PairReader", "PairedFolder", "SyntheticPairs", "UWFEye", "UWFPhases"]
