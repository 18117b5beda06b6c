"""Fundus2Video generator: the released code's pix2pixHD generator plus knowledge-boosted attention."""

import pytest
import torch

from fundus2ffa.nets.generators.fundus2video import Fundus2VideoGenerator
from fundus2ffa.nets.generators.pix2pixhd import GlobalGenerator

TINY = dict(ngf=4, n_downsampling=4, n_blocks=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def count(net):
    return sum(p.numel() for p in net.parameters())


def test_full_size_matches_the_code_generator_plus_one_attention_head():
    with torch.device("meta"):
        plain = GlobalGenerator(6, 3)
        without = Fundus2VideoGenerator(kba=False)
        with_kba = Fundus2VideoGenerator()
    # kba=false is exactly the released code's 6 -> 3 pix2pixHD generator (spec 4.3: about 180 M)
    assert count(without) == count(plain)
    assert 175e6 < count(plain) < 190e6
    # one bottleneck head: Conv3x3(1024 -> 256) + Conv1x1(256 -> 1), with biases
    assert count(with_kba) - count(plain) == (1024 * 256 * 9 + 256) + (256 + 1)
    assert with_kba.kba_positions == {"bottleneck": 24}  # after the 9th residual block (indices 16-24)


def test_plain_generator_computes_the_global_generator():
    torch.manual_seed(0)
    reference = GlobalGenerator(6, 3, **TINY)
    net = Fundus2VideoGenerator(kba=False, **TINY)
    net.load_state_dict(reference.state_dict())
    x = torch.randn(2, 6, 32, 32)
    torch.testing.assert_close(net(x), reference(x))
    out, maps = net(x, return_attention=True)
    assert maps == {}


def test_attention_boosts_features_and_zero_attention_is_the_identity_path():
    torch.manual_seed(0)
    net = Fundus2VideoGenerator(kba_stages=["bottleneck", "decoder1"], **TINY)
    plain = GlobalGenerator(6, 3, **TINY)
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("attention.")})
    x = torch.randn(2, 6, 32, 32)
    out, maps = net(x, return_attention=True)
    assert set(maps) == {"bottleneck", "decoder1"}
    assert maps["bottleneck"].shape == (2, 1, 2, 2) and maps["decoder1"].shape == (2, 1, 4, 4)
    assert all(((m > 0) & (m < 1)).all() for m in maps.values())
    assert not torch.allclose(out, plain(x))  # F <- F (1 + A) with A ~ 0.5 changes the output
    # A -> 0 (a very negative last bias) leaves F unchanged: the plain generator's output
    for head in net.attention.values():
        torch.nn.init.constant_(head.body[2].bias, -60.0)
    torch.testing.assert_close(net(x), plain(x), atol=1e-5, rtol=1e-5)
    # an oracle map replaces the predicted one in the boost (the maps returned stay the predicted ones)
    oracle = {"bottleneck": torch.ones(2, 1, 2, 2), "decoder1": torch.zeros(2, 1, 4, 4)}
    boosted, predicted = net(x, return_attention=True, oracle=oracle)
    assert not torch.allclose(boosted, plain(x))
    assert torch.all(predicted["bottleneck"] < 1e-6)


def test_encode_taps_have_the_channels_the_nce_heads_are_built_for():
    net = Fundus2VideoGenerator(**TINY)
    taps = [0, 4, 8, 12, 16]
    features = net.encode(torch.randn(1, 6, 32, 32), taps)
    assert [f.shape[1] for f in features] == [net.channels_at(i) for i in taps] == [6, 8, 16, 32, 64]
    assert [net.downsampling_at(i) for i in taps] == [1, 2, 4, 8, 16]


def test_bad_stage_and_empty_stages_fail_with_the_config_key():
    with pytest.raises(ValueError, match="generator.kba_stages: unknown stage 'neck'"):
        Fundus2VideoGenerator(kba_stages=["neck"], **TINY)
    with pytest.raises(ValueError, match="kba_stages is empty"):
        Fundus2VideoGenerator(kba_stages=[], **TINY)
