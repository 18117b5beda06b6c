"""Readers of on-disk (and in-memory) layouts, all implementing :class:`Reader`: Isfahan MISP, paired
folders / manifests, the two-phase UWF eyes (as pairs and as videos), the Fundus2Video CSV, the synthetic
retina (pairs and videos). Hydra configs name them by ``_target_`` (e.g. ``fundus2ffa.data.readers.IsfahanMISP``).
"""

from fundus2ffa.data.readers.base import PairReader, Reader
from fundus2ffa.data.readers.folder import PairedFolder
from fundus2ffa.data.readers.isfahan import IsfahanMISP
from fundus2ffa.data.readers.synthetic import SyntheticPairs, SyntheticVideos
from fundus2ffa.data.readers.uwf_phases import UWFEye, UWFPhases
from fundus2ffa.data.readers.video import FFAVideoCSV, UWFVideo

__all__ = [
    "FFAVideoCSV", "IsfahanMISP", "PairReader", "PairedFolder", "Reader", "SyntheticPairs", "SyntheticVideos",
    "UWFEye", "UWFPhases", "UWFVideo",
]
