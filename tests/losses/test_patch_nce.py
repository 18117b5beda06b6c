"""Mask-enhanced PatchNCE (Fundus2Video, reference_spec 4.5; CUT's InfoNCE)."""

import math

import pytest
import torch
import torch.nn.functional as F

from fundus2ffa.losses.base import LossInputs
from fundus2ffa.losses.patch_nce import PatchNCE, info_nce, resize_mask, sample_locations
from fundus2ffa.nets.generators.fundus2video import Fundus2VideoGenerator


pytestmark = pytest.mark.usefixtures("one_thread")


def loop_reference(query: torch.Tensor, key: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE written out per location: logits [q_i.k_i, q_i.k_j for j != i, -10 at j == i] / tau."""
    losses = []
    for n in range(query.shape[0]):
        for i in range(query.shape[1]):
            logits = [query[n, i] @ key[n, i]]
            logits += [torch.tensor(-10.0) if j == i else query[n, i] @ key[n, j] for j in range(query.shape[1])]
            logits = torch.stack(logits) / tau
            losses.append(-torch.log_softmax(logits, 0)[0])
    return torch.stack(losses).mean()


def test_info_nce_matches_the_per_location_definition():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(2, 5, 8), dim=-1)
    k = F.normalize(torch.randn(2, 5, 8), dim=-1)
    torch.testing.assert_close(info_nce(q, k, 0.07), loop_reference(q, k, 0.07))


def test_info_nce_of_orthonormal_matching_features_has_its_closed_form():
    p, tau = 6, 0.5  # a temperature that keeps the value well above float32 round-off
    q = torch.eye(p)[None]
    # positive logit 1/tau, P - 1 negatives at 0, the diagonal at -10/tau
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + (p - 1) + math.exp(-10 / tau)))
    assert info_nce(q, q.clone(), tau).item() == pytest.approx(expected, rel=1e-6)


def test_keys_are_detached():
    q = F.normalize(torch.randn(1, 4, 3), dim=-1).requires_grad_()
    k = F.normalize(torch.randn(1, 4, 3), dim=-1).requires_grad_()
    info_nce(q, k).backward()
    assert q.grad is not None and k.grad is None


def test_sampling_uniform_in_mask_and_mixed():
    torch.manual_seed(0)
    mask = torch.zeros(10, 10)
    mask[2:5, 3:8] = 1  # 15 locations inside
    inside = set(torch.nonzero(mask.flatten()).flatten().tolist())
    uniform = sample_locations(100, 256, mask, "uniform")
    assert uniform.device.type == "cpu" and sorted(uniform.tolist()) == list(range(100))  # min(256, h w), distinct
    in_mask = sample_locations(100, 10, mask, "in_mask")
    assert set(in_mask.tolist()) <= inside and len(set(in_mask.tolist())) == 10
    topped_up = sample_locations(100, 20, mask, "in_mask")  # 15 inside + 5 others
    assert inside <= set(topped_up.tolist()) and len(set(topped_up.tolist())) == 20
    mixed = sample_locations(100, 20, mask, "mixed")
    assert len(set(mixed[:10].tolist()) & inside) == 10 and len(set(mixed.tolist())) == 20


@pytest.mark.parametrize("sampling", ["in_mask", "mixed"])
def test_in_mask_sampling_is_aligned_with_the_padded_input_at_tap_0(sampling):
    # Tap 0 is the generator's reflection-padded input (32 -> 38 px here, 512 -> 518 in the paper), so the
    # mask must be padded by 3 px like the input, not stretched: where the masked input is non-zero at
    # tap 0 is the reference.
    torch.manual_seed(0)
    generator = Fundus2VideoGenerator(ngf=4, n_blocks=1)
    g = torch.Generator().manual_seed(1)
    mask = (F.avg_pool2d(torch.rand(1, 1, 32, 32, generator=g), 5, 1, 2) > 0.5).float()  # irregular blobs
    mask[..., :, :7] = 1.0  # a band touching the border, where stretching and padding disagree most
    x = (torch.rand(1, 6, 32, 32, generator=g) * 0.9 + 0.1) * mask  # non-zero exactly inside the mask
    tap0 = generator.encode(x, [0])[0]
    assert tap0.shape[-2:] == (38, 38)
    inside_at_tap0 = (tap0.abs().sum(1, keepdim=True) > 0).float()
    assert torch.equal(resize_mask(mask, 38, 38), inside_at_tap0)
    loss = PatchNCE(num_patches=64, sampling=sampling, layers=[0])
    (ids,) = loss.draw_ids([tap0], mask)
    picked = inside_at_tap0.flatten()[ids[0]]
    wanted = 64 if sampling == "in_mask" else 32
    assert picked[:wanted].eq(1).all()  # every in-mask sample lands on masked-in content
    with pytest.raises(ValueError, match="loss.patch_nce.layers"):
        resize_mask(mask, 37, 38)


def nce_setup(**kwargs):
    torch.manual_seed(0)
    generator = Fundus2VideoGenerator(ngf=4, n_blocks=1)
    loss = PatchNCE(num_patches=16, **kwargs)
    loss.build_heads([generator.channels_at(i) for i in loss.layers])
    cf = torch.rand(1, 3, 32, 32) * 2 - 1
    real = torch.rand(1, 3, 32, 32) * 2 - 1
    encoder = lambda x: generator.encode(x, loss.layers)  # noqa: E731
    return generator, loss, cf, real, encoder


def test_heads_are_built_for_the_generator_taps_and_freeze_on_request():
    _, loss, *_ = nce_setup()
    assert [h.mlp[0].in_features for h in loss.heads] == [6, 8, 16, 32, 64]
    assert all(p.requires_grad for p in loss.heads.parameters())
    _, frozen, *_ = nce_setup(freeze_head=True)
    assert not any(p.requires_grad for p in frozen.heads.parameters())


def test_the_knowledge_mask_masks_the_encoder_inputs():
    generator, loss, cf, real, encoder = nce_setup()
    fakes = [torch.rand(1, 3, 32, 32) * 2 - 1 for _ in range(2)]
    zero_mask = torch.zeros(1, 1, 32, 32)

    def value(fake, mask, mask_inputs=True):
        loss.mask_inputs = mask_inputs
        torch.manual_seed(5)  # same sampled locations
        extra = {"encoder": encoder, "knowledge_mask": mask}
        return loss(LossInputs(cf=cf, real=real, fake=fake, extra=extra)).item()

    # everything masked out: source, fake and real encode the same zeros, so the fake does not matter
    assert value(fakes[0], zero_mask) == pytest.approx(value(fakes[1], zero_mask), abs=1e-6)
    assert value(fakes[0], zero_mask, mask_inputs=False) != pytest.approx(value(fakes[1], zero_mask, mask_inputs=False), abs=1e-4)


def test_loss_averages_nce_against_source_and_real():
    generator, loss, cf, real, encoder = nce_setup()
    fake = torch.rand(1, 3, 32, 32) * 2 - 1
    ones = torch.ones(1, 1, 32, 32)
    doubled = lambda x: torch.cat([x, x], 1)  # noqa: E731
    torch.manual_seed(7)
    both = loss(LossInputs(cf=cf, real=real, fake=fake, extra={"encoder": encoder, "knowledge_mask": ones}))
    torch.manual_seed(7)
    query = encoder(doubled(fake))
    nce_x = loss.nce(query, encoder(doubled(cf)), ones)
    nce_y = loss.nce(query, encoder(doubled(real)), ones)
    torch.testing.assert_close(both, 0.5 * (nce_x + nce_y))


def test_gradients_reach_the_generator_and_the_heads():
    generator, loss, cf, real, encoder = nce_setup()
    fake = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_()
    value = loss(LossInputs(cf=cf, real=real, fake=fake, extra={"encoder": encoder, "knowledge_mask": None}))
    value.backward()
    assert fake.grad.abs().sum() > 0
    assert all(p.grad is not None for p in loss.heads.parameters())
    assert generator.model[1].weight.grad.abs().sum() > 0


def test_unbuilt_heads_and_bad_sampling_fail_clearly():
    with pytest.raises(ValueError, match="loss.patch_nce.sampling"):
        PatchNCE(sampling="random")
    loss = PatchNCE()
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(RuntimeError, match="build_heads"):
        loss(LossInputs(cf=x, real=x, fake=x, extra={"encoder": None}))
