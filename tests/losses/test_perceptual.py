"""The perceptual loss: explicit weight sources, torchvision-compatible VGG19, frozen and not checkpointed."""

import pytest
import torch
from torchvision.models import vgg19

from fundus2ffa.errors import WeightsError
from fundus2ffa.losses.base import LossInputs
from fundus2ffa.losses.perceptual import PerceptualLoss


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A torchvision-format VGG19 state dict (random init; the format is what matters here)."""
    torch.manual_seed(0)
    net = vgg19(weights=None)
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save(net.state_dict(), path)
    return path, net


def test_missing_weights_name_every_way_to_get_them(tmp_path):
    for weights, expected in ((None, "pretrained.vgg19 is not set"), (str(tmp_path / "nope.pth"), "does not exist")):
        with pytest.raises(WeightsError) as error:
            PerceptualLoss(weights=weights)
        message = str(error.value)
        assert expected in message
        assert "vgg19-dcbb9e9d.pth" in message and "torchvision" in message and "timm" in message and "random" in message


def test_a_weight_zero_ablation_needs_no_weights():
    assert PerceptualLoss(weight=0.0, weights=None).backbone is None


def test_features_match_torchvision_vgg19(vgg_file):
    path, reference = vgg_file
    loss = PerceptualLoss(layers=["relu1_1", "relu3_4", "relu5_4"], weights=str(path))
    x = torch.randn(1, 3, 64, 64)
    ours = loss.backbone(x)
    reference = reference.features.eval()
    expected = {"relu1_1": reference[:2](x), "relu3_4": reference[:18](x), "relu5_4": reference[:36](x)}
    for name, value in expected.items():
        torch.testing.assert_close(ours[name], value)


def test_backbone_is_frozen_unregistered_and_follows_the_module(vgg_file):
    path, _ = vgg_file
    loss = PerceptualLoss(weights=str(path))
    assert not list(loss.parameters()) and not loss.state_dict()
    assert all(not p.requires_grad for p in loss.backbone.parameters())
    loss.to(torch.float64)
    assert next(loss.backbone.parameters()).dtype == torch.float64


def test_loss_decreases_when_optimising_an_image_towards_the_target(vgg_file):
    path, _ = vgg_file
    loss = PerceptualLoss(weight=1.0, layers=["relu2_2"], weights=str(path))
    torch.manual_seed(1)
    real = torch.rand(1, 1, 32, 32) * 2 - 1
    fake = torch.zeros(1, 1, 32, 32, requires_grad=True)
    optimiser = torch.optim.Adam([fake], lr=0.05)
    values = []
    for _ in range(30):
        value = loss(LossInputs(cf=real, real=real, fake=fake))
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        values.append(value.item())
    assert values[-1] < 0.5 * values[0]


def test_winograd_vgg_gives_the_native_loss_features_and_gradient(vgg_file):
    """loss.vgg.conv=winograd (stages 3-5 by Winograd F(2x2,3x3), issue 24) against native: the same
    torchvision weights load, the same features, loss and gradient on the fake image (1e-5), on an odd size."""
    from fundus2ffa.nets.blocks.winograd_conv import WinogradConv2d

    path, _ = vgg_file
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    native = PerceptualLoss(layers=layers, weights=str(path), distance="l1")
    winograd = PerceptualLoss(layers=layers, weights=str(path), distance="l1", conv="winograd")
    kinds = [type(m) for m in winograd.backbone.features if isinstance(m, torch.nn.Conv2d)]
    assert kinds == [torch.nn.Conv2d] * 5 + [WinogradConv2d] * 8  # conv3_2 .. conv5_1: 256+ input channels
    torch.manual_seed(2)
    real = torch.rand(1, 1, 72, 88) * 2 - 1
    values, grads = [], []
    for loss in (native, winograd):
        fake = (torch.rand(1, 1, 72, 88, generator=torch.Generator().manual_seed(3)) * 2 - 1).requires_grad_(True)
        value = loss(LossInputs(cf=real, fake=fake, real=real))
        value.backward()
        values.append(value.detach())
        grads.append(fake.grad)
        features = loss.backbone(loss.prepare(real))
        values.append(features["relu5_1"])
    torch.testing.assert_close(values[2], values[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(values[3], values[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-8)


def _saved_bytes(fn) -> int:
    """Bytes of the distinct tensors autograd keeps for backward while ``fn()`` runs (parameters excluded)."""
    storages = {}

    def pack(tensor):
        if not isinstance(tensor, torch.nn.Parameter):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    return out, sum(storages.values())


@pytest.mark.parametrize("conv", ["native", "winograd"])
def test_lean_backward_vgg_gives_the_same_loss_and_gradient_keeping_a_quarter(vgg_file, conv):
    """loss.vgg.lean_backward (issue 24): the frozen VGG keeps ReLU masks, pool positions and L1 signs
    instead of float activations. The loss and the gradient on the fake equal the plain path exactly (the
    same kernels), on an odd size whose pools drop a row and a column, and less than a third is kept."""
    path, _ = vgg_file
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    torch.manual_seed(2)
    real = torch.rand(1, 1, 75, 89) * 2 - 1
    results = []
    for lean in (False, True):
        loss = PerceptualLoss(layers=layers, weights=str(path), distance="l1", conv=conv, lean_backward=lean)
        fake = (torch.rand(1, 1, 75, 89, generator=torch.Generator().manual_seed(3)) * 2 - 1).requires_grad_(True)
        value, kept = _saved_bytes(lambda: loss(LossInputs(cf=real, fake=fake, real=real)))
        value.backward()
        results.append((value.detach(), fake.grad, kept))
    (plain, plain_grad, plain_kept), (lean, lean_grad, lean_kept) = results
    assert torch.equal(lean, plain)
    torch.testing.assert_close(lean_grad, plain_grad, rtol=1e-6, atol=0)
    assert lean_kept < plain_kept / 3, (lean_kept, plain_kept)


def test_sign_l1_equals_l1_loss_value_and_both_gradients():
    from fundus2ffa.losses.sign_l1 import sign_l1

    a = torch.randn(2, 5, 7, 9, requires_grad=True)
    b = torch.randn(2, 5, 7, 9, requires_grad=True)
    with torch.no_grad():
        b[0, 0, 0, :3] = a[0, 0, 0, :3]  # zero differences: sgn 0, as autograd's abs
    expected = torch.nn.functional.l1_loss(a, b)
    grads = torch.autograd.grad(3.5 * expected, (a, b))
    value = sign_l1(a, b)
    assert torch.equal(value, expected)
    for got, want in zip(torch.autograd.grad(3.5 * value, (a, b)), grads):
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match="one shape"):
        sign_l1(a, b[:1])


def test_lean_feature_matching_gives_the_same_loss_and_gradient():
    from fundus2ffa.losses.feature_matching import feature_matching

    torch.manual_seed(0)
    fake = [[torch.randn(1, 4, 9, 9, requires_grad=True), torch.randn(1, 8, 5, 5, requires_grad=True), torch.randn(1, 1, 3, 3)]]
    real = [[torch.randn(1, 4, 9, 9), torch.randn(1, 8, 5, 5), torch.randn(1, 1, 3, 3)]]
    plain, lean = feature_matching(fake, real), feature_matching(fake, real, lean_backward=True)
    assert torch.equal(lean, plain)
    for a, b in zip(torch.autograd.grad(plain, fake[0][:2]), torch.autograd.grad(lean, fake[0][:2])):
        assert torch.equal(b, a)


def test_paired_features_are_forwards_and_mask_bits_round_trip(vgg_file):
    """VGG19Features.paired (the perceptual loss's lockstep pass, issue 24) yields forward's features of
    both images, shallowest first, the target's without gradient; the lean ReLU's bit-packed masks unpack
    to the masks they packed."""
    from fundus2ffa.nets.backbones.vgg import load_vgg19
    from fundus2ffa.nets.blocks.frozen_backward import pack_bits, unpack_bits

    path, _ = vgg_file
    layers = ["relu3_1", "relu1_1", "relu2_1"]
    net = load_vgg19(layers, str(path))
    torch.manual_seed(0)
    x, target = torch.randn(1, 3, 40, 36, requires_grad=True), torch.randn(1, 3, 40, 36)
    paired = list(net.paired(x, target))
    assert [name for name, _, _ in paired] == ["relu1_1", "relu2_1", "relu3_1"]
    with torch.no_grad():
        want_x, want_target = net(x), net(target)
    for name, feature, target_feature in paired:
        assert torch.equal(feature, want_x[name]) and torch.equal(target_feature, want_target[name])
        assert feature.requires_grad and not target_feature.requires_grad
    mask = torch.rand(3, 5, 8) > 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == mask.numel() // 8
    assert torch.equal(unpack_bits(packed, mask.shape), mask)
