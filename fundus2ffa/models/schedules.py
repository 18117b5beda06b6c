"""Learning-rate schedules counted in epochs (never in ``global_step``, which counts optimizer steps)."""

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def constant_then_linear_decay(optimizer: Optimizer, constant_epochs: int, decay_epochs: int) -> LambdaLR:
    """pix2pix/CycleGAN's ``linear`` policy: lr constant for ``constant_epochs``, then linear decay.

    The factor for epoch e (0-based) is ``1 - max(0, e + 1 - constant) / (decay + 1)``, exactly the
    reference code, so the last decayed epoch runs at lr/(decay+1) rather than 0 (Li et al. write
    "linear decay to zero"; the difference is one step of the ramp). ``decay_epochs=0`` is constant.
    """

    def factor(epoch: int) -> float:
        if decay_epochs <= 0:
            return 1.0
        return max(0.0, 1.0 - max(0, epoch + 1 - constant_epochs) / float(decay_epochs + 1))

    return LambdaLR(optimizer, lr_lambda=factor)
