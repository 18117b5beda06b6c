"""2x upsampling layers of the decoders: transposed convolution (the papers) or resize-convolution.

A stride-2 transposed convolution whose kernel size is not divisible by its stride overlaps unevenly:
some output pixels receive more kernel taps than their neighbours, which prints a regular checkerboard
/ dot grid into the output (Odena, Dumoulin & Olah, "Deconvolution and Checkerboard Artifacts",
Distill 2016). It is what issue 11 saw on real pairs (a pix2pix trained briefly produced a grey field
with a dot grid). Resizing first (nearest or bilinear) and then convolving gives every output pixel
the same number of taps, so the grid cannot arise from the layer itself.

``upsample: transpose`` keeps the paper layers (pix2pix 4x4/stride 2/padding 1; ResNet and pix2pixHD
3x3/stride 2/padding 1/output_padding 1) and is the default everywhere; ``resize_conv`` is a deviation
named in each generator's config. Both map C_in x H x W to C_out x 2H x 2W.
"""

from torch import nn

UPSAMPLES = ("transpose", "resize_conv")
INTERPOLATIONS = ("nearest", "bilinear")


def upsample_layer(
    in_channels: int,
    out_channels: int,
    kind: str = "transpose",
    kernel_size: int = 4,
    output_padding: int = 0,
    bias: bool = True,
    interpolation: str = "nearest",
) -> nn.Module:
    """One 2x upsampling layer. ``kernel_size``/``output_padding`` describe the paper's transposed
    convolution (4/0 for the U-Net, 3/1 for ResNet and pix2pixHD); resize_conv uses a 3x3 convolution
    with reflection padding 1 after the resize."""
    if kind not in UPSAMPLES:
        raise ValueError(f"generator.upsample must be one of {'|'.join(UPSAMPLES)}, got {kind!r}")
    if kind == "transpose":
        return nn.ConvTranspose2d(in_channels, out_channels, kernel_size, 2, 1, output_padding=output_padding, bias=bias)
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"generator.upsample_interpolation must be one of {'|'.join(INTERPOLATIONS)}, got {interpolation!r}")
    resize = nn.Upsample(scale_factor=2, mode=interpolation, align_corners=False if interpolation == "bilinear" else None)
    return nn.Sequential(resize, nn.ReflectionPad2d(1), nn.Conv2d(in_channels, out_channels, 3, bias=bias))
