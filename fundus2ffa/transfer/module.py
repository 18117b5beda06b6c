"""The downstream training procedure: one LightningModule for classification heads and segmentation nets.

Automatic optimisation (unlike the GAN modules: one network, one loss). Only parameters with
``requires_grad`` reach the optimiser, so a frozen backbone (linear probe, frozen encoder) is neither
updated nor decayed; frozen parts are also kept in eval mode during training so their normalisation
statistics (the U-Net's BatchNorm) stay those of the pretrained network. Augmentation: a random
horizontal flip applied to image and mask together (``hflip``).
"""

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from fundus2ffa.errors import ConfigError
from fundus2ffa.losses.dice_bce import DiceBCELoss

LR_SCHEDULES = ("constant", "cosine")


class Classifier(nn.Module):
    """Encoder + global average pooling + a linear head (reference_spec 4.9).

    ``feature_mean`` / ``feature_std`` standardise the pooled features before the head (identity by
    default); a linear probe sets them from its training features, as a non-affine BatchNorm in front of
    the head does in the usual linear-probe recipe: the pooled features of a generator have very
    different scales per channel, and an unnormalised head at few-shot sample sizes learns mostly a bias.
    """

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_channels, num_classes)
        self.register_buffer("feature_mean", torch.zeros(encoder.out_channels))
        self.register_buffer("feature_std", torch.ones(encoder.out_channels))

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.feature_mean) / self.feature_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.standardise(self.encoder.pooled(x)))


class DownstreamModule(L.LightningModule):
    """Trains ``net`` on (image, target[, valid]) batches.

    Args:
        net: a :class:`Classifier`, a segmentation net (logits N x K x H x W), or a bare head on cached
            features (linear probe).
        task: classification | segmentation.
        frozen: sub-modules whose weights stay fixed (and in eval mode).
        lr / weight_decay: AdamW settings.
        hflip / vflip / transpose: probabilities of the joint horizontal flip, vertical flip and transpose
            (images only; 0 for features; the transpose only where height == width).
        lr_schedule: constant | cosine (to zero at the trainer's ``max_steps``).
        loss: {bce_weight, dice_weight} of the segmentation loss.
    """

    def __init__(self, net: nn.Module, task: str, frozen: list[nn.Module] | None = None, lr: float = 1e-3,
                 weight_decay: float = 0.0, hflip: float = 0.5, loss: dict | None = None, vflip: float = 0.0,
                 transpose: float = 0.0, lr_schedule: str = "constant"):
        super().__init__()
        if lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"downstream.train.lr_schedule must be one of {'|'.join(LR_SCHEDULES)}, got {lr_schedule!r}")
        self.net, self.task = net, task
        self.frozen = list(frozen or [])
        for module in self.frozen:
            module.requires_grad_(False)
        self.lr, self.weight_decay, self.lr_schedule = float(lr), float(weight_decay), lr_schedule
        self.hflip, self.vflip, self.transpose = float(hflip), float(vflip), float(transpose)
        self.seg_loss = DiceBCELoss(**(loss or {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_train_epoch_start(self) -> None:
        for module in self.frozen:
            module.eval()

    @staticmethod
    def _jointly(batch: list[torch.Tensor], probability: float, op) -> list[torch.Tensor]:
        """``op`` on each sample's image and maps together with ``probability`` (per sample)."""
        if probability <= 0:
            return batch
        chosen = torch.rand(batch[0].shape[0], device=batch[0].device) < probability
        return [torch.where(chosen.view(-1, *[1] * (t.ndim - 1)), op(t), t) if t.ndim >= 3 else t for t in batch]

    def _augment(self, batch: list[torch.Tensor]) -> list[torch.Tensor]:
        if batch[0].ndim != 4:
            return batch
        batch = self._jointly(batch, self.hflip, lambda t: t.flip(-1))
        batch = self._jointly(batch, self.vflip, lambda t: t.flip(-2))
        if batch[0].shape[-1] == batch[0].shape[-2]:
            batch = self._jointly(batch, self.transpose, lambda t: t.transpose(-1, -2))
        return batch

    def training_step(self, batch, batch_idx):
        batch = self._augment(list(batch))
        x, target = batch[0], batch[1]
        out = self.net(x)
        if self.task == "classification":
            loss = F.cross_entropy(out.float(), target)
            self.log("train/ce", loss, prog_bar=False)
            return loss
        terms = self.seg_loss(out, target, batch[2] if len(batch) > 2 else None)
        for name, value in terms.items():
            self.log(f"train/{name}", value)
        return terms["total"]

    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_schedule == "constant":
            return optimiser
        steps = max(1, int(self.trainer.max_steps))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps)
        return {"optimizer": optimiser, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
