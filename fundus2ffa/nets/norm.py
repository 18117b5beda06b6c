"""Normalisation layers by name, as the pix2pix/CycleGAN code bases name them."""

from functools import partial

from torch import nn


def norm_layer(norm: str):
    """Return a constructor ``f(num_channels) -> nn.Module`` for ``norm`` in batch|instance|none.

    ``instance`` follows pix2pix (affine=False, no running statistics); ``batch`` is affine with
    running statistics.
    """
    if norm == "batch":
        return partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "instance":
        return partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm == "none":
        return lambda num_channels: nn.Identity()
    raise ValueError(f"norm must be one of batch|instance|none, got {norm!r}")


def conv_bias(norm: str) -> bool:
    """A convolution followed by BatchNorm needs no bias (the norm has one); otherwise it does."""
    return norm != "batch"
