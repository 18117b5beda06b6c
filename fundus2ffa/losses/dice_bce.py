"""Dice + cross-entropy segmentation loss for downstream transfer (reference_spec 4.9: "fine-tune with
Dice + BCE").

One channel (binary): BCE on the logits plus the soft Dice of sigmoid(logits). K > 1 channels: cross-
entropy plus the soft Dice of softmax(logits) averaged over the foreground classes 1..K-1. Pixels outside
``valid`` (e.g. the field of view) count in neither term. Returns the named terms and their weighted sum,
so callers log each term as the GAN modules do.
"""

import torch
import torch.nn.functional as F
from torch import nn


class DiceBCELoss(nn.Module):
    """``forward(logits N x K x H x W, target N x H x W int, valid N x H x W bool | None)`` -> dict."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0):
        super().__init__()
        self.bce_weight, self.dice_weight, self.smooth = float(bce_weight), float(dice_weight), float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        valid = torch.ones_like(target, dtype=torch.bool) if valid is None else valid.bool()
        weight = valid.float()
        count = weight.sum().clamp_min(1.0)
        if logits.shape[1] == 1:
            truth = (target > 0).float()
            bce = (F.binary_cross_entropy_with_logits(logits[:, 0].float(), truth, reduction="none") * weight).sum() / count
            probs, truths = [torch.sigmoid(logits[:, 0].float())], [truth]
        else:
            bce = (F.cross_entropy(logits.float(), target.long(), reduction="none") * weight).sum() / count
            soft = torch.softmax(logits.float(), dim=1)
            probs = [soft[:, c] for c in range(1, logits.shape[1])]
            truths = [(target == c).float() for c in range(1, logits.shape[1])]
        dice_terms = []
        for prob, truth in zip(probs, truths):
            inter = (prob * truth * weight).flatten(1).sum(1)
            total = ((prob + truth) * weight).flatten(1).sum(1)
            dice_terms.append(1.0 - (2 * inter + self.smooth) / (total + self.smooth))
        dice = torch.stack(dice_terms).mean()
        return {"bce": bce, "dice": dice, "total": self.bce_weight * bce + self.dice_weight * dice}
