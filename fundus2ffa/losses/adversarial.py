"""Adversarial losses: vanilla (BCE, the -log D of Goodfellow/pix2pix/Li et al.), LSGAN and hinge.

One object serves both players: ``forward`` is the generator's term (a :class:`LossTerm`), and
``discriminator_terms`` gives the discriminator its real and fake terms. Discriminator outputs are
lists over scales of feature lists (see ``fundus2ffa.nets.discriminators``); every scale's patch map
counts, averaged over scales as in pix2pixHD.
"""

import torch
import torch.nn.functional as F

from fundus2ffa.losses.base import LossInputs, LossTerm

GAN_MODES = ("vanilla", "lsgan", "hinge")


class AdversarialLoss(LossTerm):
    """GAN loss term.

    Args:
        weight: weight of the generator's adversarial term.
        mode: vanilla | lsgan | hinge.
        real_label, fake_label: targets of vanilla/LSGAN. Fundus2Angio's paper writes a fake label of
            -1, its code 0 (reference_spec 3.4); the default follows the code.
    """

    needs_pred_fake = True

    def __init__(self, weight: float = 1.0, mode: str = "vanilla", real_label: float = 1.0, fake_label: float = 0.0):
        super().__init__(weight)
        if mode not in GAN_MODES:
            raise ValueError(f"loss.gan.mode must be one of {'|'.join(GAN_MODES)}, got {mode!r}")
        self.mode = mode
        self.real_label = float(real_label)
        self.fake_label = float(fake_label)

    def _single(self, logits: torch.Tensor, target_real: bool, for_discriminator: bool) -> torch.Tensor:
        if self.mode == "hinge":
            if not for_discriminator:
                return -logits.mean()
            return F.relu(1.0 - logits).mean() if target_real else F.relu(1.0 + logits).mean()
        label = self.real_label if target_real else self.fake_label
        target = torch.full_like(logits, label)
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.mse_loss(logits, target)

    def loss(self, prediction: list[list[torch.Tensor]], target_real: bool, for_discriminator: bool) -> torch.Tensor:
        """Mean over scales of the loss of each scale's patch map (the last feature)."""
        terms = [self._single(scale[-1], target_real, for_discriminator) for scale in prediction]
        return torch.stack(terms).mean()

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return self.loss(inputs.pred_fake, target_real=True, for_discriminator=False)

    def discriminator_terms(
        self, pred_real: list[list[torch.Tensor]], pred_fake: list[list[torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """{'real': ..., 'fake': ...}; the discriminator minimises 0.5 * (real + fake) as pix2pix."""
        return {
            "real": self.loss(pred_real, target_real=True, for_discriminator=True),
            "fake": self.loss(pred_fake, target_real=False, for_discriminator=True),
        }
