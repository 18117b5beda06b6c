"""Frozen feature extractors used by losses and metrics (VGG19 for perceptual losses)."""

from fundus2ffa.nets.backbones.vgg import VGG19_LAYERS, VGG19Features, load_vgg19

__all__ = ["VGG19_LAYERS", "VGG19Features", "load_vgg19"]
