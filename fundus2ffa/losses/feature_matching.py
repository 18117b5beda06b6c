"""Discriminator feature matching of pix2pixHD (Wang et al., CVPR 2018, eq. 4; reference_spec 4.5 L_FM).

    L_FM = sum_scales sum_{intermediate layers i} (4 / (n_layers + 1)) * (1 / num_D) * L1(D_i(x, G(x)), D_i(x, y))

"Intermediate layers" are every block feature but the last (the patch map): ``n_layers + 1`` of them per
scale (4 with n_layers 3, so the layer factor is 1). The real features are targets: they carry no
gradient (PairedGAN computes ``pred_real`` under ``no_grad`` because this term sets
``needs_pred_real``; they are detached here as well, so any caller is safe). The mean L1 over each
feature map (``F.l1_loss`` default) is what pix2pixHD computes.

pix2pixHD multiplies by lambda_feat (10) inside the term; here that factor is the term's ``weight``
(10 in conf/loss/feature_matching.yaml), so the logged ``train/g_feature_matching`` is the unweighted
sum and the objective gets ``weight * value``, the same total.
"""

import torch
import torch.nn.functional as F

from fundus2ffa.losses.base import LossInputs, LossTerm
from fundus2ffa.losses.sign_l1 import sign_l1


def feature_matching(
    pred_fake: list[list[torch.Tensor]],
    pred_real: list[list[torch.Tensor]],
    layer_weight: float | None = None,
    scale_weight: float | None = None,
    lean_backward: bool = False,
) -> torch.Tensor:
    """The pix2pixHD feature-matching sum for discriminator outputs in the project's list-of-lists form.

    layer_weight defaults to 4 / (number of intermediate layers), i.e. 4 / (n_layers + 1);
    scale_weight to 1 / number of scales. lean_backward: each L1 keeps the int8 sign of its difference
    for backward instead of the float difference (losses/sign_l1.py; the same value and gradient).
    """
    l1 = sign_l1 if lean_backward else F.l1_loss
    if not pred_fake or len(pred_fake) != len(pred_real):
        raise ValueError(
            f"feature matching needs the same number of scales for fake and real, got {len(pred_fake)} and {len(pred_real)}"
        )
    num_scales = len(pred_fake)
    scale_weight = 1.0 / num_scales if scale_weight is None else float(scale_weight)
    terms = []
    for fake_scale, real_scale in zip(pred_fake, pred_real):
        n_inter = len(fake_scale) - 1
        if n_inter < 1:
            raise ValueError(
                "feature matching needs a discriminator that returns intermediate features (more than the patch map)"
            )
        weight = (4.0 / n_inter if layer_weight is None else float(layer_weight)) * scale_weight
        for fake_feat, real_feat in zip(fake_scale[:-1], real_scale[:-1]):
            terms.append(weight * l1(fake_feat, real_feat.detach()))
    return torch.stack(terms).sum()


class FeatureMatching(LossTerm):
    """pix2pixHD's L_FM as a loss term (weight = lambda_feat, 10).

    Args:
        weight: lambda_feat (10 in pix2pixHD and Fundus2Video).
        layer_weight: per-layer factor; None gives pix2pixHD's 4 / (n_layers + 1).
        scale_weight: per-scale factor; None gives pix2pixHD's 1 / num_D.
        lean_backward: keep the int8 sign of each feature difference for backward, not the float
            difference (losses/sign_l1.py): the same loss and gradient, a quarter of the memory (issue 24).
    """

    needs_pred_real = True
    needs_pred_fake = True

    def __init__(self, weight: float = 10.0, layer_weight: float | None = None, scale_weight: float | None = None,
                 lean_backward: bool = False):
        super().__init__(weight)
        self.layer_weight = layer_weight
        self.scale_weight = scale_weight
        self.lean_backward = bool(lean_backward)

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        if inputs.pred_fake is None or inputs.pred_real is None:
            raise ValueError(
                "FeatureMatching needs the discriminator outputs on the fake and the real pair (pred_fake, pred_real)"
            )
        return feature_matching(inputs.pred_fake, inputs.pred_real, self.layer_weight, self.scale_weight, self.lean_backward)
