"""model.eval_mode (issue 10, item 11; reference_spec pitfall B4): eval (Lightning, the spec default) or
pix2pix's own test-time behaviour without --eval (dropout active, BatchNorm batch statistics)."""

import pytest
import torch
from torch import nn

from conftest import compose_run
from fundus2ffa.errors import ConfigError
from fundus2ffa.builders import build

pytestmark = pytest.mark.usefixtures("one_thread")


def pix2pix(*overrides: str):
    cfg = compose_run(["debug=smoke", "model=pix2pix", "generator.ngf=4", "discriminator.ndf=4", *overrides])
    return build(cfg.model, "model", _recursive_=False)


def running_stats(module: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for name, b in module.named_buffers() if "running" in name]


def norms(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_train_mode_reproduces_pix2pix_test_time_and_keeps_running_statistics():
    torch.manual_seed(0)
    model = pix2pix("model.eval_mode=train")
    assert model.hparams.eval_mode == "train"
    cf = torch.rand(2, 3, 256, 256) * 2 - 1
    stats = running_stats(model.generator)
    model.eval()  # what Lightning's validation/test/predict loops and predict.py call
    assert model.generator.training and not model.training
    dropouts = [m for m in model.generator.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(m.training for m in dropouts) and all(m.training for m in norms(model.generator))
    with torch.no_grad():
        first, second = model.translate(cf), model.translate(cf)
        one_alone = model.translate(cf[:1])
    assert not torch.equal(first, second)  # dropout is active
    # batch statistics: the first image's output depends on the batch it is in (dropout off to see it)
    for m in dropouts:
        m.p = 0.0
    with torch.no_grad():
        assert not torch.allclose(model.translate(cf)[:1], one_alone, atol=1e-4)
    for m in dropouts:
        m.p = 0.5
    assert all(torch.equal(a, b) for a, b in zip(stats, running_stats(model.generator)))  # evaluation left them
    model.train()
    assert all(m.momentum == 0.1 for m in norms(model.generator))  # restored for training


def test_eval_mode_is_the_default_and_deterministic():
    torch.manual_seed(0)
    model = pix2pix()
    assert model.hparams.eval_mode == "eval"
    model.eval()
    assert not model.generator.training
    cf = torch.rand(2, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model.translate(cf), model.translate(cf), rtol=0, atol=0)
        torch.testing.assert_close(model.translate(cf)[:1], model.translate(cf[:1]))
    with pytest.raises(ConfigError, match="model.eval_mode must be one of eval|train"):
        pix2pix("model.eval_mode=dropout")
