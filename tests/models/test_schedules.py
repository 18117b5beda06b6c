"""Epoch-counted LR schedules in both reference conventions (issue 10, item 6; models/schedules.py)."""

import warnings

import lightning as L
import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

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
    (config,) = module.make_schedulers([optimizer])
    scheduler = config["scheduler"]
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


def junyanz_train_loop(update_at: str, n_epochs: int = 100, n_epochs_decay: int = 100) -> list[float]:
    """A replica of junyanz train.py's epoch loop (lr_policy=linear, epoch_count 1): get_scheduler's
    LambdaLR, and ``model.update_learning_rate()`` (one ``scheduler.step()``) at the END of every epoch, as
    the current train.py calls it after the inner loop, or at its START, as train.py did from 2020 to
    2024. Returns the lr each epoch's optimisation steps use."""
    epoch_count = 1
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    scheduler = LambdaLR(optimizer, lambda c: 1.0 - max(0, c + epoch_count - n_epochs) / float(n_epochs_decay + 1))
    used = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()" (junyanz #1100)
        for _epoch in range(epoch_count, n_epochs + n_epochs_decay + 1):
            if update_at == "start":
                scheduler.step()
            used.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if update_at == "end":
                scheduler.step()
    return used


class LearningRateProbe(GANModule):
    """The smallest GANModule: one parameter, one SGD step per epoch; records the lr each step uses."""

    def __init__(self, convention: str):
        super().__init__()
        self.save_hyperparameters({"schedule": {"constant_epochs": 100, "decay_epochs": 100, "convention": convention}})
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.used: list[float] = []

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        self.used.append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        self.manual_backward((self.weight * batch).sum())
        optimizer.step()

    def configure_optimizers(self):
        optimizer = torch.optim.SGD([self.weight], lr=LR)
        return [optimizer], self.make_schedulers([optimizer])

    def train_dataloader(self):
        return torch.utils.data.DataLoader([torch.ones(1)], batch_size=1)


@pytest.mark.parametrize("convention, update_at", [("pix2pix", "end"), ("pix2pix_epoch_start", "start")])
def test_pix2pix_conventions_match_junyanz_train_loop_in_every_epoch_of_100_plus_100(convention, update_at):
    """Issue 20 item 4: junyanz's current train.py steps the schedule at the end of every epoch (the
    default, pix2pix); from 2020 to 2024 it stepped at the start (pix2pix_epoch_start). A real fit of 200
    epochs per convention, every epoch's lr against the replica of that loop."""
    model = LearningRateProbe(convention)
    trainer = L.Trainer(
        max_epochs=200, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
    )
    trainer.fit(model)
    reference = junyanz_train_loop(update_at)
    assert len(model.used) == len(reference) == 200
    assert model.used == pytest.approx(reference, rel=0, abs=1e-15)
    # 1-based epoch 100, 101 and 200 (the last)
    if convention == "pix2pix":
        assert model.used[99] == LR and model.used[100] == pytest.approx(LR * 100 / 101) and model.used[-1] == pytest.approx(LR / 101)
    else:
        assert model.used[98] == LR and model.used[99] == pytest.approx(LR * 100 / 101) and model.used[-1] == 0.0


def test_family_defaults_and_a_bad_convention():
    expected = {"pix2pix": "pix2pix", "cyclegan": "pix2pix", "saliency_cgan": "pix2pix",
                "pix2pixhd": "pix2pixhd", "fundus2video": "pix2pixhd"}
    for model, convention in expected.items():
        overrides = [f"model={model}"] + (["data=synthetic_video"] if model == "fundus2video" else [])
        assert compose_run(overrides).model.schedule.convention == convention, model
    assert compose_run(["experiment=zhang2024"]).model.schedule.convention == "pix2pixhd"
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    with pytest.raises(ValueError, match="model.schedule.convention must be one of pix2pix|pix2pix_epoch_start|pix2pixhd"):
        constant_then_linear_decay(optimizer, CONSTANT, DECAY, "nvidia")
    with pytest.raises(ConfigError, match="model.schedule.convention"):
        scheduled("nvidia")
