"""Pixel reconstruction losses: L1 (pix2pix, Li et al. weight 100) and MSE (Fundus2Angio weight 10)."""

import torch
import torch.nn.functional as F

from fundus2ffa.losses.base import LossInputs, LossTerm


class L1(LossTerm):
    """Mean absolute error between generated and real FFA over the whole image."""

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return F.l1_loss(inputs.fake, inputs.real)


class MSE(LossTerm):
    """Mean squared error between generated and real FFA over the whole image."""

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return F.mse_loss(inputs.fake, inputs.real)
