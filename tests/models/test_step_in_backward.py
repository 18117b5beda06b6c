"""Training levers that must leave the maths unchanged (issue 24): the generator's Adam step inside
backward, the discriminator run once on the real pair, and the residual blocks' convolutions as one
matrix product. Each is compared with the plain path."""

import pytest
import torch
from torch import nn

from conftest import compose_run
from fundus2ffa.models.step_in_backward import StepInBackward, unsupported_reason
from fundus2ffa.run import run

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.InstanceNorm2d(8), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))


@pytest.mark.parametrize("options", [{"fused": True}, {"foreach": False}, {"fused": True, "weight_decay": 0.01}])
@pytest.mark.parametrize("kind", [torch.optim.Adam, torch.optim.AdamW])
def test_a_step_per_parameter_inside_backward_equals_adams_step(kind, options):
    plain, inside = _net(), _net()
    opt_plain = kind(plain.parameters(), lr=2e-3, betas=(0.5, 0.999), **options)
    opt_inside = kind(inside.parameters(), lr=2e-3, betas=(0.5, 0.999), **options)
    helper = StepInBackward(opt_inside)
    seen = []
    for step in range(4):
        x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(step))
        opt_plain.zero_grad(set_to_none=True)
        plain(x).square().mean().backward()
        opt_plain.step()
        opt_inside.zero_grad(set_to_none=True)
        with helper.during():
            inside(x).square().mean().backward()
        seen.append(sum(p.grad is not None for p in inside.parameters()))
        opt_inside.step()
        for group in (opt_plain.param_groups[0], opt_inside.param_groups[0]):
            group["lr"] *= 0.5  # a schedule between steps reaches both
    assert seen == [0, 0, 0, 0]  # every gradient was applied and freed during backward
    for a, b in zip(plain.parameters(), inside.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
    state_a, state_b = opt_plain.state_dict(), opt_inside.state_dict()
    assert state_a["param_groups"] == state_b["param_groups"]
    for key, state in state_a["state"].items():
        for field in ("step", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state_b["state"][key][field], state[field], rtol=1e-6, atol=1e-8)


def test_where_it_cannot_apply_it_says_why():
    net = _net()
    assert "SGD" in unsupported_reason(torch.optim.SGD(net.parameters(), lr=0.1))
    assert "amsgrad" in unsupported_reason(torch.optim.Adam(net.parameters(), amsgrad=True))
    assert "process" in unsupported_reason(torch.optim.Adam(net.parameters()), world_size=2)
    assert "scaler" in unsupported_reason(torch.optim.Adam(net.parameters()), scaler=True)
    with pytest.raises(ValueError, match="cannot run inside backward: SGD"):
        StepInBackward(torch.optim.SGD(net.parameters(), lr=0.1))


PIX2PIXHD = ["debug=smoke", "model=pix2pixhd", "pretrained.vgg19=random", "loss.vgg.imagenet_norm=false", "data.image_size=32",
             "generator.ngf=4", "generator.n_blocks=2", "generator.n_downsampling=2", "discriminator.ndf=4",
             "data.reader.num_pairs=8", "trainer.limit_train_batches=3", "trainer.max_epochs=1", "logger=csv"]


def _fit(tmp_path, name: str, *levers: str) -> dict:
    out = tmp_path / name
    run(compose_run([*PIX2PIXHD, *levers], out))
    import csv

    with (out / "csv" / "metrics.csv").open() as handle:
        losses = [float(r["train/g_total_step"]) for r in csv.DictReader(handle) if r.get("train/g_total_step")]
    return {"losses": losses}


def test_pix2pixhd_levers_leave_losses_and_weights_unchanged_in_a_real_fit(tmp_path):
    """A real Trainer.fit of pix2pixHD (G then D, LSGAN + feature matching + VGG) with each lever against
    the plain path: the same G losses at every step and the same weights after three steps (1e-5)."""
    from fundus2ffa.models import PairedGAN

    weights, installed = {}, {}
    original = PairedGAN.on_train_end

    def keep(self):
        installed[self._name] = bool(self._in_backward)
        original(self)
        weights[self._name] = {k: v.detach().clone() for k, v in self.state_dict().items()}

    runs = {"plain": ["model.step_in_backward=false", "model.d_real_once=false"],
            "levers": ["model.step_in_backward=true", "model.d_real_once=true", "generator.block_conv=gemm"]}
    results = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PairedGAN, "on_train_end", keep)
        for name, levers in runs.items():
            patch.setattr(PairedGAN, "_name", name, raising=False)
            results[name] = _fit(tmp_path, name, *levers)
    assert installed == {"plain": False, "levers": True}
    assert len(results["plain"]["losses"]) == 3
    assert results["levers"]["losses"] == pytest.approx(results["plain"]["losses"], rel=1e-5)
    for key, value in weights["plain"].items():
        torch.testing.assert_close(weights["levers"][key], value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("kind", ["global", "fundus2video"])
def test_checkpointed_residual_blocks_give_the_same_outputs_and_gradients(kind):
    from fundus2ffa.nets.generators.fundus2video import Fundus2VideoGenerator
    from fundus2ffa.nets.generators.pix2pixhd import GlobalGenerator

    def make(checkpoint: bool):
        torch.manual_seed(0)
        if kind == "global":
            return GlobalGenerator(3, 1, ngf=4, n_downsampling=2, n_blocks=2, use_dropout=True, checkpoint_blocks=checkpoint)
        return Fundus2VideoGenerator(ngf=4, n_downsampling=2, n_blocks=2, kba_hidden=8, checkpoint_blocks=checkpoint)

    x = torch.randn(2, 3 if kind == "global" else 6, 32, 32)
    grads = []
    for checkpoint in (False, True):
        net = make(checkpoint).train()
        torch.manual_seed(1)  # dropout draws the same masks (checkpoint replays the random state)
        out = net(x)
        out.square().mean().backward()
        grads.append((out.detach(), [p.grad.clone() for p in net.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-6, atol=1e-7)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_gemm_convolution_equals_conv2d_outputs_and_gradients():
    """nets/blocks/gemm_conv.py against nn.Conv2d: output, input / weight / bias gradients (1e-5), the same
    state-dict keys, and a bf16 autocast forward and backward that runs."""
    from fundus2ffa.nets.blocks.gemm_conv import GemmConv2d

    torch.manual_seed(0)
    native, gemm = nn.Conv2d(16, 24, 3), GemmConv2d(16, 24, 3)
    gemm.load_state_dict(native.state_dict())
    assert list(gemm.state_dict()) == list(native.state_dict())
    x = torch.randn(2, 16, 10, 12, requires_grad=True)
    g = torch.randn(2, 24, 8, 10)
    results = []
    for net in (native, gemm):
        x.grad = None
        net.zero_grad()
        out = net(x)
        out.backward(g)
        results.append([out.detach(), x.grad.clone(), net.weight.grad.clone(), net.bias.grad.clone()])
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gemm(x)
    out.float().square().mean().backward()
    assert out.dtype == torch.bfloat16 and x.grad.dtype == torch.float32 and gemm.weight.grad.dtype == torch.float32
