"""Training levers that must leave the maths unchanged (issue 24): the generator's Adam step inside
backward, the discriminator run once on the real pair, and the residual blocks' convolutions as one
matrix product. Each is compared with the plain path."""

import pytest
import torch
from torch import nn

from conftest import compose_run
from fundus2ffa.models.step_in_backward import StepInBackward, unsupported_reason
from fundus2ffa.nets.blocks.matmul import configure_cpu_matmul
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
    the plain path: the same G losses at every step, the same weights after three steps and the same
    generator and discriminator outputs (1e-5).

    Not compared: the biases of convolutions that feed an affine-free InstanceNorm (pix2pixHD keeps them).
    The norm subtracts them, so their true gradient is zero and what they receive is float rounding,
    which Adam divides by its own square root into lr-sized steps of random sign: they move by about lr
    under any change of summation order (Winograd's included) and change no output, which is compared."""
    from fundus2ffa.models import PairedGAN

    weights, outputs, installed = {}, {}, {}
    original = PairedGAN.on_train_end

    def keep(self):
        installed[self._name] = bool(self._in_backward)
        original(self)
        weights[self._name] = {k: v.detach().clone() for k, v in self.state_dict().items()}
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            fake = self.generator(x)
            outputs[self._name] = [fake, *[p for scale in self.discriminator(torch.cat([x, fake], 1)) for p in scale]]

    runs = {"plain": ["model.step_in_backward=false", "model.d_real_once=false"],
            "levers": ["model.step_in_backward=true", "model.d_real_once=true", "generator.block_conv=gemm"],
            "winograd": ["model.step_in_backward=true", "model.d_real_once=true", "generator.block_conv=winograd",
                         "loss.vgg.conv=winograd", "generator.output_conv=taps"],
            "lean": ["model.step_in_backward=true", "model.d_real_once=true", "generator.block_conv=winograd",
                     "loss.vgg.conv=winograd", "generator.output_conv=taps", "loss.vgg.lean_backward=true",
                     "generator.recompute_pointwise=true", "loss.feature_matching.lean_backward=true",
                     "model.d_free_terms_first=true", "generator.recompute_full_resolution=true", "cpu_matmul=onednn"]}
    results = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PairedGAN, "on_train_end", keep)
        try:
            for name, levers in runs.items():
                patch.setattr(PairedGAN, "_name", name, raising=False)
                results[name] = _fit(tmp_path, name, *levers)
        finally:
            configure_cpu_matmul("torch")  # the setting holds for the process (this xdist worker)
    assert installed == {"plain": False, "levers": True, "winograd": True, "lean": True}
    assert len(results["plain"]["losses"]) == 3
    cancelled = _biases_cancelled_by_norm(PairedGAN)
    assert "generator.model.1.bias" in cancelled and not any("weight" in key for key in cancelled)
    for name in ("levers", "winograd", "lean"):
        assert results[name]["losses"] == pytest.approx(results["plain"]["losses"], rel=1e-5)
        for key, value in weights["plain"].items():
            if key not in cancelled:
                torch.testing.assert_close(weights[name][key], value, rtol=1e-5, atol=1e-6, msg=f"{name}: {key}")
        for a, b in zip(outputs["plain"], outputs[name]):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=name)


def _biases_cancelled_by_norm(module_class) -> set[str]:
    """State-dict keys of the convolution biases that an affine-free InstanceNorm follows directly."""
    from hydra.utils import instantiate

    cfg = compose_run(PIX2PIXHD)
    model = instantiate(cfg.model)
    assert isinstance(model, module_class)
    keys = set()
    for prefix, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (name, conv), (_, norm) in zip(children, children[1:]):
                if isinstance(conv, nn.Conv2d | nn.ConvTranspose2d) and conv.bias is not None \
                        and isinstance(norm, nn.InstanceNorm2d) and not norm.affine:
                    keys.add(f"{prefix}.{name}.bias")
    return keys


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


@pytest.mark.parametrize("kind", ["global", "fundus2video"])
@pytest.mark.parametrize("convs", [{}, {"block_conv": "winograd", "output_conv": "taps"},
                                   {"block_conv": "winograd", "output_conv": "taps", "recompute_full_resolution": True}])
def test_recomputing_pointwise_layers_gives_the_same_outputs_and_gradients_keeping_less(kind, convs):
    """generator.recompute_pointwise (issue 24): InstanceNorm / ReLU / padding recomputed in backward from
    the kept convolution outputs; in Winograd residual blocks, from what comes before them (forward_from);
    with recompute_full_resolution, the stem and the last upsampling too. The same output and parameter
    gradients, bit for bit (the same kernels on the same inputs), with the attention of Fundus2Video
    between segments, and less kept for backward."""
    from fundus2ffa.nets.generators.fundus2video import Fundus2VideoGenerator
    from fundus2ffa.nets.generators.pix2pixhd import GlobalGenerator

    def make(recompute: bool):
        torch.manual_seed(0)
        options = dict(convs) if recompute else {k: v for k, v in convs.items() if k != "recompute_full_resolution"}
        if kind == "global":
            return GlobalGenerator(3, 1, ngf=8, n_downsampling=2, n_blocks=2, recompute_pointwise=recompute, **options)
        return Fundus2VideoGenerator(ngf=8, n_downsampling=2, n_blocks=2, kba_hidden=8, kba_stages=("bottleneck", "decoder1"),
                                     recompute_pointwise=recompute, **options)

    x = torch.randn(2, 3 if kind == "global" else 6, 36, 44)
    results = []
    for recompute in (False, True):
        net = make(recompute).train()
        kept = {}

        def pack(tensor):
            if not isinstance(tensor, nn.Parameter):
                kept[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out = net(x)
        out.square().mean().backward()
        results.append((out.detach(), [p.grad.clone() for p in net.parameters()], sum(kept.values())))
    assert torch.equal(results[1][0], results[0][0])
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.equal(b, a)
    assert results[1][2] < (0.7 if convs else 0.8) * results[0][2], (results[1][2], results[0][2])
    with torch.no_grad():  # evaluation runs the plain sequential
        assert torch.equal(make(True).eval()(x), make(False).eval()(x))


def test_full_resolution_convolutions_are_the_stem_and_the_last_upsampling():
    """recompute_full_resolution follows the resolution through the strided convolutions: in the global
    generator the 7 x 7 stem and the last transposed convolution (not the output convolution, which keeps
    its input anyway); a resize-then-convolve upsampling ends the walk (nothing after it is known to be at
    full resolution), and the option needs recompute_pointwise."""
    from fundus2ffa.nets.blocks.recompute_pointwise import full_resolution_convolutions
    from fundus2ffa.nets.generators.pix2pixhd import GlobalGenerator

    net = GlobalGenerator(3, 1, ngf=8, n_downsampling=2, n_blocks=2, recompute_pointwise=True, recompute_full_resolution=True)
    layers = list(net.model)
    assert [layers.index(c) for c in net.recomputed_convolutions] == [1, net.layer_index("up_conv", 1)]
    assert [layers.index(c) for c in full_resolution_convolutions(layers)] == [1, net.layer_index("up_conv", 1), net.head_start + 1]
    resize = GlobalGenerator(3, 1, ngf=8, n_downsampling=2, n_blocks=2, upsample="resize_conv")
    assert full_resolution_convolutions(resize.model) == [resize.model[1]]
    with pytest.raises(ValueError, match="needs generator.recompute_pointwise=true"):
        GlobalGenerator(3, 1, ngf=8, n_downsampling=2, n_blocks=2, recompute_full_resolution=True)


def test_memory_levers_that_only_reorder_are_bit_for_bit_in_a_real_fit(tmp_path):
    """model.d_free_terms_first (the VGG before D's passes) and generator.recompute_full_resolution change
    when things are computed, never what: a real pix2pixHD fit with every lean lever gives the same losses
    and weights bit for bit with and without them. After every step the discriminator's gradients are
    freed (gan_module.backward_and_step), so none wait through the next generator step."""
    from fundus2ffa.models import PairedGAN

    weights, d_grads = {}, {}
    original = PairedGAN.on_train_batch_end

    def keep(self, outputs, batch, batch_idx):
        original(self, outputs, batch, batch_idx)
        d_grads.setdefault(self._name, []).append(sum(p.grad is not None for p in self.discriminator.parameters()))
        weights[self._name] = {k: v.detach().clone() for k, v in self.state_dict().items()}

    lean = ["model.step_in_backward=true", "model.d_real_once=true", "generator.block_conv=winograd", "loss.vgg.conv=winograd",
            "generator.output_conv=taps", "loss.vgg.lean_backward=true", "generator.recompute_pointwise=true",
            "loss.feature_matching.lean_backward=true"]
    results = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PairedGAN, "on_train_batch_end", keep)
        for name, extra in {"lean": [], "reordered": ["model.d_free_terms_first=true", "generator.recompute_full_resolution=true"]}.items():
            patch.setattr(PairedGAN, "_name", name, raising=False)
            results[name] = _fit(tmp_path, name, *lean, *extra)
    assert len(results["lean"]["losses"]) == 3 and results["reordered"]["losses"] == results["lean"]["losses"]
    for key, value in weights["lean"].items():
        assert torch.equal(weights["reordered"][key], value), key
    assert d_grads == {"lean": [0, 0, 0], "reordered": [0, 0, 0]}


@pytest.mark.parametrize("kind, padding", [("gemm", 0), ("winograd", 0), ("winograd", 1), ("winograd weight route", 0),
                                           ("winograd weight route", 1), ("taps", 0)])
@pytest.mark.parametrize("size", [(10, 12), (9, 7)])
def test_block_convolution_equals_conv2d_outputs_and_gradients(kind, padding, size, monkeypatch):
    """nets/blocks/gemm_conv.py, winograd_conv.py and tap_conv.py against nn.Conv2d: output, input / weight / bias
    gradients (1e-5 of each tensor's largest value) on even and odd maps (Winograd's 2 x 2 tiles then overhang and are cropped), with and
    without zero padding (the VGG's), the Winograd weight gradient by im2col's product (few tiles, as here)
    and by Winograd's own route (many tiles: the threshold lowered), the same state-dict keys, and a bf16
    autocast forward and backward that runs and stays near float32's."""
    from fundus2ffa.nets.blocks import winograd_conv
    from fundus2ffa.nets.blocks.block_conv import BLOCK_CONVS
    from fundus2ffa.nets.blocks.tap_conv import TapConv2d

    if kind == "winograd weight route":
        monkeypatch.setattr(winograd_conv, "WINOGRAD_WEIGHT_GRADIENT_MIN_TILES", 1)
        kind = "winograd"
    torch.manual_seed(0)
    native = nn.Conv2d(16, 24, 3, padding=padding)
    kinds = {**BLOCK_CONVS, "taps": TapConv2d}
    other = kinds[kind](16, 24, 3, padding=padding) if padding else kinds[kind](16, 24, 3)
    other.load_state_dict(native.state_dict())
    assert list(other.state_dict()) == list(native.state_dict())
    x = torch.randn(2, 16, *size, requires_grad=True)
    g = torch.randn(2, 24, size[0] - 2 + 2 * padding, size[1] - 2 + 2 * padding)
    results = []
    for net in (native, other):
        x.grad = None
        net.zero_grad()
        out = net(x)
        out.backward(g)
        results.append([out.detach(), x.grad.clone(), net.weight.grad.clone(), net.bias.grad.clone()])
    for a, b in zip(*results):  # 1e-5 of the tensor's scale: the weight gradient sums 2 x 10 x 12 products
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * max(1.0, a.abs().max().item()))
    x.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = other(x)
    out.float().square().mean().backward()
    assert out.dtype == torch.bfloat16 and x.grad.dtype == torch.float32 and other.weight.grad.dtype == torch.float32
    torch.testing.assert_close(out.float(), results[0][0], rtol=0.05, atol=0.05)
