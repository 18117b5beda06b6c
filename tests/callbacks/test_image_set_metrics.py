"""The FID/KID callback: logs set-level scores, drops DDP duplicates by id, gathers across ranks."""

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader

from fundus2ffa.callbacks.fid import ImageSetMetrics
from fundus2ffa.errors import ConfigError
from fundus2ffa.metrics.fid import frechet_distance, kernel_inception_distance
from fundus2ffa.metrics.inception import InceptionFeatures


class MeanFeatures(nn.Module):
    """A cheap stand-in for the Inception (the real one is tested in tests/metrics/test_fid.py)."""

    def forward(self, x):
        pooled = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), x.amax(dim=(2, 3))], 1)  # N x 9
        return torch.cat([pooled, pooled.square()], 1).repeat(1, 114)[:, :2048]


class Translator(L.LightningModule):
    def __init__(self, returns_fake: bool = False):
        super().__init__()
        self.shift = nn.Parameter(torch.tensor(0.3))
        self.returns_fake = returns_fake

    def translate(self, cf):
        if self.returns_fake:
            raise AssertionError("the callback must use the step's output, not translate again")
        return (cf[:, 1:2] + self.shift).clamp(-1, 1)

    def test_step(self, batch, batch_idx):
        if self.returns_fake:
            return {"fake": (batch["cf"][:, 1:2] + self.shift).clamp(-1, 1)}
        return None


def samples(n: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{"cf": torch.rand(3, 16, 16, generator=g) * 2 - 1, "ffa": torch.rand(1, 16, 16, generator=g) * 2 - 1,
             "id": f"eye{i:02d}"} for i in range(n)]


def run_test(items: list[dict], returns_fake: bool = False) -> dict:
    callback = ImageSetMetrics(kid_subsets=10)
    callback._extractor = InceptionFeatures(network=MeanFeatures())
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[callback], enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    return trainer.test(Translator(returns_fake), DataLoader(items, batch_size=3), verbose=False)[0]


def expected(items: list[dict]) -> tuple[float, float]:
    extractor = InceptionFeatures(network=MeanFeatures())
    cf = torch.stack([it["cf"] for it in items])
    ffa = torch.stack([it["ffa"] for it in items])
    real = extractor.features_from_model_range(ffa)
    fake = extractor.features_from_model_range((cf[:, 1:2] + 0.3).clamp(-1, 1))
    return frechet_distance(real, fake).item(), kernel_inception_distance(real, fake, subsets=10)[0].item()


def test_logs_fid_and_kid_of_the_whole_test_set():
    items = samples(7)
    scores = run_test(items)
    fid, kid = expected(items)
    assert scores["test/fid"] == pytest.approx(fid, rel=1e-5) and scores["test/fid"] > 0
    assert scores["test/kid"] == pytest.approx(kid, rel=1e-5, abs=1e-9)
    assert scores["test/fid_count"] == 7 and scores["test/kid_subset_size"] == 7  # min(50, N)


def test_duplicate_ids_count_once_and_the_step_output_is_reused():
    items = samples(6)
    padded = items + [items[0], items[1]]  # what a DistributedSampler adds to even out ranks
    scores = run_test(padded, returns_fake=True)
    assert scores["test/fid_count"] == 6
    assert scores["test/fid"] == pytest.approx(expected(items)[0], rel=1e-5)


def test_unknown_stage_is_a_config_error():
    with pytest.raises(ConfigError, match="stages"):
        ImageSetMetrics(stages=["train"])


def _gather_worker(rank: int, world: int, tmp: str) -> None:
    torch.set_num_threads(1)  # a forked child must not use the parent's OpenMP pool
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=world)
    try:
        # rank 0 holds eyes 0-2, rank 1 eyes 3-4 plus a padded repeat of eye 0
        ids = [["eye0", "eye1", "eye2"], ["eye3", "eye4", "eye0"]][rank]
        feats = torch.tensor([[float(i[-1])] * 4 for i in ids])
        store = {"ids": ids, "real": [feats], "fake": [feats + 10]}
        real, fake = ImageSetMetrics._gather(store)
        torch.save((real[:, 0].tolist(), fake[:, 0].tolist()), f"{tmp}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_features_are_gathered_across_ranks_without_duplicates(tmp_path):
    # fork: the workers need no re-import (spawning two fresh interpreters costs ~30 s on 2 cores)
    mp.start_processes(_gather_worker, args=(2, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert results[0] == results[1] == ([0.0, 1.0, 2.0, 3.0, 4.0], [10.0, 11.0, 12.0, 13.0, 14.0])
