"""pix2pixHD feature matching: weights of reference_spec 4.5, detached real features, it trains."""

import torch

from fundus2ffa.losses.base import LossInputs
from fundus2ffa.losses.feature_matching import FeatureMatching, feature_matching
from fundus2ffa.nets.discriminators.multiscale import MultiscaleDiscriminator


def inputs_for(pred_fake, pred_real) -> LossInputs:
    x = torch.zeros(1, 1, 4, 4)
    return LossInputs(cf=x, real=x, fake=x, pred_fake=pred_fake, pred_real=pred_real)


def test_term_declares_it_needs_both_discriminator_outputs():
    assert FeatureMatching.needs_pred_real and FeatureMatching.needs_pred_fake
    assert FeatureMatching().weight == 10.0  # lambda_feat


def test_weights_follow_pix2pixhd():
    # 2 scales x (4 intermediate features + patch map); every fake feature differs from real by 1, the
    # patch maps by 100 (they must not count). Each L1 is 1; weight per layer 4/(3+1) * 1/2 = 0.5; 8 layers.
    shapes = [(1, 2, 8, 8), (1, 4, 4, 4), (1, 8, 2, 2), (1, 8, 3, 3), (1, 1, 3, 3)]
    real = [[torch.zeros(s) for s in shapes] for _ in range(2)]
    fake = [[torch.ones(s) for s in shapes[:-1]] + [torch.full(shapes[-1], 100.0)] for _ in range(2)]
    assert torch.isclose(FeatureMatching()(inputs_for(fake, real)), torch.tensor(4.0))
    # n_layers 2 (3 intermediate features): layer factor 4/3; one scale: scale factor 1
    one = [[torch.ones(2, 2)] * 3 + [torch.zeros(1)]]
    zero = [[torch.zeros(2, 2)] * 3 + [torch.zeros(1)]]
    assert torch.isclose(feature_matching(one, zero), torch.tensor(4.0))
    assert torch.isclose(feature_matching(one, zero, layer_weight=1.0, scale_weight=1.0), torch.tensor(3.0))


def test_zero_for_identical_inputs_and_real_features_carry_no_gradient():
    torch.manual_seed(0)
    d = MultiscaleDiscriminator(4, ndf=4)
    x = torch.randn(1, 4, 32, 32)
    assert FeatureMatching()(inputs_for(d(x), d(x))).item() == 0.0

    real_image = torch.randn(1, 4, 32, 32, requires_grad=True)
    fake_image = torch.randn(1, 4, 32, 32, requires_grad=True)
    loss = FeatureMatching()(inputs_for(d(fake_image), d(real_image)))
    loss.backward()
    assert real_image.grad is None  # the real pass is a target (detached)
    assert fake_image.grad is not None and fake_image.grad.abs().sum() > 0


def test_optimising_the_fake_decreases_the_loss():
    torch.manual_seed(0)
    d = MultiscaleDiscriminator(4, ndf=8)
    for p in d.parameters():
        p.requires_grad_(False)
    cf = torch.rand(1, 3, 32, 32) * 2 - 1
    real = torch.rand(1, 1, 32, 32) * 2 - 1
    fake = torch.zeros(1, 1, 32, 32, requires_grad=True)
    term = FeatureMatching()
    with torch.no_grad():
        pred_real = d(torch.cat([cf, real], 1))
    opt = torch.optim.Adam([fake], lr=0.05)
    losses = []
    for _ in range(25):
        loss = term(inputs_for(d(torch.cat([cf, fake], 1)), pred_real))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::5]
