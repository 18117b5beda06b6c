"""pix2pixHD nets: the global generator's layer table and taps, the local enhancer, the multi-scale D."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fundus2ffa.nets.discriminators.multiscale import MultiscaleDiscriminator
from fundus2ffa.nets.generators.pix2pixhd import GlobalGenerator, LocalEnhancer


def conv_params(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + c_out


def expected_global_params(c_in: int, c_out: int, ngf: int = 64, n_down: int = 4, n_blocks: int = 9) -> int:
    """Parameter count of reference_spec 4.3's table, layer by layer (InstanceNorm has none)."""
    total = conv_params(c_in, ngf, 7)
    widths = [ngf * 2**k for k in range(n_down + 1)]
    total += sum(conv_params(a, b, 3) for a, b in zip(widths, widths[1:]))  # downsampling
    total += n_blocks * 2 * conv_params(widths[-1], widths[-1], 3)  # residual blocks
    total += sum(conv_params(b, a, 3) for a, b in zip(widths, widths[1:]))  # transposed convs
    return total + conv_params(ngf, c_out, 7)


def test_full_size_global_generator_is_about_180m_parameters_for_6_to_3_channels():
    with torch.device("meta"):
        net = GlobalGenerator(6, 3, init_type="none")  # counting only: skip the 182 M-weight init
    count = sum(p.numel() for p in net.parameters())
    assert count == expected_global_params(6, 3)
    assert abs(count - 180e6) / 180e6 < 0.03  # 182,452,675: "about 180 M" (reference_spec 4.3)
    assert len(net.model) == 40  # indices 0..39 of the spec table


def test_layer_table_and_patchnce_taps_match_the_spec():
    net = GlobalGenerator(6, 3, ngf=8)
    kinds = {0: nn.ReflectionPad2d, 1: nn.Conv2d, 2: nn.InstanceNorm2d, 3: nn.ReLU, 4: nn.Conv2d,
             8: nn.InstanceNorm2d, 12: nn.ReLU, 25: nn.ConvTranspose2d, 37: nn.ReflectionPad2d, 39: nn.Tanh}
    for index, kind in kinds.items():
        assert isinstance(net.model[index], kind), index
    assert type(net.model[16]).__name__ == "ResnetBlock" and type(net.model[24]).__name__ == "ResnetBlock"
    assert net.model[4].stride == (2, 2)
    assert [net.layer_index(w) for w in ("down_conv", "block", "up_conv", "head_pad")] == [4, 16, 25, 37]

    x = torch.randn(2, 6, 64, 64)
    taps = net.encode(x, [0, 4, 8, 12, 16])
    # spec 4.3 at 512 px: 6x518, 128x256, 256x128, 512x64, 1024x32; here ngf 8 at 64 px
    assert [tuple(t.shape[1:]) for t in taps] == [(6, 70, 70), (16, 32, 32), (32, 16, 16), (64, 8, 8), (128, 4, 4)]
    assert torch.equal(taps[0], F.pad(x, (3, 3, 3, 3), mode="reflect"))  # tap 0: the padded raw input
    assert torch.allclose(taps[4], net.model[:17](x))
    assert taps[1].mean(dim=(2, 3)).abs().max() > 1e-3  # tap 4 is pre-norm (IN would zero the means)
    # tap 8: the InstanceNorm output, rectified by default as the code's in-place ReLU leaves it (issue 20.1)
    assert torch.allclose(taps[2], torch.relu(net.model[:9](x))) and taps[2].min() == 0
    signed = net.encode(x, [0, 4, 8, 12, 16], taps="layer_output")
    assert signed[2].mean(dim=(2, 3)).abs().max() < 1e-4 and signed[2].min() < 0  # the IN output itself
    assert all(torch.equal(a, b) for k, (a, b) in enumerate(zip(taps, signed)) if k != 2)
    # the order asked for is the order returned, and only the layers up to the deepest tap run
    # (tap 8 as the deepest tap: no ReLU runs after it, so it stays signed, as encode_only returns there)
    assert torch.equal(net.encode(x, [8, 0])[0], signed[2])


class SharedReluResBlock(nn.Module):
    """pix2pixHD's ResnetBlock as its code builds it: the generator's one activation module inside."""

    def __init__(self, channels: int, activation: nn.Module):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), activation,
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
        )

    def forward(self, x):
        return x + self.body(x)


def reference_global_generator(c_in: int, c_out: int, ngf: int, n_down: int, n_blocks: int) -> nn.Sequential:
    """The module order of pix2pixHD's GlobalGenerator in Fundus2Video's models/networks.py, written from
    its description (reference_spec 4.3): ONE ``nn.ReLU(True)`` instance, in place, shared by the stem,
    every downsampling, every residual block and every upsampling stage."""
    activation = nn.ReLU(True)
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(c_in, ngf, 7), nn.InstanceNorm2d(ngf), activation]
    for k in range(n_down):
        layers += [nn.Conv2d(ngf * 2**k, ngf * 2 ** (k + 1), 3, 2, 1), nn.InstanceNorm2d(ngf * 2 ** (k + 1)), activation]
    layers += [SharedReluResBlock(ngf * 2**n_down, activation) for _ in range(n_blocks)]
    for k in range(n_down, 0, -1):
        layers += [nn.ConvTranspose2d(ngf * 2**k, ngf * 2 ** (k - 1), 3, 2, 1, output_padding=1),
                   nn.InstanceNorm2d(ngf * 2 ** (k - 1)), activation]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, c_out, 7), nn.Tanh()]
    return nn.Sequential(*layers)


def reference_encode_only(model: nn.Sequential, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
    """``GlobalGenerator.forward(x, layers, encode_only=True)`` of the code: store the output of every
    layer in ``layers``, stop right after the last one."""
    feats = []
    for layer_id, layer in enumerate(model):
        x = layer(x)
        if layer_id in layers:
            feats.append(x)
        if layer_id == layers[-1]:
            return feats
    return feats


def test_encode_returns_the_taps_the_references_encode_only_stores_with_its_shared_inplace_relu():
    """Issue 20 item 1. Which taps does the shared in-place ReLU alias? A stored tensor is rewritten when
    a later in-place activation runs on that very tensor: tap 8 (InstanceNorm, index 9 is the ReLU) is;
    tap 0 (pad; next a conv), tap 4 (conv; next InstanceNorm, out of place), tap 12 (the ReLU's own
    output; next a conv) and tap 16 (the last: encode_only returns before anything else runs) are not."""
    torch.manual_seed(0)
    ours = GlobalGenerator(6, 3, ngf=4, n_downsampling=4, n_blocks=3)
    reference = reference_global_generator(6, 3, ngf=4, n_down=4, n_blocks=3)
    assert [type(m) for m in reference] == [type(m) for m in ours.model][:16] + [SharedReluResBlock] * 3 + [
        type(m) for m in ours.model][19:]
    with torch.no_grad():
        for theirs, mine in zip(reference.parameters(), ours.parameters(), strict=True):
            theirs.copy_(mine)
    taps = [0, 4, 8, 12, 16]
    x = torch.randn(2, 6, 64, 64)
    expected = reference_encode_only(reference, x, taps)
    # the replica really aliases tap 8 (and only tap 8): compare with each layer's own output
    own = [reference[: i + 1](x.clone()) if i != 8 else torch.nn.functional.instance_norm(
        reference[:8](x.clone())) for i in taps]
    assert expected[2].min() == 0 and own[2].min() < -1  # rectified in the stored list, signed as computed
    assert all(torch.allclose(e, o, atol=1e-6) for k, (e, o) in enumerate(zip(expected, own)) if k != 2)

    for got, want in zip(ours.encode(x, taps), expected, strict=True):  # the default: the code
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    signed = ours.encode(x, taps, taps="layer_output")  # the named switch keeps the signed variant
    torch.testing.assert_close(signed[2], own[2], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="generator.encode_taps must be one of code|layer_output"):
        GlobalGenerator(6, 3, ngf=4, encode_taps="rectified")


def test_generator_output_range_shape_and_size_check():
    net = GlobalGenerator(3, 1, ngf=8, n_blocks=2)
    y = net(torch.randn(1, 3, 48, 32))
    assert y.shape == (1, 1, 48, 32) and y.abs().max() <= 1
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.randn(1, 3, 40, 40))
    convs = torch.cat([m.weight.flatten() for m in net.modules() if isinstance(m, nn.Conv2d)])
    assert abs(convs.std().item() - 0.02) < 0.002  # N(0, 0.02) initialisation


def test_local_enhancer_runs_the_global_generator_at_half_resolution_and_uses_every_parameter():
    net = LocalEnhancer(3, 1, ngf=4, n_blocks_global=2, n_blocks_local=1)
    assert net.global_generator.model[0].padding == (3, 3, 3, 3) and net.global_generator.feature_channels == 8
    seen = []
    net.global_generator.register_forward_hook(lambda m, i, o: seen.append((i[0].shape, o.shape)))
    x = torch.randn(1, 3, 64, 64)
    y = net(x)
    assert y.shape == (1, 1, 64, 64)
    assert seen == [(torch.Size([1, 3, 32, 32]), torch.Size([1, 8, 32, 32]))]  # headless global G at 1/2
    y.mean().backward()
    assert all(p.grad is not None for p in net.parameters())  # no unused parameters (DDP-safe)
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.randn(1, 3, 48, 48))


def test_multiscale_discriminator_patch_maps_at_512():
    d = MultiscaleDiscriminator(4, ndf=8, n_layers=3, num_D=2)
    with torch.no_grad():
        out = d(torch.randn(1, 4, 512, 512))
    assert len(out) == 2 and all(len(scale) == 5 for scale in out)
    assert [tuple(scale[-1].shape) for scale in out] == [(1, 1, 67, 67), (1, 1, 35, 35)]  # spec 4.4
    assert [f.shape[1] for f in out[0]] == [8, 16, 32, 64, 1]


def test_multiscale_discriminator_second_scale_sees_the_count_exclude_pad_average_pool():
    d = MultiscaleDiscriminator(4, ndf=4, num_D=2)
    x = torch.randn(2, 4, 64, 64)
    pooled = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
    assert torch.allclose(d(x)[1][-1], d.scales[1](pooled)[-1])
    assert torch.equal(d.downsample(torch.ones(1, 1, 8, 8)), torch.ones(1, 1, 4, 4))  # borders not darkened
    assert not torch.equal(d.scales[0].blocks[0][0].weight, d.scales[1].blocks[0][0].weight)  # separate weights


def test_pad_to_multiple_accepts_any_size_and_keeps_divisible_inputs_unchanged():
    torch.manual_seed(0)
    strict = GlobalGenerator(3, 1, ngf=4, n_blocks=1)
    padded = GlobalGenerator(3, 1, ngf=4, n_blocks=1, pad_to_multiple=True)
    padded.load_state_dict(strict.state_dict())
    x = torch.randn(1, 3, 32, 48)
    assert torch.equal(padded(x), strict(x))  # nothing to pad: the same function
    odd = torch.randn(1, 3, 36, 45)  # Li et al.'s 288x360 patches are not multiples of 16 either
    y = padded(odd)
    assert y.shape == (1, 1, 36, 45)
    reference = strict(F.pad(odd, (1, 2, 6, 6), mode="reflect"))[..., 6:42, 1:46]  # 48x48, centred
    assert torch.allclose(y, reference)
    local = LocalEnhancer(3, 1, ngf=4, n_blocks_global=1, n_blocks_local=1, pad_to_multiple=True)
    assert local(torch.randn(1, 3, 40, 72)).shape == (1, 1, 40, 72)
