"""Data: readers of on-disk layouts, the synthetic retina, paired transforms and the datamodule.

Readers (``fundus2ffa.data.readers``) turn a layout into :class:`PairRecord` lists and load one pair as
a :class:`PairSample` of uint8 arrays; transforms turn that into tensors in [-1, 1]; the datamodule
splits records and builds loaders.
"""

from fundus2ffa.data.records import PairRecord, PairSample

__all__ = ["PairRecord", "PairSample"]
