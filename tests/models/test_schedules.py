"""Epoch-counted LR schedules in both reference conventions (issue 10, item 6; models/schedules.py)."""

import pytest
import torch

from conftest import compose_run
from fundus2ffa.errors import ConfigError
from fundus2ffa.models.gan_module import GANModule
from fundus2ffa.models.schedules import constant_then_linear_decay

LR = 2e-4
CONSTANT, DECAY = 10, 40


def pix2pixhd_reference() -> list[float]:
    """NVIDIA pix2pixHD / Fundus2Video train.py: 1-based epochs 1 .. niter + niter_decay; after each epoch
    > niter, ``lr -= lr0 / niter_decay``. Returns the lr each epoch trains with."""
    lr, used = LR, []
    for epoch in range(1, CONSTANT + DECAY + 1):
        used.append(lr)
        if epoch > CONSTANT:
            lr -= LR / DECAY
    return used


def pix2pix_reference() -> list[float]:
    """junyanz lr_policy=linear as stepped at epoch end: epoch_count 1, the lambda of the scheduler's
    0-based counter ``1 - max(0, counter + epoch_count - n_epochs) / (n_epochs_decay + 1)``."""
    return [LR * (1.0 - max(0, counter + 1 - CONSTANT) / float(DECAY + 1)) for counter in range(CONSTANT + DECAY)]


def scheduled(convention: str) -> list[float]:
    """The lr per epoch as the GAN modules set it (GANModule.make_schedulers from model.schedule)."""
    module = GANModule()
    module.save_hyperparameters({"schedule": {"constant_epochs": CONSTANT, "decay_epochs": DECAY, "convention": convention}})
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    (scheduler,) = module.make_schedulers([optimizer])
    return [LR * scheduler.lr_lambdas[0](epoch) for epoch in range(CONSTANT + DECAY)]


def test_pix2pixhd_convention_runs_epochs_1_to_11_at_full_rate_then_39_40ths_down_to_1_40th():
    ours = scheduled("pix2pixhd")
    assert ours == pytest.approx(pix2pixhd_reference(), rel=0, abs=1e-12)
    assert ours[: CONSTANT + 1] == [LR] * (CONSTANT + 1)
    assert ours[CONSTANT + 1] == pytest.approx(LR * 39 / 40) and ours[-1] == pytest.approx(LR / 40)


def test_pix2pix_convention_is_unchanged_and_one_epoch_earlier():
    ours = scheduled("pix2pix")
    assert ours == pytest.approx(pix2pix_reference(), rel=0, abs=1e-12)
    assert ours[CONSTANT] == pytest.approx(LR * 40 / 41) and ours[-1] == pytest.approx(LR / 41)


def test_family_defaults_and_a_bad_convention():
    expected = {"pix2pix": "pix2pix", "cyclegan": "pix2pix", "saliency_cgan": "pix2pix",
                "pix2pixhd": "pix2pixhd", "fundus2video": "pix2pixhd"}
    for model, convention in expected.items():
        overrides = [f"model={model}"] + (["data=synthetic_video"] if model == "fundus2video" else [])
        assert compose_run(overrides).model.schedule.convention == convention, model
    assert compose_run(["experiment=zhang2024"]).model.schedule.convention == "pix2pixhd"
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    with pytest.raises(ValueError, match="model.schedule.convention must be one of pix2pix|pix2pixhd"):
        constant_then_linear_decay(optimizer, CONSTANT, DECAY, "nvidia")
    with pytest.raises(ConfigError, match="model.schedule.convention"):
        scheduled("nvidia")
