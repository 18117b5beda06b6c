"""EMA generator (model.ema): the average differs from the raw weights, is what evaluation uses, costs
no forward pass, and resumes exactly; every family builds it (issue 12, item 4)."""

import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_run
from fundus2ffa.errors import ConfigError
from fundus2ffa.models.ema import EMASettings, ema_update
from fundus2ffa.builders import build_trainer
from fundus2ffa.run import run

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = [
    "debug=smoke", "data.reader.num_pairs=8", "data.image_size=64", "generator.num_downs=5", "generator.ngf=4",
    "discriminator.ndf=4", "trainer.limit_train_batches=3", "model.schedule.constant_epochs=1",
    "model.schedule.decay_epochs=2", "~callbacks.samples",
]
EMA = ["model.ema.enabled=true", "model.ema.decay=0.9", "model.ema.start_step=1", "model.ema.every_n_steps=2"]


def test_update_rule_against_a_hand_computed_average():
    raw, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    torch.nn.init.constant_(raw.weight, 1.0)
    torch.nn.init.constant_(ema.weight, 3.0)
    ema_update(ema, raw, 0.75)
    torch.testing.assert_close(ema.weight, torch.full((2, 2), 0.75 * 3.0 + 0.25 * 1.0))
    ema_update(ema, raw, 0.0)
    torch.testing.assert_close(ema.weight, raw.weight)
    with pytest.raises(ConfigError, match="model.ema.decay"):
        EMASettings(decay=1.0)
    with pytest.raises(ConfigError, match=r"unknown model.ema keys \['beta'\]"):
        EMASettings.from_config({"beta": 0.99})


def test_ema_differs_is_used_at_eval_and_costs_no_forward_pass(tmp_path):
    def fit(extra):
        cfg = compose_run([*SMALL, "trainer.max_epochs=1", *extra], tmp_path / "x")
        model = instantiate(cfg.model, _recursive_=False)
        calls = []
        model.generator.register_forward_hook(lambda *a: calls.append(1))
        trainer = build_trainer(cfg, [], [])
        trainer.fit(model, datamodule=instantiate(cfg.data), )
        return model, len(calls)

    torch.manual_seed(0)
    model, calls_with = fit([*EMA, "trainer.limit_val_batches=0"])
    torch.manual_seed(0)
    _, calls_without = fit(["trainer.limit_val_batches=0"])
    assert calls_with == calls_without  # the average is a weight update, no extra generator pass
    assert int(model.ema_batches) == 3
    # batch 1 copies (start_step 1), batch 2 is skipped (every 2), batch 3 averages: differs from raw
    raw, avg = dict(model.generator.named_parameters()), dict(model.ema["generator"].named_parameters())
    assert any(not torch.equal(raw[k], avg[k]) for k in raw)
    assert all(not p.requires_grad for p in avg.values())
    model.eval()
    cf = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model.translate(cf), model.ema["generator"](cf))
        assert (model.translate(cf) - model.generator(cf)).abs().max() > 1e-6


@pytest.mark.parametrize("family, overrides, name", [
    ("fundus2angio", ["model=fundus2angio", "generator.ngf=4", "generator.n_blocks_coarse=1", "generator.n_blocks_fine=1"], "generator"),
    ("cyclegan", ["model=cyclegan", "generator.ngf=4", "generator.n_blocks=1"], "g_ab"),
    ("fundus2video", ["model=fundus2video", "data=synthetic_video", "pretrained.vgg19=random", "generator.ngf=4", "generator.n_blocks=1",
                      "generator.kba_hidden=8", "discriminator.ndf=4", "loss.vgg.weight=0"], "generator"),
])
def test_every_family_translates_with_its_ema_copy(family, overrides, name):
    model = instantiate(compose_run([*overrides, "model.ema.enabled=true"]).model, _recursive_=False).eval()
    with torch.no_grad():
        for p in model.ema[name].parameters():
            p.mul_(0.5)
        cf = torch.rand(1, 3, 32, 32) * 2 - 1
        ema_out = model.translate(cf)
        model.ema = None  # the same module without its average
        raw_out = model.translate(cf)
    assert (ema_out - raw_out).abs().max() > 1e-4


def test_ema_resumes_exactly(tmp_path):
    full = compose_run([*SMALL, *EMA, "trainer.max_epochs=2"], tmp_path / "full")
    run(full)
    part = compose_run([*SMALL, *EMA, "trainer.max_epochs=1"], tmp_path / "part")
    run(part)
    resumed = compose_run(
        [*SMALL, *EMA, "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'part' / 'checkpoints' / 'last.ckpt'}"], tmp_path / "resumed"
    )
    run(resumed)
    load = lambda d: torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]  # noqa: E731
    a, b, middle = load(tmp_path / "full"), load(tmp_path / "resumed"), load(tmp_path / "part")
    ema_keys = [k for k in a if k.startswith("ema.")]
    assert ema_keys and int(a["ema_batches"]) == int(b["ema_batches"]) == 6 and int(middle["ema_batches"]) == 3
    for key in ema_keys:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    assert any(not torch.equal(a[k], middle[k]) for k in ema_keys)  # the average moved after the checkpoint
