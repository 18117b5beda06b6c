"""pix2pix U-Net (reference_spec section 5): where its dropout layers sit (issue 10, item 1)."""

import pytest
import torch
from torch import nn

from fundus2ffa.nets.generators import UNetGenerator


def decoder_from_innermost(net: UNetGenerator) -> list[nn.Sequential]:
    return list(reversed(net.up))


@pytest.mark.parametrize("num_downs,expected_dropout", [(8, 3), (9, 4)])
def test_dropout_sits_in_the_num_downs_minus_5_inner_8ngf_stages(num_downs, expected_dropout):
    # junyanz's unet_256 / unet_512: the innermost block (no dropout), then num_downs - 5 blocks
    # UnetSkipConnectionBlock(8ngf, 8ngf, use_dropout) (16ngf -> 8ngf transposed conv + dropout), then the
    # 16ngf -> 4ngf, 8ngf -> 2ngf, 4ngf -> ngf blocks and the outermost one, none with dropout.
    ngf = 4
    net = UNetGenerator(num_downs=num_downs, ngf=ngf)
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == expected_dropout
    stages = decoder_from_innermost(net)
    has_dropout = [any(isinstance(m, nn.Dropout) for m in stage) for stage in stages]
    assert has_dropout == [False] + [True] * (num_downs - 5) + [False] * 4
    for stage, dropout in zip(stages, has_dropout):
        conv = next(m for m in stage if isinstance(m, nn.ConvTranspose2d))
        if dropout:
            assert (conv.in_channels, conv.out_channels) == (16 * ngf, 8 * ngf)
            assert stage[-1].p == 0.5
    # the block right after the dropout ones maps 16ngf -> 4ngf (the paper's C1024 -> 256) without dropout
    widening = next(m for m in stages[num_downs - 4] if isinstance(m, nn.ConvTranspose2d))
    assert (widening.in_channels, widening.out_channels) == (16 * ngf, 4 * ngf)


def test_dropout_is_the_only_noise_and_use_dropout_false_removes_it():
    torch.manual_seed(0)
    net = UNetGenerator(num_downs=5, ngf=4, norm="instance")
    assert not any(isinstance(m, nn.Dropout) for m in net.modules())  # num_downs 5: no 8ngf -> 8ngf stage
    net = UNetGenerator(num_downs=8, ngf=4, norm="instance").train()
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))
    assert not any(isinstance(m, nn.Dropout) for m in UNetGenerator(num_downs=8, ngf=4, use_dropout=False).modules())
