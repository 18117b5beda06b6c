"""Discriminator layouts of Li et al. (2020, reference_spec 2.3): the PatchGAN and the 256 px "regular" one.

Receptive fields are measured, not only computed: the input pixels on which one output element depends
are those with a non-zero gradient of that element (in eval mode, where BatchNorm is a per-channel affine
map and so does not mix positions).
"""

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from conftest import compose_run
from fundus2ffa.nets.discriminators.conv import ConvDiscriminator, receptive_field
from fundus2ffa.nets.discriminators.patchgan import PatchGAN, patchgan_receptive_field


def measured_receptive_field(net: nn.Module, size: int, channels: int = 4) -> tuple[int, int]:
    """Height and width of the input region that the centre element of the patch map depends on."""
    net.eval()
    x = torch.randn(1, channels, size, size, requires_grad=True)
    logits = net(x)[0][-1]
    h, w = logits.shape[-2:]
    logits[0, 0, h // 2, w // 2].backward()
    rows = torch.nonzero(x.grad.abs().sum((0, 1, 3)) > 0)
    cols = torch.nonzero(x.grad.abs().sum((0, 1, 2)) > 0)
    assert rows.min() > 0 and cols.min() > 0 and rows.max() < size - 1 and cols.max() < size - 1, "field clipped"
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def convolutions(net: nn.Module) -> list[nn.Conv2d]:
    return [m for m in net.modules() if isinstance(m, nn.Conv2d)]


def test_patchgan_is_the_papers_discriminator():
    """Five 4x4 convolutions, LeakyReLU after the first four, a one-channel patch map, on concat(CF, FFA)."""
    cfg = compose_run(["model=saliency_cgan", "discriminator.ndf=4"])
    net = instantiate(cfg.discriminator)
    assert isinstance(net, PatchGAN) and net.blocks[0][0].in_channels == 4
    convs = convolutions(net)
    assert len(convs) == 5
    assert all(c.kernel_size == (4, 4) for c in convs)
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert convs[-1].out_channels == 1
    activations = [isinstance(block[-1], nn.LeakyReLU) for block in net.blocks]
    assert activations == [True, True, True, True, False]
    assert all(block[-1].negative_slope == 0.2 for block in net.blocks[:4])
    assert net.receptive_field == patchgan_receptive_field(3) == 70
    assert measured_receptive_field(net, 160) == (70, 70)


def test_regular_discriminator_sees_256_pixels():
    cfg = compose_run(["model=saliency_cgan", "discriminator=regular", "discriminator.ndf=2"])
    net = instantiate(cfg.discriminator)
    assert isinstance(net, ConvDiscriminator)
    convs = convolutions(net)
    assert [c.kernel_size[0] for c in convs] == [4, 5, 4, 4, 4, 3, 4]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 2, 2, 1, 1]
    assert convs[0].in_channels == 4 and convs[-1].out_channels == 1
    assert [isinstance(block[-1], nn.LeakyReLU) for block in net.blocks] == [True] * 6 + [False]
    assert net.receptive_field == 256
    assert measured_receptive_field(net, 448) == (256, 256)


@pytest.mark.parametrize("n_layers", [3, 4])
def test_receptive_field_formula_matches_measurement(n_layers):
    net = PatchGAN(ndf=2, n_layers=n_layers)
    side = patchgan_receptive_field(n_layers)
    assert measured_receptive_field(net, side + 96) == (side, side)
    # the generic formula agrees with PatchGAN's, and with pix2pix's 286 at n_layers=5
    assert receptive_field([4] * (n_layers + 2), [2] * n_layers + [1, 1]) == side
    assert receptive_field([4] * 7, [2] * 5 + [1, 1]) == patchgan_receptive_field(5) == 286


def test_mismatched_layout_is_refused():
    with pytest.raises(ValueError, match="kernel_sizes"):
        ConvDiscriminator(kernel_sizes=[4, 4, 4], strides=[2, 2])
