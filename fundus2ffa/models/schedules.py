"""Learning-rate schedules counted in epochs (never in ``global_step``, which counts optimizer steps).

Two reference codes implement "constant, then linear decay to zero" one epoch apart, so the convention
is a named switch (``schedule.convention``):

- ``pix2pix`` (junyanz pix2pix / CycleGAN ``lr_policy=linear``, the Li et al. saliency cGAN): the factor
  for 0-based epoch e is ``1 - max(0, e + 1 - constant) / (decay + 1)``: the decay starts in epoch
  ``constant`` (0-based) at decay/(decay+1) and the last epoch runs at 1/(decay+1).
- ``pix2pixhd`` (NVIDIA pix2pixHD ``train.py``, Fundus2Video): ``lr -= lr0 / niter_decay`` at the end of
  every 1-based epoch ``> niter``, so epochs 1 .. niter+1 run at the full rate and then
  (decay-1)/decay ... 1/decay: the factor for 0-based epoch e is ``1 - max(0, e - constant) / decay``.
"""

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

CONVENTIONS = ("pix2pix", "pix2pixhd")


def linear_decay_factor(epoch: int, constant_epochs: int, decay_epochs: int, convention: str = "pix2pix") -> float:
    """The LR multiplier of 0-based ``epoch`` (see the module docstring); ``decay_epochs=0`` is constant."""
    if convention not in CONVENTIONS:
        raise ValueError(f"model.schedule.convention must be one of {'|'.join(CONVENTIONS)}, got {convention!r}")
    if decay_epochs <= 0:
        return 1.0
    if convention == "pix2pix":
        return max(0.0, 1.0 - max(0, epoch + 1 - constant_epochs) / float(decay_epochs + 1))
    return max(0.0, 1.0 - max(0, epoch - constant_epochs) / float(decay_epochs))


def constant_then_linear_decay(
    optimizer: Optimizer, constant_epochs: int, decay_epochs: int, convention: str = "pix2pix"
) -> LambdaLR:
    """lr constant for ``constant_epochs``, then linear decay over ``decay_epochs`` in ``convention``'s
    timing (pix2pix | pix2pixhd; module docstring). Li et al. write "linear decay to zero"; both codes
    stop one step short of zero."""
    linear_decay_factor(0, constant_epochs, decay_epochs, convention)  # validates the convention

    def factor(epoch: int) -> float:
        return linear_decay_factor(epoch, constant_epochs, decay_epochs, convention)

    return LambdaLR(optimizer, lr_lambda=factor)
