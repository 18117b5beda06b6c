"""cpu_matmul (fundus2ffa/nets/blocks/matmul.py, issue 24): the Winograd, im2col and tap convolutions' matrix
products by oneDNN on the CPU. The same products as torch.mm to float32 rounding, counted as FLOPs, only
where they are float32 CPU products of at least ONEDNN_MIN_SIZE in every size; an unknown choice stops a run
before it trains."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from conftest import cli
from fundus2ffa.errors import ConfigError
from fundus2ffa.nets.blocks import matmul
from fundus2ffa.nets.blocks.gemm_conv import GemmConv2d
from fundus2ffa.nets.blocks.tap_conv import TapConv2d
from fundus2ffa.nets.blocks.winograd_conv import WinogradConv2d

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not matmul.onednn_available(), reason="this torch build has no oneDNN")]


@pytest.fixture
def onednn():
    matmul.configure_cpu_matmul("onednn")
    yield
    matmul.configure_cpu_matmul("torch")


def _onednn_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_flop_counts().get("Global", {}).get(torch.ops.mkldnn._linear_pointwise, 0)


def test_products_equal_torchs_where_onednn_takes_them_and_are_torchs_elsewhere(onednn):
    torch.manual_seed(0)
    a, b = torch.randn(96, 64), torch.randn(64, 40)
    assert _onednn_flops(lambda: matmul.mm(a, b)) == 2 * 96 * 64 * 40
    torch.testing.assert_close(matmul.mm(a, b), torch.mm(a, b), rtol=1e-5, atol=1e-5)
    out = torch.empty(96, 40)
    assert matmul.mm(a, b, out=out) is out and torch.allclose(out, a @ b, rtol=1e-5, atol=1e-5)
    batch_a, batch_b = torch.randn(3, 48, 64), torch.randn(3, 64, 32)
    torch.testing.assert_close(matmul.bmm(batch_a, batch_b), torch.bmm(batch_a, batch_b), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(matmul.matmul(a[:48], batch_b), torch.matmul(a[:48], batch_b), rtol=1e-5, atol=1e-5)
    # below the size, in float64 or with the setting back to torch: torch.mm itself, bit for bit
    small = torch.randn(16, 64)
    assert _onednn_flops(lambda: matmul.mm(small, b)) == 0 and torch.equal(matmul.mm(small, b), torch.mm(small, b))
    assert torch.equal(matmul.mm(a.double(), b.double()), torch.mm(a.double(), b.double()))
    matmul.configure_cpu_matmul("torch")
    assert torch.equal(matmul.mm(a, b), torch.mm(a, b))
    with pytest.raises(ConfigError, match="cpu_matmul must be one of torch|onednn"):
        matmul.configure_cpu_matmul("blas")


@pytest.mark.parametrize("kind", ["winograd", "gemm", "taps"])
def test_convolutions_by_onednn_products_equal_conv2d(kind, onednn):
    """Outputs and input / weight / bias gradients against nn.Conv2d (1e-5 of each tensor's largest value),
    at sizes where oneDNN runs the products (checked by the FLOP counter)."""
    torch.manual_seed(1)
    make = {"winograd": lambda: WinogradConv2d(64, 48, 3), "gemm": lambda: GemmConv2d(64, 48, 3),
            "taps": lambda: TapConv2d(64, 1, 7)}[kind]
    ours = make()
    plain = nn.Conv2d(ours.in_channels, ours.out_channels, ours.kernel_size)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(2, 64, 20, 18)
    results = []
    for net in (plain, ours):
        xx = x.clone().requires_grad_(True)
        flops = _onednn_flops(lambda: net(xx).square().sum().backward())
        results.append((flops, [net(x), xx.grad, net.weight.grad, net.bias.grad]))
    assert results[0][0] == 0 and results[1][0] > 0
    for want, got in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * want.abs().max().item())


def test_a_run_with_an_unknown_cpu_matmul_stops_before_training(tmp_path):
    result = cli("debug=smoke", "cpu_matmul=blas", f"paths.output_dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert "cpu_matmul must be one of torch|onednn, got 'blas'" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()
