"""The one call shape every generator loss term shares.

A model fills a :class:`LossInputs` once per generator step and hands it to every term; a term reads
what it needs. Each term is an ``nn.Module`` with a ``weight`` from config; the model logs the
unweighted value as ``train/g_<name>`` and adds ``weight * value`` to the generator objective. A term
with weight 0 is skipped (that is how an ablation such as ``loss.saliency.weight=0`` removes it).
"""

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class LossInputs:
    """Everything a generator loss term may read.

    cf: the conditioning colour fundus, N x 3 x H x W in [-1, 1].
    real: the target FFA, N x C x H x W in [-1, 1].
    fake: the generated FFA (with gradient), same shape as ``real``.
    fov: field-of-view mask N x 1 x H x W in {0, 1}, or None.
    pred_fake: discriminator output on the fake pair, a list over scales of lists of features
        (the last is the patch map); None when no term needs it.
    pred_real: the same on the real pair, computed without gradient; None unless a term sets
        ``needs_pred_real`` (feature matching).
    extra: model-specific tensors (knowledge mask, previous frames, ...).
    """

    cf: torch.Tensor
    real: torch.Tensor
    fake: torch.Tensor
    fov: torch.Tensor | None = None
    pred_fake: list[list[torch.Tensor]] | None = None
    pred_real: list[list[torch.Tensor]] | None = None
    extra: dict = field(default_factory=dict)


class LossTerm(nn.Module):
    """A named, weighted generator loss term. Subclasses implement ``forward(inputs) -> scalar``."""

    #: set by subclasses that read the discriminator's output on the real pair
    needs_pred_real: bool = False
    #: set by subclasses that read the discriminator's output on the fake pair
    needs_pred_fake: bool = False

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = float(weight)

    @property
    def active(self) -> bool:
        return self.weight != 0.0

    def forward(self, inputs: LossInputs) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def restrict_to_valid(fake: torch.Tensor, real: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """The generated image with the real one pasted in outside ``valid`` (N x 1 x H x W, {0, 1}).

    A registered pair has a real FFA only inside its overlap mask (``python -m fundus2ffa.register``);
    outside it the "target" is black padding the generator must not learn. Handing every loss term (and
    the discriminator) this image instead of ``fake`` zeroes all contributions from outside the mask,
    whatever the term: pixel losses are exactly 0 there, feature, saliency and adversarial terms see
    identical real and fake pixels, and no gradient reaches the generator through them. Pixel means are
    still taken over the whole image, so a pair's pixel terms weigh in proportion to its valid area.
    """
    if valid is None:
        return fake
    valid = valid.to(fake.dtype)
    return fake * valid + real.detach() * (1.0 - valid)
