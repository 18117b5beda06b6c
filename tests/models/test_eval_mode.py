"""model.eval_mode (issue 10, item 11; reference_spec pitfall B4): eval (Lightning, the spec default) or
pix2pix's own test-time behaviour without --eval (dropout active, BatchNorm batch statistics)."""

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from conftest import compose_run
from fundus2ffa.errors import ConfigError
from fundus2ffa.builders import build, build_trainer

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
    assert not torch.equal(first, second)  # dropout is active
    # batch statistics of each image alone: test.py forces batch size 1, so the first image's output
    # does not depend on the batch it comes in (dropout off to see it; issue 20 item 2)
    for m in dropouts:
        m.p = 0.0
    with torch.no_grad():
        torch.testing.assert_close(model.translate(cf)[:1], model.translate(cf[:1]))
        batch_statistics = model.generator(cf)[:1]  # what a batch of 2 through BatchNorm in train mode gives
        assert not torch.allclose(batch_statistics, model.translate(cf[:1]), atol=1e-4)
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


class NormWatch(L.Callback):
    """Records, at every training batch, the generator's BatchNorm momenta and first running mean, and,
    at every validation batch, whether the output equals the images translated one at a time."""

    def __init__(self):
        self.momenta, self.means, self.val_means, self.per_image = [], [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        bns = norms(pl_module.generator)
        self.momenta.append({m.momentum for m in bns})
        self.means.append(bns[0].running_mean.clone())

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.val_means.append(norms(pl_module.generator)[0].running_mean.clone())
        with torch.no_grad():
            alone = torch.cat([pl_module.translate(batch["cf"][i : i + 1]) for i in range(batch["cf"].shape[0])])
        self.per_image.append((batch["cf"].shape[0], torch.allclose(outputs["fake"], alone, atol=1e-5)))


def test_train_mode_evaluation_leaves_batchnorm_learning_in_a_real_fit_with_validation(tmp_path):
    """Issue 20 item 2: Lightning 2.6 restores the training flags after validation without calling
    ``train()``, so the momenta that eval_mode=train sets to 0 for evaluation stayed 0 and the running
    statistics never moved after the sanity check. A real fit with a sanity check and validation after
    every epoch: every training batch must run with BatchNorm's momentum and move the running mean,
    validation must not move it, and validation batches of 2 are translated one image at a time."""
    torch.manual_seed(0)
    cfg = compose_run([
        "debug=smoke", "model=pix2pix", "model.eval_mode=train", "generator.ngf=4", "generator.num_downs=6",
        "generator.use_dropout=false", "discriminator.ndf=4", "data.image_size=64", "data.reader.num_pairs=12",
        "+data.eval_batch_size=2", "trainer.max_epochs=3", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=1", "~callbacks.samples",
    ], tmp_path)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, _recursive_=False)
    watch = NormWatch()
    trainer = build_trainer(cfg, [watch], [])
    trainer.fit(model, datamodule=datamodule)

    assert len(watch.momenta) == 6 and len(watch.val_means) == 4  # sanity check + 3 validations
    assert all(seen == {0.1} for seen in watch.momenta), watch.momenta  # never the evaluation's 0
    means = watch.means + [norms(model.generator)[0].running_mean]
    assert all(not torch.equal(a, b) for a, b in zip(means, means[1:]))  # every training batch moved them
    # each validation (the sanity check, then after epochs 1 and 2) left them where training put them
    assert all(torch.equal(watch.val_means[k], watch.means[2 * k]) for k in range(3))
    assert watch.per_image and all(n == 2 and same for n, same in watch.per_image)
    model.train()
    assert not model.evaluates_in_train_mode and all(m.momentum == 0.1 for m in norms(model.generator))


def test_train_mode_evaluation_freezes_the_momenta_of_every_evaluated_network():
    # the EMA copy is evaluated too: its BatchNorm layers must not learn from evaluation batches either
    model = pix2pix("model.eval_mode=train", "model.ema.enabled=true")
    nets = [model.generator, model.ema["generator"]]
    model.eval()
    model.eval()  # twice: the momenta to restore are still the original ones
    assert all(m.momentum == 0.0 for net in nets for m in norms(net))
    model.train()
    assert all(m.momentum == 0.1 for net in nets for m in norms(net))
