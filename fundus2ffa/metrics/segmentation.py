"""Segmentation overlap: the Dice coefficient per image, restricted to a field of view.

Dice = 2 |P and G| / (|P| + |G|), computed per image and per foreground class, then averaged; an image
where prediction and ground truth are both empty scores 1 (nothing to find, nothing found).
"""

import torch


def dice_per_image(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, num_classes: int = 2) -> torch.Tensor:
    """N Dice scores (mean over foreground classes 1..K-1) of N x H x W integer label maps."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    valid = torch.ones_like(target, dtype=torch.bool) if valid is None else valid.bool()
    scores = []
    for c in range(1, max(2, num_classes)):
        p = ((pred == c) & valid).flatten(1).float()
        g = ((target == c) & valid).flatten(1).float()
        inter, total = (p * g).sum(1), p.sum(1) + g.sum(1)
        scores.append(torch.where(total > 0, 2 * inter / total.clamp_min(1e-12), torch.ones_like(total)))
    return torch.stack(scores).mean(0)
