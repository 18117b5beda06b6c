"""LightningModules, one per training procedure."""

from fundus2ffa.models.gan_module import GANModule
from fundus2ffa.models.paired_gan import PairedGAN

__all__ = ["GANModule", "PairedGAN"]
