"""Metrics run in float32 with autocast off, whatever the training precision.

Lightning runs ``validation_step`` / ``test_step`` inside autocast under ``trainer.precision=bf16-mixed``
(and 16-mixed), so a metric called from there would have its convolutions run in bf16: SSIM's Gaussian
window then computes E[x^2] - E[x]^2 with 8 significant bits and the variance terms cancel (a pair with
SSIM 0.853 scored -1.19; tests/metrics/test_full_precision.py), and the Inception / I3D / AlexNet
features of FID, FVD and LPIPS drift. The generator still translates in the training precision: only
the scoring is lifted to float32.
"""

import functools

import torch


def _float(value):
    """A half-precision tensor (bf16, fp16) as float32; anything else (float64 included) unchanged."""
    return value.float() if isinstance(value, torch.Tensor) and value.dtype in (torch.bfloat16, torch.float16) else value


def _device_type(values) -> str:
    for value in values:
        if isinstance(value, torch.Tensor):
            return value.device.type
        if isinstance(value, (list, tuple)):  # a list of videos
            found = _device_type(value)
            if found:
                return found
    return ""


def full_precision(fn):
    """Decorate a metric: half-precision tensor arguments become float32 and autocast is off on their device
    (the device of the first tensor argument, also inside a list; CPU without one)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = _device_type((*args, *kwargs.values())) or "cpu"
        with torch.autocast(device_type=device, enabled=False):
            return fn(*[_float(a) for a in args], **{k: _float(v) for k, v in kwargs.items()})

    return wrapper
