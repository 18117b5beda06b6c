"""What every GAN training procedure here shares: manual optimisation, epoch-counted LR schedules,
image-quality evaluation and the ``translate`` call used by sample grids and prediction.

Subclasses (one per training procedure, not per paper; conventions.md) build their networks from the
configs they are given and implement ``training_step`` and ``translate``. Everything a module is built
from is stored in its hyperparameters, so ``Module.load_from_checkpoint(path)`` rebuilds it.
"""

import contextlib
import functools
import logging
import inspect

import lightning as L
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from fundus2ffa import checkpoint as ckpt_io
from fundus2ffa.errors import ConfigError
from fundus2ffa.targets import check_targets, instantiate
from fundus2ffa.metrics.evaluation import evaluation_scores
from fundus2ffa.metrics.image import MetricTable
from fundus2ffa.models.ema import EMASettings, ema_update, frozen_copy
from fundus2ffa.models.schedules import CONVENTIONS, constant_then_linear_decay, linear_decay_factor
from fundus2ffa.models.step_in_backward import StepInBackward, make_adam_state, unsupported_reason

log = logging.getLogger(__name__)

EVAL_MODES = ("eval", "train")
# submodules only training uses: a light (best-K) checkpoint may leave their weights out
TRAINING_ONLY_MODULES = ("discriminator", "discriminator_km", "d_a", "d_b")


def one_image_at_a_time(method):
    """Wrap a ``translate``-like method ``(self, cf, ...)``: with ``eval_mode=train`` during evaluation,
    run it on each image of the batch alone and concatenate, as pix2pix's test.py (batch size forced to
    1) does; otherwise call it unchanged. :class:`GANModule` applies it to every subclass's ``translate``
    and ``translate_video``, so every caller (validation, test, predict, sample grids, predict.py) gets it."""
    if getattr(method, "one_image_at_a_time", False):
        return method

    @functools.wraps(method)
    def wrapper(self, cf, *args, **kwargs):
        if cf.shape[0] > 1 and self.evaluates_in_train_mode:
            return torch.cat([method(self, cf[i : i + 1], *args, **kwargs) for i in range(cf.shape[0])])
        return method(self, cf, *args, **kwargs)

    wrapper.one_image_at_a_time = True
    return wrapper


class GANModule(L.LightningModule):
    """Base of the GAN LightningModules.

    Args (common to subclasses):
        optimizer_g / optimizer_d: ``_partial_`` optimizer configs (Adam 2e-4, betas (0.5, 0.999) in every paper here).
        schedule: {constant_epochs, decay_epochs, convention: pix2pix | pix2pix_epoch_start | pix2pixhd} of
            the linear-decay policy (models/schedules.py: pix2pixhd starts the decay one epoch later than
            pix2pix, pix2pix_epoch_start one epoch earlier), set at epoch start.
        metrics: {quantize: bool, structure: bool, lpips: bool, lpips_backbone, lpips_heads}; quantize
            evaluates on 8-bit images as saved files are; structure (default true) adds vessel and leakage
            Dice (metrics/structure.py); lpips adds LPIPS v0.1 (AlexNet, metrics/lpips.py; spec 6.2) per image,
            with the trunk from ``pretrained.lpips_backbone`` and the heads from ``pretrained.lpips_heads``.
        eval_mode: eval | train: how the generators run whenever the model is evaluated (validation, test,
            prediction, sample grids). eval (default; reference_spec pitfall B4): dropout off, BatchNorm on
            its running statistics, as Lightning's ``model.eval()``. train: pix2pix's own test.py default
            (without ``--eval``): dropout active and BatchNorm on the statistics of the evaluated image, so
            outputs vary between runs; test.py forces batch size 1 (``opt.batch_size = 1``), so each image
            is translated alone here too (:func:`one_image_at_a_time`), whatever the loader's batch size;
            running statistics are not updated by it (BatchNorm momentum 0 while evaluating, restored when
            training resumes: issue 20 item 2).
        compile: torch.compile the networks (never the LightningModule; conventions.md).
        ema: {enabled, decay, start_step, every_n_steps}: an EMA copy of the generator(s) that
            ``translate`` (validation, test, predict, export) uses when enabled (models/ema.py).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in ("translate", "translate_video"):  # eval_mode=train: one image at a time (test.py)
            if name in cls.__dict__:
                setattr(cls, name, one_image_at_a_time(cls.__dict__[name]))

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self._in_backward: dict[int, StepInBackward] = {}
        self._tables: dict[str, MetricTable] = {}
        self.ema_settings = EMASettings()
        self.ema = None

    # ----------------------------------------------------------------- EMA generator
    def setup_ema(self, config, names: tuple[str, ...] = ("generator",)) -> None:
        """Keep EMA copies of the networks ``names`` (the ones ``translate`` uses) when
        ``model.ema.enabled``; call at the end of ``__init__``, once the networks exist."""
        self.ema_settings = EMASettings.from_config(config)
        if not self.ema_settings.enabled:
            return
        self.ema = torch.nn.ModuleDict({name: frozen_copy(getattr(self, name)) for name in names})
        self.register_buffer("ema_batches", torch.zeros((), dtype=torch.long))  # training batches seen

    def eval_net(self, name: str = "generator") -> torch.nn.Module:
        """The network ``name`` as inference uses it: its EMA copy when ``model.ema.enabled``."""
        if self.ema is not None and name in self.ema:
            return self.ema[name]
        return getattr(self, name)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """Advance the EMA after the batch's optimiser steps (a lerp of weights, no forward pass)."""
        if self.ema is None:
            return
        self.ema_batches += 1
        settings, seen = self.ema_settings, int(self.ema_batches)
        if seen <= settings.start_step:
            decay = 0.0  # follow the raw weights until start_step
        elif (seen - settings.start_step) % settings.every_n_steps == 0:
            decay = float(settings.decay)
        else:
            return
        for name, twin in self.ema.items():
            ema_update(twin, getattr(self, name), decay)

    # ----------------------------------------------------------------- the step inside backward
    def on_train_start(self) -> None:
        """Install the generator's step inside backward (``model.step_in_backward``; models/step_in_backward.py)
        once the trainer has built the optimizers; where it cannot apply, say why and keep the plain step."""
        super().on_train_start()
        if not self.hparams.get("step_in_backward", False) or self._in_backward:
            return
        optimizers = self.optimizers()
        opt_g = (optimizers if isinstance(optimizers, list) else [optimizers])[0]
        raw = getattr(opt_g, "optimizer", opt_g)
        scaler = getattr(self.trainer.precision_plugin, "scaler", None) is not None
        reason = unsupported_reason(raw, self.trainer.world_size, scaler)
        if reason:
            log.warning("model.step_in_backward=true is not applied (%s): the generator steps after backward", reason)
            return
        self._in_backward[id(raw)] = StepInBackward(raw)
        for other in optimizers[1:] if isinstance(optimizers, list) else []:  # the discriminator's Adam state up front too
            make_adam_state(getattr(other, "optimizer", other))

    def on_train_end(self) -> None:
        super().on_train_end()
        for helper in self._in_backward.values():
            helper.remove()
        self._in_backward = {}

    def backward_and_step(self, loss: torch.Tensor, *optimizers) -> None:
        """zero_grad, backward, step for ``optimizers``; an optimizer with the step inside backward
        (``model.step_in_backward``) has each parameter updated and its gradient freed during backward.
        The gradients are freed after the step too (nothing reads them later): otherwise the
        discriminator's (pix2pixHD: 21 MB) would wait through the next generator step, at its peak (issue 24)."""
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        helpers = [self._in_backward[id(getattr(o, "optimizer", o))] for o in optimizers if id(getattr(o, "optimizer", o)) in self._in_backward]
        with contextlib.ExitStack() as stack:
            for helper in helpers:
                stack.enter_context(helper.during())
            self.manual_backward(loss)
        for optimizer in optimizers:
            optimizer.step()  # a no-op for parameters stepped in backward (their gradients are None); Lightning counts it
            optimizer.zero_grad(set_to_none=True)

    # ----------------------------------------------------------------- building
    def store_hparams(self) -> None:
        """Save the caller's constructor arguments as plain containers.

        Plain dicts (not DictConfig) keep checkpoints loadable with ``torch.load(weights_only=True)``
        and let ``load_from_checkpoint`` rebuild the module from the checkpoint alone.
        """
        frame = inspect.currentframe().f_back
        args = inspect.getargvalues(frame)
        values = {name: args.locals[name] for name in args.args if name != "self"}
        plain = {
            k: OmegaConf.to_container(v, resolve=True) if isinstance(v, (DictConfig, ListConfig)) else v
            for k, v in values.items()
        }
        # every class named in them must be on the allow-list before anything is built (they may come
        # from a checkpoint file: Module.load_from_checkpoint outside fundus2ffa.loader too)
        check_targets(plain, "the model's hyperparameters", "model")
        self.save_hyperparameters(plain, logger=False)
        eval_mode = plain.get("eval_mode", "eval")
        if eval_mode not in EVAL_MODES:
            raise ConfigError(
                f"model.eval_mode must be one of {'|'.join(EVAL_MODES)}, got {eval_mode!r} (eval: dropout off and "
                "BatchNorm running statistics; train: pix2pix's test.py default without --eval)"
            )

    @staticmethod
    def build(config):
        """Instantiate a net or loss from its config (None stays None); its ``_target_`` must be on the
        allow-list (fundus2ffa/targets.py): the config may come from a checkpoint's hyperparameters."""
        return None if config is None else instantiate(config, "the model's stored hyperparameters")

    def maybe_compile(self, module):
        if self.hparams.get("compile", False) and module is not None:
            return torch.compile(module)
        return module

    def make_optimizer(self, config, params):
        """An optimizer over ``params`` from a config such as {_target_: torch.optim.Adam, lr: ...}."""
        return instantiate(config, "the model's stored optimizer config", _partial_=True)(params)

    def optimizer_labels(self, count: int) -> tuple[str, ...]:
        """Short names of the ``count`` optimizers ``configure_optimizers`` returns, in order: G (generator),
        D (discriminator), F (PatchNCE heads) by default; the learning-rate monitor logs ``lr-<label>``."""
        labels = ("G", "D", "F")
        return tuple(labels[i] if i < len(labels) else f"opt{i}" for i in range(count))

    def make_schedulers(self, optimizers: list) -> list:
        """One constant-then-linear-decay scheduler per optimizer, named ``lr-<label>`` (optimizer_labels) so the
        learning-rate monitor logs ``lr-G`` / ``lr-D`` rather than ``lr-Adam`` / ``lr-Adam-1``."""
        schedule = self.hparams.get("schedule") or {}
        convention = schedule.get("convention", "pix2pix")
        if convention not in CONVENTIONS:
            raise ConfigError(f"model.schedule.convention must be one of {'|'.join(CONVENTIONS)}, got {convention!r}")
        labels = self.optimizer_labels(len(optimizers))
        return [
            {"scheduler": constant_then_linear_decay(
                opt, int(schedule.get("constant_epochs", 100)), int(schedule.get("decay_epochs", 100)), convention),
             "interval": "epoch", "name": f"lr-{label}"}
            for opt, label in zip(optimizers, labels)
        ]

    def schedule_summary(self, max_epochs: int) -> str:
        """The learning-rate schedule a run of ``max_epochs`` epochs actually follows, in words (the first log line)."""
        schedule = self.hparams.get("schedule") or {}
        constant, decay = int(schedule.get("constant_epochs", 100)), int(schedule.get("decay_epochs", 100))
        convention = schedule.get("convention", "pix2pix")
        planned = f"model.schedule {constant} constant + {decay} decay epochs"
        if max_epochs == constant + decay:
            return f"{planned}, {convention} convention"
        last = linear_decay_factor(max(max_epochs - 1, 0), constant, decay, convention)
        if max_epochs <= constant or last >= 1.0:
            how = "the learning rate stays constant"
        else:
            how = f"the learning rate decays to {last:.2g} x its initial value, not to the planned end"
        return f"trainer.max_epochs={max_epochs} instead of {planned} = {constant + decay}: {how}"

    def on_train_epoch_start(self) -> None:
        """Set every learning rate from the current epoch.

        The schedule is a pure function of the epoch, applied at epoch start rather than stepped at
        epoch end: a checkpoint is written before ``on_train_epoch_end`` runs, and a stepped scheduler
        would then resume one epoch behind.
        """
        self._restore_norm_momenta()  # belt and braces: the evaluation hooks below already did
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.last_epoch = self.current_epoch
            # the LambdaLR's own factors (get_lr() outside step() warns on every epoch)
            factors = [fn(self.current_epoch) for fn in scheduler.lr_lambdas]
            for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, factors):
                group["lr"] = base * factor
            scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record the class, and the run config ``run`` attached as ``fundus2ffa_record``, so ``task=test``
        and ``task=predict`` rebuild the module and its data settings from the checkpoint alone (the
        format: fundus2ffa/checkpoint.py)."""
        checkpoint["fundus2ffa_target"] = f"{type(self).__module__}.{type(self).__qualname__}"
        record = getattr(self, "fundus2ffa_record", None)
        if record:
            checkpoint["fundus2ffa"] = record

    def training_only_modules(self) -> tuple[str, ...]:
        """Names of the submodules that evaluation never runs (the discriminators)."""
        return tuple(name for name in TRAINING_ONLY_MODULES if isinstance(getattr(self, name, None), nn.Module))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A light (best-K) checkpoint left out training-only modules (fundus2ffa/checkpoint.py): they keep
        this module's current weights, so the strict load that follows (Lightning's, the loader's) fits."""
        if not ckpt_io.is_light(checkpoint):
            return
        dropped = tuple(f"{name}." for name in checkpoint[ckpt_io.LIGHT_KEY].get("dropped_modules") or ())
        if not dropped:
            return
        state = checkpoint.setdefault("state_dict", {})
        for key, value in self.state_dict().items():
            if key.startswith(dropped) and key not in state:
                state[key] = value

    # ----------------------------------------------------------------- evaluation mode
    def evaluated_networks(self) -> list[nn.Module]:
        """The networks ``translate`` runs, to which ``eval_mode`` applies."""
        nets = [net for name in ("generator", "g_ab", "g_ba") if isinstance(net := getattr(self, name, None), nn.Module)]
        return nets + (list(self.ema.values()) if self.ema is not None else [])

    @property
    def evaluates_in_train_mode(self) -> bool:
        """True while the module is being evaluated (``eval()``) with ``eval_mode=train``."""
        return not self.training and self.hparams.get("eval_mode", "eval") == "train"

    def _restore_norm_momenta(self) -> None:
        frozen = self.__dict__.setdefault("_eval_bn_momenta", [])
        for norm, momentum in frozen:
            norm.momentum = momentum
        frozen.clear()

    def train(self, mode: bool = True):
        """``eval()`` (Lightning's evaluation loops, prediction) puts the generators in train mode when
        ``eval_mode=train``, with BatchNorm momentum 0 so evaluation leaves the running statistics as they
        are; ``train()`` restores the momenta.

        Lightning 2.6 does not call ``train()`` after validation or test: it writes each submodule's
        captured ``training`` flag back (``_ModuleMode.restore``), which would leave the momenta at 0 for
        the rest of training (running statistics frozen after the sanity check: a checkpoint unusable with
        ``eval_mode=eval`` or after export). The ``on_*_model_eval`` / ``on_*_model_train`` hooks below
        therefore capture and restore the flags themselves and restore the momenta (issue 20 item 2)."""
        super().train(mode)
        frozen = self.__dict__.setdefault("_eval_bn_momenta", [])
        if mode:
            self._restore_norm_momenta()
        elif self.hparams.get("eval_mode", "eval") == "train":
            done = {id(m) for m, _ in frozen}  # eval() twice must not record momentum 0 as the original
            for net in self.evaluated_networks():  # every one of them (CycleGAN's two, EMA copies)
                net.train(True)
                for m in net.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and id(m) not in done:
                        frozen.append((m, m.momentum))
                        done.add(id(m))
                        m.momentum = 0.0
        return self

    def _enter_evaluation(self) -> None:
        """What Lightning's default does (``trainer.model.eval()``), after capturing every submodule's
        training flag (frozen networks stay as they were when training resumes)."""
        self.__dict__["_modes_before_evaluation"] = {name: m.training for name, m in self.named_modules()}
        (self.trainer.model if self._trainer is not None else self).eval()

    def _leave_evaluation(self) -> None:
        """Write the captured training flags back (what Lightning's ``_ModuleMode.restore`` does) and give
        the BatchNorm layers their momenta back (what it does not)."""
        modes = self.__dict__.pop("_modes_before_evaluation", None)
        if modes is None:  # no capture (an evaluation entered some other way): plain train mode
            self.train()
        else:
            for name, module in self.named_modules():
                if name in modes:
                    module.training = modes[name]
        self._restore_norm_momenta()

    def on_validation_model_eval(self) -> None:
        self._enter_evaluation()

    def on_validation_model_train(self) -> None:
        self._leave_evaluation()

    def on_test_model_eval(self) -> None:
        self._enter_evaluation()

    def on_test_model_train(self) -> None:
        self._leave_evaluation()

    def on_predict_end(self) -> None:
        """Lightning 2.6 has no ``on_predict_model_train``: its loop restores the flags after this hook;
        the momenta are restored here."""
        self._restore_norm_momenta()

    # ----------------------------------------------------------------- metrics
    def setup(self, stage: str) -> None:
        """Load the metric networks a run will need before it trains, so missing weights fail at once."""
        self.lpips_network()

    def lpips_network(self):
        """The LPIPS network when ``metrics.lpips`` is on (else None), on this module's device. Shared and
        kept outside the module: checkpoints never carry it."""
        settings = self.hparams.get("metrics") or {}
        if not settings.get("lpips"):
            return None
        from fundus2ffa.metrics.lpips import lpips_network

        return lpips_network(settings.get("lpips_backbone"), settings.get("lpips_heads", "package")).to(self.device)

    # ----------------------------------------------------------------- inference
    def translate(self, cf: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """CF N x 3 x H x W in [-1, 1] -> generated FFA N x 1 x H x W in [-1, 1]."""
        raise NotImplementedError

    def predict_step(self, batch, batch_idx: int):
        return self.translate(batch["cf"])

    # ----------------------------------------------------------------- evaluation
    def _eval_step(self, stage: str, batch) -> dict:
        """Score one batch; returns {"fake": ...} so callbacks (FID) reuse the translation."""
        fake = self.translate(batch["cf"])
        scores = evaluation_scores(fake, batch, self.hparams.get("metrics") or {})
        lpips = self.lpips_network()
        if lpips is not None:
            scores["lpips"] = lpips(fake, batch["ffa"])
        self._tables.setdefault(stage, MetricTable()).add(batch["id"], batch.get("category"), scores)
        return {"fake": fake}

    def _eval_epoch_end(self, stage: str) -> None:
        table = self._tables.pop(stage, MetricTable())
        rows = table.gathered()
        self.eval_rows = getattr(self, "eval_rows", {})
        self.eval_rows[stage] = rows
        for key, value in MetricTable.aggregate(rows).items():
            # every rank holds the gathered value, so no further reduction is needed
            self.log(f"{stage}/{key}", value, prog_bar=key in ("psnr", "ssim"), sync_dist=False, rank_zero_only=False)

    def validation_step(self, batch, batch_idx: int) -> dict:
        return self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx: int) -> dict:
        return self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # ----------------------------------------------------------------- logging
    def log_terms(self, prefix: str, terms: dict[str, torch.Tensor], batch_size: int) -> None:
        """Log ``train/<prefix>_<name>`` for every term (unweighted values)."""
        self.log_dict(
            {f"train/{prefix}_{name}": value.detach() for name, value in terms.items()},
            on_step=True, on_epoch=True, batch_size=batch_size,
        )
        if "total" in terms:  # the progress bar's G / D columns (not sent to the loggers: train/*_total are)
            self.log(prefix.upper(), terms["total"].detach(), prog_bar=True, logger=False, on_step=True, on_epoch=False,
                     batch_size=batch_size)
