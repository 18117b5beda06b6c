"""The one place where model-range tensors ([-1, 1]) become metric ranges ([0, 1], uint8).

The official Fundus2Video metrics ran on [-1, 1] tensors with a peak of 1, which costs 6.02 dB of
PSNR (reference_spec 6.1, pitfall F6). Every metric here converts explicitly first.
"""

import torch


def to_unit(x: torch.Tensor, quantize: bool = False) -> torch.Tensor:
    """[-1, 1] -> [0, 1] (clamped); ``quantize`` rounds to the 256 levels of an 8-bit image first."""
    unit = ((x.float() + 1.0) * 0.5).clamp_(0.0, 1.0)
    if quantize:
        unit = torch.round(unit * 255.0) / 255.0
    return unit


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> uint8 0..255, as an 8-bit image file would store it."""
    return torch.round(to_unit(x) * 255.0).to(torch.uint8)
