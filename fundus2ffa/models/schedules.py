"""Learning-rate schedules counted in epochs (never in ``global_step``, which counts optimizer steps).

The reference codes implement "constant, then linear decay to zero" an epoch apart from each other, so
the convention is a named switch (``schedule.convention``):

- ``pix2pix`` (junyanz pix2pix / CycleGAN ``lr_policy=linear`` as its *current* train.py steps it; the
  Li et al. saliency cGAN): ``get_scheduler``'s lambda ``1 - max(0, c + epoch_count - n_epochs) /
  (n_epochs_decay + 1)`` of the scheduler's counter c, with ``model.update_learning_rate()`` called at
  the END of every epoch (after the inner loop; the 2025 train.py), so 0-based epoch e runs at c = e:
  ``1 - max(0, e + 1 - constant) / (decay + 1)``. 1-based epochs 1 .. constant at the full rate, the decay
  from decay/(decay+1) in epoch constant+1 down to 1/(decay+1) in the last epoch.
- ``pix2pix_epoch_start`` (the same code as train.py had it from 2020 to 2024: ``update_learning_rate()``
  at the START of every epoch, before the inner loop; issue #1100 reports the warning this order causes,
  and a 2024 comment on #1209 still suggests moving it "to the bottom of the loop"): epoch e runs at
  c = e + 1, one step further: ``1 - max(0, e + 2 - constant) / (decay + 1)``: the decay starts one epoch
  earlier (1-based epoch constant at decay/(decay+1)) and the last epoch runs at lr 0. The 2018 code
  (``niter`` options) gives the same values: it stepped at the end of the epoch with ``epoch + 1 +
  epoch_count - niter`` in the lambda.
- ``pix2pixhd`` (NVIDIA pix2pixHD ``train.py``, Fundus2Video): ``lr -= lr0 / niter_decay`` at the end of
  every 1-based epoch ``> niter``, so epochs 1 .. niter+1 run at the full rate and then
  (decay-1)/decay ... 1/decay: the factor for 0-based epoch e is ``1 - max(0, e - constant) / decay``.

(issue 20 item 4; tests/models/test_schedules.py runs every epoch of 100 + 100 in a real fit against a
replica of each train.py loop.)
"""

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

CONVENTIONS = ("pix2pix", "pix2pix_epoch_start", "pix2pixhd")


def linear_decay_factor(epoch: int, constant_epochs: int, decay_epochs: int, convention: str = "pix2pix") -> float:
    """The LR multiplier of 0-based ``epoch`` (see the module docstring); ``decay_epochs=0`` is constant."""
    if convention not in CONVENTIONS:
        raise ValueError(f"model.schedule.convention must be one of {'|'.join(CONVENTIONS)}, got {convention!r}")
    if decay_epochs <= 0:
        return 1.0
    if convention in ("pix2pix", "pix2pix_epoch_start"):
        counter = epoch if convention == "pix2pix" else epoch + 1  # scheduler steps taken before the epoch runs
        return max(0.0, 1.0 - max(0, counter + 1 - constant_epochs) / float(decay_epochs + 1))
    return max(0.0, 1.0 - max(0, epoch - constant_epochs) / float(decay_epochs))


def constant_then_linear_decay(
    optimizer: Optimizer, constant_epochs: int, decay_epochs: int, convention: str = "pix2pix"
) -> LambdaLR:
    """lr constant for ``constant_epochs``, then linear decay over ``decay_epochs`` in ``convention``'s
    timing (pix2pix | pix2pix_epoch_start | pix2pixhd; module docstring). Li et al. write "linear decay
    to zero"; pix2pix and pix2pixhd stop one step short of zero, pix2pix_epoch_start reaches it in the
    last epoch."""
    linear_decay_factor(0, constant_epochs, decay_epochs, convention)  # validates the convention

    def factor(epoch: int) -> float:
        return linear_decay_factor(epoch, constant_epochs, decay_epochs, convention)

    return LambdaLR(optimizer, lr_lambda=factor)
