"""Discriminators. Every discriminator returns a list over scales, each a list of the feature maps of
its blocks whose last element is the (pre-sigmoid) patch map; feature matching reads the others."""

from fundus2ffa.nets.discriminators.patchgan import PatchGAN

__all__ = ["PatchGAN"]
