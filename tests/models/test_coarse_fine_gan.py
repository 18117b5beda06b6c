"""CoarseFineGAN (Fundus2Angio's procedure, reference_spec 3.5): one iteration takes 19 optimiser steps
in the code's order, each updating exactly the network it should; the fine losses reach G_coarse only
with coarse_feature_grad; the supervised MSE falls; translate works at any size."""

import itertools

import pytest
import torch

from conftest import compose_run
from fundus2ffa.errors import ConfigError, DataError
from fundus2ffa.models.coarse_fine_gan import frozen
from fundus2ffa.builders import build

D_NAMES = ("d1_fine", "d2_fine", "d1_coarse", "d2_coarse")


TINY = ("generator.ngf=4", "generator.n_blocks_coarse=1", "generator.n_blocks_fine=1", "discriminator.ndf=4")


def make_model(*overrides: str, tiny: tuple[str, ...] = TINY):
    cfg = compose_run(["debug=smoke", "model=fundus2angio", *tiny, *overrides])
    model = build(cfg.model, "model", _recursive_=False)
    optimizers = model.configure_optimizers()[0]
    model.optimizers = lambda: optimizers  # no Trainer: plain optimisers and backward
    model.manual_backward = lambda loss: loss.backward()
    model.logged = []
    model.log_terms = lambda prefix, terms, batch_size: model.logged.append((prefix, {k: float(v.detach()) for k, v in terms.items()}))
    return model, dict(zip(model.optimizer_names, optimizers))


def batch(n: int = 6, size: int = 32, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    cf = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    ffa = (cf.mean(1, keepdim=True) * 0.8).tanh()  # a learnable target
    return {"cf": cf, "ffa": ffa}


def groups(model) -> dict[str, list[torch.Tensor]]:
    out = {"coarse": list(model.generator.coarse.parameters()), "fine": list(model.generator.fine.parameters())}
    out.update({name: list(model.discriminator.nets[name].parameters()) for name in D_NAMES})
    return out


def snapshot(tensors):
    return [t.detach().clone() for t in tensors]


def record_steps(model, optimizers: dict) -> list[tuple[str, set[str]]]:
    """Wrap every optimiser's step to record (optimiser name, parameter groups it changed)."""
    events = []
    for name, opt in optimizers.items():
        original = opt.step

        def step(*args, _name=name, _original=original, **kwargs):
            before = {g: snapshot(ps) for g, ps in groups(model).items()}
            result = _original(*args, **kwargs)
            changed = {g for g, ps in groups(model).items() if any(not torch.equal(a, b) for a, b in zip(before[g], ps))}
            events.append((_name, changed))
            return result

        opt.step = step
    return events


def buffers(module):
    return snapshot(b for name, b in module.named_buffers() if "running" in name)


@pytest.mark.parametrize("fine_new_batch", [False, True])
def test_one_iteration_steps_each_network_in_order(fine_new_batch):
    torch.manual_seed(0)
    model, optimizers = make_model(f"model.fine_new_batch={str(fine_new_batch).lower()}")
    events = record_steps(model, optimizers)
    d_stats = {name: buffers(model.discriminator.nets[name]) for name in D_NAMES}
    at_joint = {}
    original_joint = model.joint_terms

    def joint_terms(draw, feature):  # the discriminators' BN statistics when the joint step starts
        at_joint.update({name: buffers(model.discriminator.nets[name]) for name in D_NAMES})
        return original_joint(draw, feature)

    model.joint_terms = joint_terms
    model.training_step(batch(8 if fine_new_batch else 6), 0)

    d_round = [name for name in D_NAMES for _ in ("real", "fake")]
    assert [name for name, _ in events] == d_round * 2 + ["gc_sup", "gf_sup", "g_joint"]  # 8 x 2 + 3 = 19
    for name, changed in events:
        expected = {"gc_sup": {"coarse"}, "gf_sup": {"fine"}, "g_joint": {"coarse", "fine"}}.get(name, {name})
        assert changed == expected, (name, changed)
    # each D's BN statistics move with its own steps; frozen in the joint step, they stay (Keras semantics)
    for name in D_NAMES:
        assert any(not torch.equal(a, b) for a, b in zip(d_stats[name], at_joint[name]))
        assert all(torch.equal(a, b) for a, b in zip(at_joint[name], buffers(model.discriminator.nets[name])))
    g_logs = dict(model.logged)["g"]
    d_logs = dict(model.logged)["d"]
    assert {"sup_coarse_mse", "sup_fine_mse", "mse_coarse", "mse_fine", "gan", "total"} <= set(g_logs)
    assert {f"gan_{n}" for n in D_NAMES} <= set(g_logs)
    assert {f"{n}_{label}" for n in D_NAMES for label in ("real", "fake")} | {"total"} == set(d_logs)


def test_discriminator_phase_predicts_with_running_statistics():
    torch.manual_seed(0)
    model, optimizers = make_model()
    stats = buffers(model.generator)
    draw = model.split_batch(batch())[0]
    model.discriminator_round(draw, optimizers)
    model.cached_feature(draw)
    assert all(torch.equal(a, b) for a, b in zip(stats, buffers(model.generator)))
    assert model.generator.training  # modes restored
    # batch statistics instead (the PyTorch habit): the D phase moves the generators' statistics
    batch_stats, optimizers = make_model("model.predict_bn_inference=false")
    draw = batch_stats.split_batch(batch())[0]
    g_stats = buffers(batch_stats.generator)
    batch_stats.discriminator_round(draw, optimizers)
    assert any(not torch.equal(a, b) for a, b in zip(g_stats, buffers(batch_stats.generator)))


def flat(outputs) -> torch.Tensor:
    """A discriminator's nested list of feature maps as one detached vector."""
    return torch.cat([t.detach().flatten() for scale in outputs for t in scale])


def joint_step_discriminations(model, draw):
    """Run step 4's terms with the Ds frozen; returns (their inputs, their outputs, D statistics before)."""
    calls = []
    original = model.discriminator.forward

    def forward(*pairs):
        out = original(*pairs)
        calls.append(([p.detach().clone() for p in pairs], {k: flat(v) for k, v in out.items()}))
        return out

    model.discriminator.forward = forward
    stats = buffers(model.discriminator)
    with frozen(model.discriminator):
        model.joint_terms(draw, model.cached_feature(draw))
    del model.discriminator.forward  # the class's forward again (copies must not call this instance)
    (pairs, preds), = calls
    return pairs, preds, stats


@pytest.mark.parametrize("inference", [False, True])
def test_frozen_discriminators_of_the_joint_step_follow_keras(inference):
    # false (default; the official code is multi-backend Keras 2.3.1): the frozen Ds normalise with batch
    # statistics and keep their running statistics; true (tf.keras / TF2): running statistics.
    import copy

    torch.manual_seed(0)
    model, optimizers = make_model(*([] if not inference else ["model.frozen_d_bn_inference=true"]))
    assert model.hparams.frozen_d_bn_inference is inference
    draw = model.split_batch(batch())[0]
    model.discriminator_round(draw, optimizers)  # running statistics away from their initial values
    pairs, preds, stats = joint_step_discriminations(model, draw)
    assert all(torch.equal(a, b) for a, b in zip(stats, buffers(model.discriminator)))  # untouched either way
    reference = copy.deepcopy(model.discriminator).train(not inference)  # batch statistics in train mode
    with torch.no_grad():
        expected = reference(*pairs)
    other = copy.deepcopy(model.discriminator).train(inference)
    with torch.no_grad():
        different = other(*pairs)
    for name in D_NAMES:
        torch.testing.assert_close(preds[name], flat(expected[name]))
        assert not torch.allclose(preds[name], flat(different[name]), atol=1e-4)
    assert model.discriminator.training and all(m.momentum == 0.01 for m in model.discriminator.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("coarse_feature_grad", [False, True])
def test_fine_losses_reach_the_coarse_generator_only_when_enabled(coarse_feature_grad):
    torch.manual_seed(0)
    model, _ = make_model(f"model.coarse_feature_grad={str(coarse_feature_grad).lower()}")
    draw = model.split_batch(batch())[0]
    feature = model.cached_feature(draw)
    coarse = list(model.generator.coarse.parameters())
    with frozen(model.discriminator):
        terms = model.joint_terms(draw, feature)
    fine_losses = terms["gan_d1_fine"] + terms["gan_d2_fine"] + terms["mse_fine"]
    coarse_losses = terms["gan_d1_coarse"] + terms["gan_d2_coarse"] + terms["mse_coarse"]
    from_fine = torch.autograd.grad(fine_losses, coarse, allow_unused=True, retain_graph=True)
    from_coarse = torch.autograd.grad(coarse_losses, coarse, allow_unused=True, retain_graph=True)
    reached = sum(0.0 if g is None else g.abs().sum().item() for g in from_fine)
    assert (reached > 0) == coarse_feature_grad
    assert sum(0.0 if g is None else g.abs().sum().item() for g in from_coarse) > 0
    # the frozen discriminators get no gradient from the joint objective
    model.joint_objective(terms).backward()
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert all(p.requires_grad for p in model.discriminator.parameters())  # unfrozen afterwards


def test_supervised_mse_falls():
    # Measured (lr 1e-3, 4 iterations on one batch): coarse 0.040 -> 0.010, fine 0.341 -> 0.278, each
    # iteration lower than the one before.
    torch.manual_seed(0)
    model, _ = make_model("model.optimizer_g.lr=1e-3")
    data = batch()
    for i in range(4):
        model.training_step(data, i)
    g_logs = [terms for prefix, terms in model.logged if prefix == "g"]
    for key in ("sup_coarse_mse", "sup_fine_mse", "mse_coarse", "mse_fine"):
        values = [terms[key] for terms in g_logs]
        print(key, " -> ".join(f"{v:.4f}" for v in values))
        assert all(b < a for a, b in itertools.pairwise(values)), key
        assert values[-1] < 0.9 * values[0], key


def test_batch_split_and_translate_any_size():
    torch.manual_seed(0)
    model, _ = make_model()
    draws = model.split_batch(batch(6, 32))  # 32 px: the coarse level at 16
    assert [d["cf"].shape[0] for d in draws] == [2, 2, 2]
    assert draws[0]["cf_c"].shape[-1] == 16 and draws[0]["ffa_c"].shape[1] == 1
    assert not torch.equal(draws[0]["cf"], draws[1]["cf"])
    single = model.split_batch(batch(1, 32))  # a batch-1 data config: every draw reuses the batch
    assert len(single) == 3 and all(d["cf"] is single[0]["cf"] for d in single)
    with pytest.raises(DataError, match="data.image_size"):
        model.split_batch(batch(3, 36))

    model.eval()
    with torch.no_grad():
        cf = torch.rand(2, 3, 32, 32) * 2 - 1
        torch.testing.assert_close(model.translate(cf), model.generator(cf)[0])
        odd = model.translate(torch.rand(1, 3, 44, 60) * 2 - 1)
    assert odd.shape == (1, 1, 44, 60) and odd.abs().max() <= 1


def test_configuration_errors():
    with pytest.raises(ConfigError, match="gan"):
        make_model("loss=[gan,mse,l1]")
    with pytest.raises(ConfigError, match="generator=fundus2angio"):
        make_model("generator=resnet_9blocks", tiny=())
    with pytest.raises(ConfigError, match="model.lanczos"):
        make_model("model.lanczos=bicubic")


def test_halving_is_the_codes_6_tap_kernel_and_old_checkpoints_keep_theirs():
    from omegaconf import OmegaConf

    from fundus2ffa.nets.resample import lanczos_halve

    cfg = compose_run(["debug=smoke", "model=fundus2angio", *TINY])
    model = build(cfg.model, "model", _recursive_=False)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert model.lanczos_antialias is False and model.generator.lanczos_antialias is False
    torch.testing.assert_close(model.halve(x), lanczos_halve(x, clamp=None, antialias=False))
    assert not torch.allclose(model.halve(x), lanczos_halve(x, clamp=None, antialias=True))
    old = OmegaConf.to_container(cfg.model, resolve=True)  # hyperparameters of a checkpoint written before the switch
    del old["lanczos_antialias"], old["generator"]["lanczos_antialias"], old["discriminator"]["lanczos_antialias"]
    assert build(OmegaConf.create(old), "model", _recursive_=False).lanczos_antialias is True


def test_halving_keeps_the_overshoot_as_tensorflow_unless_clamped():
    """Issue 20 item 5: tf.image.resize(LANCZOS3) returns the float result unclipped; the earlier default
    clipped it to [-1, 1]. model.lanczos_clamp (false: the code) reaches the model's halving (training
    pairs, translate), the generator's forward and the discriminators' Lanczos pyramid."""
    from omegaconf import OmegaConf

    from fundus2ffa.nets.resample import lanczos_halve

    edge = -torch.ones(1, 3, 32, 32)
    edge[..., 16:] = 1.0  # a step from -1 to 1: the Lanczos kernel overshoots on both sides
    raw = lanczos_halve(edge, clamp=None)
    assert raw.max() > 1.0 and raw.min() < -1.0
    cfg = compose_run(["debug=smoke", "model=fundus2angio", *TINY, "discriminator.pyramid=lanczos"])
    model = build(cfg.model, "model", _recursive_=False)
    torch.testing.assert_close(model.halve(edge), raw, rtol=0, atol=0)
    assert model.lanczos_clamp is False and model.lanczos_clamp_range is None
    assert model.generator.lanczos_clamp is False and model.discriminator.lanczos_clamp is False

    clamped = build(compose_run(["debug=smoke", "model=fundus2angio", *TINY, "model.lanczos_clamp=true"]).model, "model",
                    _recursive_=False)
    assert clamped.generator.lanczos_clamp is True and clamped.discriminator.lanczos_clamp is True
    torch.testing.assert_close(clamped.halve(edge), raw.clamp(-1, 1), rtol=0, atol=0)
    eight_bit = build(compose_run(["debug=smoke", "model=fundus2angio", *TINY, "model.lanczos=uint8"]).model, "model",
                      _recursive_=False)
    assert eight_bit.halve(edge).max() == 1.0 and eight_bit.halve(edge).min() == -1.0  # 8-bit levels saturate
    old = OmegaConf.to_container(cfg.model, resolve=True)  # a checkpoint written before the switch: clipped
    del old["lanczos_clamp"], old["generator"]["lanczos_clamp"], old["discriminator"]["lanczos_clamp"]
    assert build(OmegaConf.create(old), "model", _recursive_=False).lanczos_clamp is True
