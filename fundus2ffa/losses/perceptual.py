"""Perceptual (VGG19 feature) loss, shared by the saliency cGAN and pix2pixHD (and Fundus2Video).

- Li et al. (2020) section 2.4: MSE of VGG19 phi_{5,4} (relu5_4) features, weight 0.001, ImageNet
  normalisation, grey FFA replicated to three channels (reference_spec 2.4 defaults).
- pix2pixHD: L1 of relu1_1..relu5_1 with layer weights 1/32, 1/16, 1/8, 1/4, 1, weight 10. The original
  code feeds [-1, 1] images without ImageNet normalisation (pitfall B3); ``imagenet_norm: false``
  reproduces that, the default normalises.

The frozen backbone is not a registered submodule: it stays out of ``state_dict`` (checkpoints do
not carry 80 MB of ImageNet weights), out of optimisers and out of DDP's parameter list, and still
follows the module across ``.to(device)`` / dtype changes.
"""

import torch
import torch.nn.functional as F

from fundus2ffa.losses.base import LossInputs, LossTerm
from fundus2ffa.losses.sign_l1 import sign_l1
from fundus2ffa.nets.backbones.vgg import load_vgg19

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PerceptualLoss(LossTerm):
    """Weighted sum over ``layers`` of the distance between VGG19 features of fake and real.

    Args:
        weight: weight of the term in the generator objective.
        layers: VGG19 layer names (``relu5_4`` for Li et al., relu1_1..relu5_1 for pix2pixHD).
        layer_weights: one weight per layer (default all 1).
        distance: mse | l1 (mean over the feature map, i.e. divided by its size).
        imagenet_norm: map [-1, 1] to [0, 1] and normalise with ImageNet statistics (default); false
            feeds the raw [-1, 1] tensor as pix2pixHD's code does.
        weights: VGG19 weight source: a file, torchvision, timm or random (see nets/backbones/vgg.py).
        conv: native | winograd: how the VGG's convolutions of 256+ channels are computed (same maths;
            nets/backbones/vgg.py, issue 24).
        lean_backward: keep for backward only what the gradient to the fake needs (ReLU masks and pool
            positions instead of activations, nets/blocks/frozen_backward.py; with ``distance: l1`` the sign
            of each feature difference, losses/sign_l1.py): the same loss and gradient,
            about a quarter of the VGG's memory for backward (issue 24). Off by default.
    """

    def __init__(
        self,
        weight: float = 1.0,
        layers=("relu5_4",),
        layer_weights=None,
        distance: str = "mse",
        imagenet_norm: bool = True,
        weights: str | None = None,
        conv: str = "native",
        lean_backward: bool = False,
    ):
        super().__init__(weight)
        if distance not in ("mse", "l1"):
            raise ValueError(f"loss.perceptual.distance must be mse or l1, got {distance!r}")
        self.layers = list(layers)
        self.layer_weights = [1.0] * len(self.layers) if layer_weights is None else [float(w) for w in layer_weights]
        if len(self.layer_weights) != len(self.layers):
            raise ValueError(f"loss.perceptual.layer_weights needs one weight per layer ({len(self.layers)}), got {len(self.layer_weights)}")
        # lean_backward's L1 keeps the int8 sign of each difference, not the float difference (losses/sign_l1.py)
        self.distance = F.mse_loss if distance == "mse" else sign_l1 if lean_backward else F.l1_loss
        self.imagenet_norm = imagenet_norm
        # Built only when the term is active, so a weight-0 ablation needs no weights file.
        backbone = load_vgg19(self.layers, weights, conv=conv, lean_backward=lean_backward) if self.active else None
        object.__setattr__(self, "backbone", backbone)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self.backbone is not None:
            self.backbone._apply(fn, *args, **kwargs)
        return self

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] N x C x H x W (C 1 or 3) -> the backbone's input."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.imagenet_norm:
            x = ((x + 1.0) * 0.5 - self.mean) / self.std
        return x

    def features_distance(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """The loss between two images (usable outside the LossInputs call shape)."""
        # layer by layer, each layer's term as soon as both features exist (VGG19Features.paired: less alive at once)
        values = {name: self.distance(f, r) for name, f, r in self.backbone.paired(self.prepare(fake), self.prepare(real))}
        return torch.stack([w * values[n] for n, w in zip(self.layers, self.layer_weights)]).sum()

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return self.features_distance(inputs.fake, inputs.real)
