"""Stores the random-number generators in checkpoints so that ``ckpt_path=`` resumes exactly.

Lightning restores weights, optimizers, schedulers and loop counters but not the RNG states, so a
resumed run would shuffle, crop and drop out differently from an uninterrupted one. This callback
saves the Python, NumPy, torch (CPU and CUDA) states with every checkpoint and restores them on
resume. Under DDP every rank is offset by its rank at fit start (conventions.md: seeds offset by rank
for noise and augmentation); the checkpoint holds rank 0's state.
"""

import random

import lightning as L
import numpy as np
import torch


class RNGState(L.Callback):
    def __init__(self):
        self._restored = False

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        # plain types and tensors only, so checkpoints stay loadable with torch.load(weights_only=True)
        numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}
        state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        random.setstate(state["python"])
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        self._restored = True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.world_size > 1 and not self._restored:
            seed = torch.initial_seed() % (2**31)
            L.seed_everything(seed + trainer.global_rank, workers=True, verbose=False)
