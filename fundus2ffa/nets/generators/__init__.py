"""Image-to-image generators."""

from fundus2ffa.nets.generators.resnet import ResnetGenerator
from fundus2ffa.nets.generators.unet import UNetGenerator

__all__ = ["ResnetGenerator", "UNetGenerator"]
