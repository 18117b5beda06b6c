"""Trivial predictors scored beside every model, so a number says what it means (issue 11 item 4).

A translation model is only worth its PSNR/SSIM if it beats predictors that know nothing about
angiography. On four real pairs a briefly trained pix2pix scored 14.2 dB while a constant image at the
FFA mean scored 24.4 dB, and nothing in the output said so. Two baselines, fitted on the training pairs
only and scored on the same test images with the same metrics as the model
(:func:`fundus2ffa.metrics.evaluation.evaluation_scores`):

* ``constant``: every pixel at the mean intensity of the training FFAs (inside their ``valid`` masks
  where the pairs carry one);
* ``linear``: a per-pixel affine map of the CF channels, ``ffa = w_r r + w_g g + w_b b + c``, fitted by
  least squares over all training pixels (the best any model can do without looking at neighbours).

Both are computed on the evaluation transform's images (the resolution the model is scored at).
"""

import numpy as np
import torch
from torch.utils.data import DataLoader

from fundus2ffa.data.dataset import FFADataset
from fundus2ffa.metrics.evaluation import evaluation_scores
from fundus2ffa.metrics.image import MetricTable

BASELINES = ("constant", "linear")


def _train_pixels(dataset: FFADataset):
    """Yields (cf 3 x P, ffa P) of the training pixels (inside ``valid`` where given), in [-1, 1]."""
    for index in range(len(dataset)):
        item = dataset[index]
        cf, ffa = item["cf"].reshape(3, -1).double(), item["ffa"][0].reshape(-1).double()
        if "valid" in item:
            keep = item["valid"][0].reshape(-1) > 0
            cf, ffa = cf[:, keep], ffa[keep]
        yield cf, ffa


def fit_baselines(datamodule) -> dict:
    """{'mean': float, 'weights': [w_r, w_g, w_b, c]} from the training pairs of ``datamodule``."""
    train = datamodule.datasets["train"]
    dataset = FFADataset(
        train.reader, train.records, datamodule.eval_transform, datamodule.preprocess, train=False,
        kind=datamodule.kind, km=datamodule.km, cache=False,
    )
    gram = torch.zeros(4, 4, dtype=torch.float64)
    moment = torch.zeros(4, dtype=torch.float64)
    total, count = 0.0, 0
    for cf, ffa in _train_pixels(dataset):
        design = torch.cat([cf, torch.ones(1, cf.shape[1], dtype=torch.float64)])
        gram += design @ design.T
        moment += design @ ffa
        total += float(ffa.sum())
        count += ffa.numel()
    if count == 0:
        raise ValueError("no training pixels to fit the baselines on (empty train split or empty valid masks)")
    weights = torch.linalg.lstsq(gram, moment[:, None]).solution[:, 0]
    return {"mean": total / count, "weights": weights.tolist()}


def predict_baseline(name: str, fitted: dict, cf: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W prediction in [-1, 1] of baseline ``name`` for CF N x 3 x H x W."""
    if name == "constant":
        return torch.full_like(cf[:, :1], fitted["mean"])
    weights = torch.as_tensor(fitted["weights"], dtype=cf.dtype, device=cf.device)
    return (torch.einsum("nchw,c->nhw", cf, weights[:3]) + weights[3])[:, None].clamp(-1.0, 1.0)


@torch.no_grad()
def score_baselines(datamodule, metrics: dict | None = None, stage: str = "test") -> dict:
    """{'constant': {psnr: ..., ...}, 'linear': {...}, 'fit': {...}} on ``stage``'s images, aggregated as
    a model's metrics are."""

    fitted = fit_baselines(datamodule)
    tables = {name: MetricTable() for name in BASELINES}
    loader = DataLoader(datamodule.datasets[stage], batch_size=datamodule.eval_batch_size, shuffle=False, num_workers=0)
    for batch in loader:
        for name in BASELINES:
            prediction = predict_baseline(name, fitted, batch["cf"])
            tables[name].add(batch["id"], batch.get("category"), evaluation_scores(prediction, batch, metrics))
    out = {name: MetricTable.aggregate(table.rows) for name, table in tables.items()}
    out["fit"] = {"train_ffa_mean": fitted["mean"], "linear_weights_rgb_bias": fitted["weights"]}
    return out
