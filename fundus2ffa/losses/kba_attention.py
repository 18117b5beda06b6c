"""Supervision of the knowledge-boosted attention maps by the knowledge mask (reference_spec 4.8, [D]).

The attention heads of :class:`~fundus2ffa.nets.generators.fundus2video.Fundus2VideoGenerator` predict
A in [0, 1] from the CF and the previous window; during training the knowledge mask (KM), which needs
real FFA and therefore exists only in training, tells them where the angiogram changes:
``L_att = BCE(A, KM downsampled to A's size)``, weight 1, averaged over the attention stages.

Options: ``supervision: bce`` (default) | ``dice`` (1 - soft Dice, robust when the KM covers a small
area) | ``none`` (the attention is learnt only through the image losses); ``target_pool: area`` (the
fraction of KM pixels each attention cell covers: a soft target) | ``max`` (a cell is 1 if any pixel
is). Inputs: ``inputs.extra["attention"]`` ({stage: N x 1 x h x w}) and
``inputs.extra["knowledge_mask"]`` (N x 1 x H x W).
"""

import torch
import torch.nn.functional as F

from fundus2ffa.losses.base import LossInputs, LossTerm

SUPERVISIONS = ("bce", "dice", "none")
POOLS = ("area", "max")


def downsample_mask(mask: torch.Tensor, height: int, width: int, pool: str = "area") -> torch.Tensor:
    """N x 1 x H x W mask -> N x 1 x height x width: area average (soft) or max pooling."""
    mask = mask.float()
    if mask.shape[-2:] == (height, width):
        return mask
    if pool == "max":
        return F.adaptive_max_pool2d(mask, (height, width))
    return F.adaptive_avg_pool2d(mask, (height, width))


def dice_loss(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image, averaged (``eps`` smooths empty masks to a loss near 0 for A near 0)."""
    dims = tuple(range(1, prediction.dim()))
    intersection = (prediction * target).sum(dims)
    total = prediction.sum(dims) + target.sum(dims)
    return (1.0 - (2.0 * intersection + eps) / (total + eps)).mean()


class AttentionSupervision(LossTerm):
    """L_att (weight lambda_att = 1).

    Args:
        weight: lambda_att (1).
        supervision: bce | dice | none (weight 0 in effect; the term reports 0).
        target_pool: area | max (how the KM reaches the attention's resolution).
    """

    def __init__(self, weight: float = 1.0, supervision: str = "bce", target_pool: str = "area"):
        super().__init__(weight)
        if supervision not in SUPERVISIONS:
            raise ValueError(f"loss.attention.supervision must be one of {'|'.join(SUPERVISIONS)}, got {supervision!r}")
        if target_pool not in POOLS:
            raise ValueError(f"loss.attention.target_pool must be one of {'|'.join(POOLS)}, got {target_pool!r}")
        self.supervision, self.target_pool = supervision, target_pool

    @property
    def active(self) -> bool:
        return self.weight != 0.0 and self.supervision != "none"

    def targets(self, attention: dict, mask: torch.Tensor) -> dict:
        """The KM at every stage's resolution (also what ``kba_mode: oracle_train`` feeds)."""
        return {stage: downsample_mask(mask, *a.shape[-2:], pool=self.target_pool) for stage, a in attention.items()}

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        attention = inputs.extra.get("attention") or {}
        mask = inputs.extra.get("knowledge_mask")
        if not attention or mask is None:
            raise ValueError("AttentionSupervision needs extra['attention'] (the generator's KBA maps) and extra['knowledge_mask']")
        terms = []
        for stage, target in self.targets(attention, mask).items():
            a = attention[stage]
            if self.supervision == "bce":
                # BCE in float32 outside autocast (binary_cross_entropy refuses half precision)
                with torch.autocast(device_type=a.device.type, enabled=False):
                    terms.append(F.binary_cross_entropy(a.float().clamp(1e-6, 1 - 1e-6), target.float()))
            else:
                terms.append(dice_loss(a.float(), target.float()))
        return torch.stack(terms).mean()
