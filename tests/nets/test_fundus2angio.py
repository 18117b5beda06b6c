"""Fundus2Angio nets (reference_spec 3.2-3.3): the NRB and the paper's parameter table, the coarse/fine
generators and the four PatchGANs at 512 px, Keras padding/pooling/BatchNorm/initialisation semantics."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from fundus2ffa.nets.blocks.separable import NovelResidualBlock, OriginalResidualBlock, paper_parameter_count
from fundus2ffa.nets.discriminators.fundus2angio import Fundus2AngioDiscriminators, Fundus2AngioPatchGAN
from fundus2ffa.nets.generators.fundus2angio import CoarseFineGenerator, CoarseGenerator, FineGenerator
from fundus2ffa.nets.keras_compat import SameAvgPool2d, SameConvTranspose2d, TFSamePad, same_conv2d
from fundus2ffa.nets.resample import lanczos_halve


def test_parameter_table_of_the_paper():
    # Kamran et al. 2020, table of the NRB: C = 32 channels, K = 3. Original: two KxKxCxC convolutions;
    # NRB: one KxKxCxC, a depthwise KxKxC and a pointwise CxC; both with 2 BN of 4 values per channel.
    c, k = 32, 3
    original = 2 * k * k * c * c + 2 * 4 * c
    proposed = k * k * c * c + k * k * c + c * c + 2 * 4 * c
    assert (original, proposed) == (18_688, 10_784)  # the numbers printed in the paper
    assert paper_parameter_count(OriginalResidualBlock(c)) == original
    assert paper_parameter_count(NovelResidualBlock(c)) == proposed


def test_nrb_is_identity_plus_body_with_no_activation_after_the_add():
    torch.manual_seed(0)
    block = NovelResidualBlock(8)
    last_bn = block.body[-1]
    nn.init.zeros_(last_bn.weight)
    nn.init.zeros_(last_bn.bias)
    x = torch.randn(2, 8, 12, 12)  # negative values would be changed by any activation after the add
    assert torch.equal(block(x), x)


def test_separable_convolution_is_depthwise_then_pointwise():
    torch.manual_seed(0)
    block = NovelResidualBlock(6)
    depthwise, pointwise = block.body[5]
    assert depthwise.groups == 6 and tuple(depthwise.weight.shape) == (6, 1, 3, 3)
    assert tuple(pointwise.weight.shape) == (6, 6, 1, 1)
    # the composition equals a dense 3x3 convolution with kernel W[o, i] = P[o, i] * D[i]
    dense = pointwise.weight[:, :, 0, 0, None, None] * depthwise.weight[None, :, 0]
    x = torch.randn(1, 6, 9, 9)
    torch.testing.assert_close(block.body[5](x), nn.functional.conv2d(x, dense), rtol=1e-5, atol=1e-5)


def test_generator_shapes_at_512_full_width():
    with torch.device("meta"):  # shapes only: the full 6.8 M-parameter nets, no arithmetic
        gen = CoarseFineGenerator()
        fake, fake_coarse, feature = gen(torch.empty(2, 3, 512, 512))
        coarse_image, coarse_feature = gen.coarse(torch.empty(2, 3, 256, 256))
    assert tuple(coarse_image.shape) == (2, 1, 256, 256) and tuple(coarse_feature.shape) == (2, 64, 256, 256)
    assert tuple(fake.shape) == (2, 1, 512, 512)
    assert tuple(fake_coarse.shape) == (2, 1, 256, 256) and tuple(feature.shape) == (2, 64, 256, 256)
    assert gen.fine.feature_channels == 64 and len(gen.coarse.blocks) == 9 and len(gen.fine.blocks) == 3
    with pytest.raises(ValueError, match="ngf_fine"):
        CoarseFineGenerator(ngf=16, ngf_fine=16)  # the pre-2021 nff = 64 crash (A4), caught at build time


def test_fine_generator_adds_the_coarse_feature():
    torch.manual_seed(0)
    fine = FineGenerator(ngf=4, n_blocks=1).eval()
    cf = torch.rand(1, 3, 16, 16) * 2 - 1
    zero, bump = torch.zeros(1, 8, 8, 8), torch.zeros(1, 8, 8, 8)
    bump[..., 3, 3] = 5.0
    assert not torch.allclose(fine(cf, zero), fine(cf, bump))
    with pytest.raises(ValueError, match="coarse ngf"):
        fine(cf, torch.zeros(1, 16, 8, 8))


def test_keras_batch_norm_and_code_initialisation():
    torch.manual_seed(0)
    gen = CoarseFineGenerator(ngf=64, n_blocks_coarse=1, n_blocks_fine=1)
    bns = [m for m in gen.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.momentum == 0.01 and m.eps == 1e-3 for m in bns)  # Keras momentum 0.99, eps 1e-3
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    torch_bn = CoarseGenerator(ngf=4, n_blocks=1, bn="torch")
    assert all(m.momentum == 0.1 and m.eps == 1e-5 for m in torch_bn.modules() if isinstance(m, nn.BatchNorm2d))

    def glorot_bound(weight):
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
        return math.sqrt(6.0 / (fan_in + fan_out))

    # G_coarse stem/down/up/head: N(0, 0.02)
    stem = gen.coarse.stem[0][1].weight
    assert abs(stem.std().item() - 0.02) < 0.002  # Glorot would give bound / sqrt(3) = 0.025 here
    head = gen.coarse.head[1]
    assert abs(head.weight.std().item() - 0.02) < 0.003 and torch.all(head.bias == 0)
    # NRB convolutions of G_coarse and every G_fine convolution: Glorot-uniform (std = bound / sqrt 3)
    glorot = [m.weight for m in gen.coarse.blocks.modules() if isinstance(m, nn.Conv2d)]
    glorot += [m.weight for m in gen.fine.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    for weight in glorot:
        bound = glorot_bound(weight)
        assert weight.abs().max() <= bound
        if weight.numel() > 4000:
            assert abs(weight.std().item() - bound / math.sqrt(3)) < 0.1 * bound


@pytest.mark.parametrize("tf_same", [False, True])
def test_down_and_up_convolutions_are_adjoint(tf_same):
    # Keras' Conv2DTranspose("same") is the adjoint of Conv2D("same") (TF pads 0 before / 1 after for k3
    # s2); PyTorch's padding=1 / output_padding=1 pair is the adjoint of the symmetric one.
    torch.manual_seed(0)
    if tf_same:
        down, up = same_conv2d(3, 5, 3, 2, bias=False), SameConvTranspose2d(5, 3, 3, 2, bias=False)
        up.conv.weight.data.copy_(down[1].weight.data)
    else:
        down = nn.Conv2d(3, 5, 3, 2, 1, bias=False)
        up = nn.ConvTranspose2d(5, 3, 3, 2, 1, output_padding=1, bias=False)
        up.weight.data.copy_(down.weight.data)
    x, y = torch.randn(2, 3, 8, 10, dtype=torch.float64), torch.randn(2, 5, 4, 5, dtype=torch.float64)
    down, up = down.double(), up.double()
    assert down(x).shape == y.shape and up(y).shape == x.shape
    torch.testing.assert_close((down(x) * y).sum(), (up(y) * x).sum())


def test_tf_same_padding_shifts_the_stride2_grid():
    # k3 s2 on 8 samples: PyTorch's padding=1 centres windows on even pixels ([2i-1, 2i+1]); TF's "same"
    # pads (0, 1) and starts them there ([2i, 2i+2]). An impulse at pixel (2, 2) is the centre of one
    # symmetric window but the edge of four TF windows.
    x = torch.zeros(1, 1, 8, 8)
    x[..., 2, 2] = 1.0
    ones = torch.ones(1, 1, 3, 3)
    symmetric = nn.functional.conv2d(x, ones, stride=2, padding=1)
    tf_same = nn.functional.conv2d(TFSamePad(3, 2)(x), ones, stride=2)
    assert symmetric.shape == tf_same.shape == (1, 1, 4, 4)
    assert symmetric.nonzero().tolist() == [[0, 0, 1, 1]]
    assert tf_same.nonzero().tolist() == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 0, 1, 1]]
    # stride 1, k4: ZeroPad2d((1, 2, 1, 2)) as the spec states
    z = torch.randn(1, 2, 5, 6)
    assert torch.equal(TFSamePad(4, 1)(z), nn.ZeroPad2d((1, 2, 1, 2))(z))


def test_same_average_pooling_ignores_the_padding():
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    got = SameAvgPool2d(3, 2)(x)
    arr = x.numpy()
    expected = np.zeros((1, 2, 3, 4))
    for i in range(3):
        for j in range(4):
            # TF "same": 6 rows -> pad (0, 1), 7 columns -> pad (1, 1); only in-image pixels are averaged
            rows = slice(max(2 * i, 0), min(2 * i + 3, 6))
            cols = slice(max(2 * j - 1, 0), min(2 * j + 2, 7))
            expected[..., i, j] = arr[..., rows, cols].mean(axis=(-1, -2))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_discriminator_patch_maps_at_512_and_channel_bug():
    with torch.device("meta"):
        discs = Fundus2AngioDiscriminators(ndf=32)
        out = discs(torch.empty(1, 4, 512, 512), torch.empty(1, 4, 256, 256))
    sides = {name: tuple(pred[0][-1].shape[-2:]) for name, pred in out.items()}
    assert sides == {"d1_fine": (64, 64), "d2_fine": (32, 32), "d1_coarse": (32, 32), "d2_coarse": (16, 16)}
    assert all(len(pred) == 1 and len(pred[0]) == 5 and pred[0][-1].shape[1] == 1 for pred in out.values())

    def conv_widths(net):
        return [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]

    assert conv_widths(Fundus2AngioPatchGAN(ndf=32)) == [32, 64, 64, 64, 1]  # A1: constant 64 (code)
    assert conv_widths(Fundus2AngioPatchGAN(ndf=32, grow_channels=True)) == [32, 64, 128, 256, 1]
    with torch.device("meta"):
        grown = Fundus2AngioDiscriminators(ndf=32, grow_channels=True, pyramid="lanczos")
        out = grown(torch.empty(1, 4, 512, 512), torch.empty(1, 4, 256, 256))
    assert {name: tuple(pred[0][-1].shape[-2:]) for name, pred in out.items()} == sides


def test_discriminator_pyramid_switch():
    torch.manual_seed(0)
    pair = torch.rand(2, 4, 32, 32) * 2 - 1
    pooled = Fundus2AngioDiscriminators(ndf=4).eval()
    lanczos = Fundus2AngioDiscriminators(ndf=4, pyramid="lanczos").eval()
    assert len(pooled.nets["d2_fine"].pool) == 1 and len(lanczos.nets["d2_fine"].pool) == 0
    assert len(lanczos.nets["d1_fine"].pool) == 0
    with torch.no_grad():
        via_lanczos = lanczos.discriminate("d2_coarse", pair)[0][-1]
        expected = lanczos.nets["d2_coarse"](lanczos_halve(pair, clamp=None))[0][-1]
        assert torch.equal(via_lanczos, expected)
        assert torch.equal(lanczos.discriminate("d1_coarse", pair)[0][-1], lanczos.nets["d1_coarse"](pair)[0][-1])
        assert torch.equal(pooled.discriminate("d2_coarse", pair)[0][-1], pooled.nets["d2_coarse"](pair)[0][-1])
    with pytest.raises(ValueError, match="pyramid"):
        Fundus2AngioDiscriminators(pyramid="bicubic")
