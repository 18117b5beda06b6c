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

Two more say what PSNR/SSIM and the vessel Dice reward (issue 22: on the UWF eyes pix2pix beat both
predictors above on PSNR/SSIM while drawing dark fields with faint strokes, and a plain morphological
filter reached vessel Dice 0.39 where the model got 0.18):

* ``blur``: the linear map, Gaussian-blurred with the sigma (of :data:`BLUR_SIGMAS`, px at 256 px, scaled
  with the image) that gives the best mean PSNR on the training pairs. A model that does not beat it on
  PSNR/SSIM is rewarded for blur, not for angiography;
* ``structure``: the CF's vessel map, rendered as bright vessels on a dark ground: the black top-hat of
  the CF green channel (closing minus image: thin dark structures), its disc diameter (of
  :data:`STRUCTURE_DIAMETERS`, fractions of the image side) chosen for the best mean vessel Dice on the
  training pairs, mapped to FFA intensity by an affine least-squares fit on the training pixels (slope
  kept positive: vessels bright). A model that does not beat its vessel Dice draws less vessel tree than
  a filter.

All are computed on the evaluation transform's images (the resolution the model is scored at).
"""

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fundus2ffa.data.dataset import FFADataset
from fundus2ffa.metrics.convert import to_uint8, to_unit
from fundus2ffa.metrics.evaluation import evaluation_scores
from fundus2ffa.metrics.image import MetricTable
from fundus2ffa.metrics.structure import dice as structure_dice
from fundus2ffa.metrics.structure import vessel_map

BASELINES = ("constant", "linear", "blur", "structure")
BLUR_SIGMAS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # px at a 256 px image; scaled with the shorter side
STRUCTURE_DIAMETERS = (1 / 64, 1 / 32, 1 / 16)  # black top-hat disc, fraction of the shorter side (odd, >= 3 px)


def _train_pixels(dataset: FFADataset):
    """Yields (cf 3 x P, ffa P) of the training pixels (inside ``valid`` where given), in [-1, 1]."""
    for index in range(len(dataset)):
        item = dataset[index]
        cf, ffa = item["cf"].reshape(3, -1).double(), item["ffa"][0].reshape(-1).double()
        if "valid" in item:
            keep = item["valid"][0].reshape(-1) > 0
            cf, ffa = cf[:, keep], ffa[keep]
        yield cf, ffa


def training_split_at_eval(datamodule) -> FFADataset:
    """The training pairs under the evaluation transform (the images the model is scored at)."""
    train = datamodule.datasets["train"]
    return FFADataset(
        train.reader, train.records, datamodule.eval_transform, datamodule.preprocess, train=False,
        kind=datamodule.kind, km=datamodule.km, cache=False,
    )


def training_targets(datamodule) -> list[torch.Tensor]:
    """The training split's FFA targets (1 x H x W in [-1, 1]) at the evaluation size (a realism reference)."""
    dataset = training_split_at_eval(datamodule)
    return [dataset[i]["ffa"][:1] for i in range(len(dataset))]


def fit_baselines(datamodule) -> dict:
    """{'mean', 'weights' [w_r, w_g, w_b, c], 'blur_sigma_px', 'structure': {...}} from the training pairs."""
    dataset = training_split_at_eval(datamodule)
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
    fitted = {"mean": total / count, "weights": weights.tolist()}
    items = [dataset[i] for i in range(len(dataset))]
    fitted["blur_sigma"] = _fit_blur(fitted, items)
    fitted["structure"] = _fit_structure(items)
    return fitted


def _batch(item: dict) -> dict:
    return {k: v[None] for k, v in item.items() if isinstance(v, torch.Tensor)}


def _psnr(fake: torch.Tensor, real: torch.Tensor, valid: torch.Tensor | None) -> float:
    """PSNR as metrics/image.py scores it (8-bit [0, 1] images, inside ``valid``), without its SSIM."""
    err = (to_unit(fake, quantize=True) - to_unit(real, quantize=True)) ** 2
    weight = torch.ones_like(err) if valid is None else valid.float().expand_as(err)
    mse = float((err * weight).sum() / weight.sum().clamp_min(1.0))
    return 10.0 * float(np.log10(1.0 / max(mse, 1e-10)))


def _fit_blur(fitted: dict, items: list[dict]) -> float:
    """The sigma (fraction of the shorter side) of :data:`BLUR_SIGMAS` with the best mean training PSNR."""
    best, best_psnr = 0.0, -float("inf")
    for sigma in BLUR_SIGMAS:
        scores = []
        for item in items:
            batch = _batch(item)
            fake = predict_baseline("blur", {**fitted, "blur_sigma": sigma / 256}, batch["cf"])
            scores.append(_psnr(fake, batch["ffa"], batch.get("valid")))
        if np.mean(scores) > best_psnr:
            best, best_psnr = sigma / 256, float(np.mean(scores))
    return best


def tophat(cf: torch.Tensor, diameter_fraction: float) -> torch.Tensor:
    """N x 1 x H x W float in [0, 1]: the black top-hat of the CF green channel (thin dark structures:
    vessels bright), disc diameter ``diameter_fraction`` of the shorter side (odd, at least 3 px)."""
    green = to_uint8(cf[:, 1:2]).cpu().numpy()
    side = max(3, int(round(diameter_fraction * min(cf.shape[-2:]))) | 1)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    out = np.stack([cv2.morphologyEx(g[0], cv2.MORPH_BLACKHAT, disc) for g in green])[:, None]
    return torch.from_numpy(out.astype(np.float32) / 255.0).to(cf.device)


def _fit_structure(items: list[dict]) -> dict:
    """Top-hat diameter with the best mean training vessel Dice, then FFA = slope * top-hat + offset by
    least squares over the training pixels (inside ``valid``); a slope <= 0 falls back to matching the
    FFA's mean and spread (vessels stay bright)."""
    best = {"diameter": STRUCTURE_DIAMETERS[0], "train_vessel_dice": -1.0}
    for fraction in STRUCTURE_DIAMETERS:
        dice = []
        for item in items:
            batch = _batch(item)
            region = batch.get("valid") if batch.get("fov") is None else batch["fov"] * batch.get("valid", 1)
            inside = None if region is None else region[0, 0].numpy() > 0
            hat = vessel_map(to_uint8(tophat(batch["cf"], fraction) * 2 - 1)[0, 0].numpy(), inside)
            real = vessel_map(to_uint8(batch["ffa"][:, :1])[0, 0].numpy(), inside)
            dice.append(structure_dice(hat, real, inside))  # the vessel Dice of metrics/structure.py
        if np.mean(dice) > best["train_vessel_dice"]:
            best = {"diameter": fraction, "train_vessel_dice": float(np.mean(dice))}
    xs, ys = [], []
    for item in items:
        batch = _batch(item)
        x, y = tophat(batch["cf"], best["diameter"]).reshape(-1).double(), batch["ffa"].reshape(-1).double()
        if "valid" in batch:
            keep = batch["valid"].reshape(-1) > 0
            x, y = x[keep], y[keep]
        xs.append(x)
        ys.append(y)
    x, y = torch.cat(xs), torch.cat(ys)
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()).square().sum()).clamp_min(1e-12))
    if slope <= 0:
        slope = float(y.std() / x.std().clamp_min(1e-12))
    return {**best, "slope": slope, "offset": float(y.mean() - slope * x.mean())}


def predict_baseline(name: str, fitted: dict, cf: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W prediction in [-1, 1] of baseline ``name`` for CF N x 3 x H x W."""
    if name == "constant":
        return torch.full_like(cf[:, :1], fitted["mean"])
    if name == "structure":
        structure = fitted["structure"]
        return (tophat(cf, structure["diameter"]) * structure["slope"] + structure["offset"]).clamp(-1.0, 1.0)
    weights = torch.as_tensor(fitted["weights"], dtype=cf.dtype, device=cf.device)
    linear = (torch.einsum("nchw,c->nhw", cf, weights[:3]) + weights[3])[:, None].clamp(-1.0, 1.0)
    if name == "linear" or not fitted.get("blur_sigma"):
        return linear
    sigma = fitted["blur_sigma"] * min(cf.shape[-2:])
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=cf.dtype, device=cf.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    pad = (radius, radius, radius, radius)
    blurred = F.conv2d(F.pad(linear, pad, mode="replicate"), kernel.view(1, 1, 1, -1))
    blurred = F.conv2d(blurred, kernel.view(1, 1, -1, 1))
    return blurred


@torch.no_grad()
def score_baselines(datamodule, metrics: dict | None = None, stage: str = "test", realism=None) -> dict:
    """{'constant': {psnr: ..., ...}, 'linear': {...}, 'blur': {...}, 'structure': {...}, 'fit': {...}} on
    ``stage``'s images, aggregated as a model's metrics are; with ``realism`` (a metrics/realism.Realism
    holding the reference sets the model was scored against) also each baseline's FID/KID."""

    fitted = fit_baselines(datamodule)
    tables = {name: MetricTable() for name in BASELINES}
    features = {name: [] for name in BASELINES}
    loader = DataLoader(datamodule.datasets[stage], batch_size=datamodule.eval_batch_size, shuffle=False, num_workers=0)
    for batch in loader:
        for name in BASELINES:
            prediction = predict_baseline(name, fitted, batch["cf"])
            tables[name].add(batch["id"], batch.get("category"), evaluation_scores(prediction, batch, metrics))
            if realism is not None:
                features[name].append(realism.features(prediction))
    out = {name: MetricTable.aggregate(table.rows) for name, table in tables.items()}
    if realism is not None:
        for name in BASELINES:
            out[name].update(realism.scores(torch.cat(features[name])))
    structure = fitted["structure"]
    out["fit"] = {
        "train_ffa_mean": fitted["mean"], "linear_weights_rgb_bias": fitted["weights"],
        "blur_sigma_px": fitted["blur_sigma"] * datamodule.image_size,
        "structure_tophat_px": max(3, int(round(structure["diameter"] * datamodule.image_size)) | 1),
        "structure_slope_offset": [structure["slope"], structure["offset"]],
        "structure_train_vessel_dice": structure["train_vessel_dice"],
    }
    return out
