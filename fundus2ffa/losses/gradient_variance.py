"""Gradient-variance loss of Fundus2Video (Zhang et al., MICCAI 2024; reference_spec 4.5 "L_GV", F5).

The released code calls it ``seg_loss`` and weights it 5. It is the gradient-variance loss of
Abrahamyan et al. (ICIP 2022, "Gradient variance loss for structure-enhanced super-resolution"):

1. grey = 0.2989 c0 + 0.587 c1 + 0.114 c2 (an RGB-to-luma conversion; one-channel inputs are used as
   they are);
2. horizontal and vertical Sobel gradients (3x3 kernels, zero padding 1);
3. the gradient maps cut into non-overlapping ``patch_size`` x ``patch_size`` patches (12; a border
   that does not fill a patch is left out, as ``unfold`` does);
4. the (unbiased) variance of each patch;
5. MSE between the target's and the output's patch variances, for x plus for y.

Pitfall F5: Fundus2Video's generator emits three *consecutive frames* as its three channels, and the
code still applies the RGB-to-grey weights, so the loss sees a weighted temporal blend of the window.
``frames: mix`` (default) keeps that; ``frames: separate`` scores every channel (frame) as its own grey
image and averages, which is what a per-frame structure loss means.
"""

import torch
import torch.nn.functional as F

from fundus2ffa.losses.base import LossInputs, LossTerm

GREY_WEIGHTS = (0.2989, 0.587, 0.114)
FRAME_MODES = ("mix", "separate")


def sobel_kernels(dtype=torch.float32, device=None) -> torch.Tensor:
    """2 x 1 x 3 x 3: the horizontal (x) and vertical (y) Sobel kernels."""
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=dtype, device=device)
    return torch.stack([gx, gx.t()])[:, None]


def patch_gradient_variances(grey: torch.Tensor, patch_size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """N x 1 x H x W grey images -> per-patch variances of the x and y Sobel gradients, each N x P."""
    if grey.shape[-1] < patch_size or grey.shape[-2] < patch_size:
        raise ValueError(f"gradient variance needs images of at least {patch_size} x {patch_size} pixels, got {tuple(grey.shape[-2:])}")
    gradients = F.conv2d(grey, sobel_kernels(grey.dtype, grey.device), padding=1)  # N x 2 x H x W
    patches = F.unfold(gradients, patch_size, stride=patch_size)  # N x (2 * p * p) x P
    patches = patches.view(grey.shape[0], 2, patch_size * patch_size, -1)
    variances = patches.var(dim=2)  # N x 2 x P
    return variances[:, 0], variances[:, 1]


def to_grey(x: torch.Tensor, frames: str = "mix") -> torch.Tensor:
    """N x C x H x W -> grey images: (N) x 1 x H x W (``mix``, C = 3 or 1) or (N C) x 1 x H x W (``separate``)."""
    if frames == "separate" or x.shape[1] == 1:
        return x.reshape(-1, 1, *x.shape[-2:])
    if x.shape[1] != 3:
        raise ValueError(f"gradient variance frames=mix needs 1 or 3 channels, got {x.shape[1]} (use frames=separate)")
    w = torch.tensor(GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def gradient_variance_loss(fake: torch.Tensor, real: torch.Tensor, patch_size: int = 12, frames: str = "mix") -> torch.Tensor:
    """MSE of the patch gradient variances of ``real`` and ``fake`` for x plus for y (module docstring)."""
    var_fake_x, var_fake_y = patch_gradient_variances(to_grey(fake, frames), patch_size)
    var_real_x, var_real_y = patch_gradient_variances(to_grey(real, frames), patch_size)
    return F.mse_loss(var_fake_x, var_real_x.detach()) + F.mse_loss(var_fake_y, var_real_y.detach())


class GradientVariance(LossTerm):
    """L_GV as a loss term (weight 5 in Fundus2Video).

    Args:
        weight: 5 (the code's ``seg_loss`` weight).
        patch_size: side of the non-overlapping patches (12).
        frames: mix (the code: RGB-to-grey weights across the three frames, F5) | separate (each frame
            scored on its own, then averaged).
    """

    def __init__(self, weight: float = 5.0, patch_size: int = 12, frames: str = "mix"):
        super().__init__(weight)
        if frames not in FRAME_MODES:
            raise ValueError(f"loss.gradient_variance.frames must be one of {'|'.join(FRAME_MODES)}, got {frames!r}")
        if int(patch_size) < 2:
            raise ValueError(f"loss.gradient_variance.patch_size must be at least 2, got {patch_size}")
        self.patch_size, self.frames = int(patch_size), frames

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return gradient_variance_loss(inputs.fake, inputs.real, self.patch_size, self.frames)
