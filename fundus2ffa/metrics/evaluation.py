"""The per-image scores of one evaluated batch, shared by every model and every trivial baseline
(metrics/baselines.py), so that models and baselines are scored alike."""

import torch

from fundus2ffa.metrics.image import image_quality
from fundus2ffa.metrics.structure import structure_agreement


def evaluation_scores(fake: torch.Tensor, batch: dict, metrics: dict | None = None) -> dict[str, torch.Tensor]:
    """Per-image val/test scores of a generated batch: PSNR/SSIM (whole and FOV) and, unless
    ``metrics.structure`` is false, vessel and leakage Dice; a batch ``valid`` mask (registered pairs)
    excludes the pixels outside it from all of them."""
    metrics = metrics or {}
    valid = batch.get("valid")
    scores = image_quality(fake, batch["ffa"], batch.get("fov"), quantize=metrics.get("quantize", True), valid=valid)
    if metrics.get("structure", True):
        region = batch.get("fov") if valid is None else (valid if batch.get("fov") is None else batch["fov"] * valid)
        scores.update(structure_agreement(fake, batch["ffa"], region))
    return scores
