"""Lightning callbacks: checkpoints, sample grids, RNG state in checkpoints, step timing."""

from fundus2ffa.callbacks.checkpoint import RunCheckpoint
from fundus2ffa.callbacks.rng_state import RNGState
from fundus2ffa.callbacks.samples import SampleGrid

__all__ = ["RNGState", "RunCheckpoint", "SampleGrid"]
