"""pix2pixHD's VGG loss on Fundus2Video's 3-frame windows (reference_spec 4.5 "L_VGG", pitfalls F5, B3).

The code feeds the generated window, three consecutive grey frames stacked as channels, to VGG19 as if
it were an RGB image, in [-1, 1] without ImageNet normalisation (B3): relu1_1..relu5_1, L1, layer
weights 1/32, 1/16, 1/8, 1/4, 1, times lambda_feat 10. ``frames: stack`` (default) keeps that;
``frames: separate`` scores every frame on its own (each grey frame replicated to RGB, then averaged over
frames), the per-frame reading of a perceptual loss (F5). Everything else is
:class:`~fundus2ffa.losses.perceptual.PerceptualLoss`.
"""

import torch

from fundus2ffa.losses.base import LossInputs
from fundus2ffa.losses.perceptual import PerceptualLoss

FRAME_MODES = ("stack", "separate")


class WindowPerceptualLoss(PerceptualLoss):
    """:class:`PerceptualLoss` with ``frames: stack | separate`` for multi-frame windows.

    Args (besides PerceptualLoss's): frames: stack (the 3 frames as RGB, the code) | separate.
    """

    def __init__(self, *args, frames: str = "stack", **kwargs):
        super().__init__(*args, **kwargs)
        if frames not in FRAME_MODES:
            raise ValueError(f"loss.vgg.frames must be one of {'|'.join(FRAME_MODES)}, got {frames!r}")
        self.frames = frames

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        fake, real = inputs.fake, inputs.real
        if self.frames == "separate" or fake.shape[1] not in (1, 3):
            fake = fake.reshape(-1, 1, *fake.shape[-2:])
            real = real.reshape(-1, 1, *real.shape[-2:])
        return self.features_distance(fake, real)
