"""A registered pair's ``valid`` mask keeps everything outside it out of the losses (issue 11 item 3)."""

import logging

import torch

from fundus2ffa.losses.base import LossInputs, restrict_to_valid
from fundus2ffa.losses.pixel import L1


def test_no_loss_and_no_gradient_outside_valid():
    real = torch.rand(2, 1, 16, 16) * 2 - 1
    fake = torch.zeros(2, 1, 16, 16, requires_grad=True)
    valid = torch.zeros(2, 1, 16, 16)
    valid[..., :8] = 1
    loss = L1()(LossInputs(cf=torch.zeros(2, 3, 16, 16), real=real, fake=restrict_to_valid(fake, real, valid)))
    loss.backward()
    assert fake.grad[valid == 0].abs().max() == 0
    assert fake.grad[valid == 1].abs().min() > 0
    expected = (real * valid).abs().sum() / real.numel()
    assert torch.isclose(loss, expected)


def test_small_split_warns(caplog, tmp_path):
    from conftest import compose_run
    from hydra.utils import instantiate

    cfg = compose_run(["debug=smoke", "data.reader.num_pairs=5", "data.image_size=64"], tmp_path)
    datamodule = instantiate(cfg.data)
    with caplog.at_level(logging.WARNING):
        datamodule.setup("fit")
    small = [name for name, part in datamodule.splits.items() if 0 < len(part) < 3]
    assert small
    for name in small:
        assert f"the {name} split holds only" in caplog.text
