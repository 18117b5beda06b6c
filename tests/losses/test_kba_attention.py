"""Knowledge-mask supervision of the attention maps and the knowledge-aware adversarial term."""

import pytest
import torch
import torch.nn.functional as F

from fundus2ffa.losses.base import LossInputs
from fundus2ffa.losses.kba_attention import AttentionSupervision, dice_loss
from fundus2ffa.losses.knowledge_gan import KnowledgeAwareAdversarial


def inputs(attention, mask):
    x = torch.zeros(1, 3, 8, 8)
    return LossInputs(cf=x, real=x, fake=x, extra={"attention": attention, "knowledge_mask": mask})


def test_bce_against_the_area_downsampled_mask_averaged_over_stages():
    torch.manual_seed(0)
    mask = (torch.rand(2, 1, 16, 16) > 0.7).float()
    attention = {"bottleneck": torch.rand(2, 1, 2, 2), "decoder1": torch.rand(2, 1, 4, 4)}
    expected = torch.stack([
        F.binary_cross_entropy(attention["bottleneck"], F.avg_pool2d(mask, 8)),
        F.binary_cross_entropy(attention["decoder1"], F.avg_pool2d(mask, 4)),
    ]).mean()
    torch.testing.assert_close(AttentionSupervision()(inputs(attention, mask)), expected)
    max_target = AttentionSupervision(target_pool="max").targets(attention, mask)["bottleneck"]
    torch.testing.assert_close(max_target, F.max_pool2d(mask, 8))


def test_dice_and_none():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1
    perfect = {"bottleneck": F.avg_pool2d(mask, 4)}
    assert AttentionSupervision(supervision="dice")(inputs(perfect, mask)).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)).item() > 0.5
    assert not AttentionSupervision(supervision="none").active
    with pytest.raises(ValueError, match="loss.attention.supervision"):
        AttentionSupervision(supervision="l2")


def test_supervision_trains_an_attention_map_towards_the_mask():
    torch.manual_seed(1)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 8:] = 1
    logits = torch.zeros(1, 1, 4, 4, requires_grad=True)
    term = AttentionSupervision(target_pool="max")
    opt = torch.optim.Adam([logits], lr=0.2)
    for _ in range(50):
        opt.zero_grad()
        term(inputs({"bottleneck": torch.sigmoid(logits)}, mask)).backward()
        opt.step()
    assert torch.equal(torch.sigmoid(logits) > 0.5, F.max_pool2d(mask, 4) > 0.5)


def test_knowledge_aware_term_scores_the_masked_pass():
    term = KnowledgeAwareAdversarial(mode="lsgan")
    masked = [[torch.zeros(1, 1, 3, 3)], [torch.ones(1, 1, 2, 2)]]
    x = torch.zeros(1, 3, 8, 8)
    value = term(LossInputs(cf=x, real=x, fake=x, pred_fake=[[torch.ones(1, 1, 3, 3)]], extra={"pred_fake_km": masked}))
    assert value.item() == pytest.approx(0.5)  # mean over scales of MSE(., 1): (1 + 0) / 2
    with pytest.raises(ValueError, match="pred_fake_km"):
        term(LossInputs(cf=x, real=x, fake=x))
