"""What every GAN training procedure here shares: manual optimisation, epoch-counted LR schedules,
image-quality evaluation and the ``translate`` call used by sample grids and prediction.

Subclasses (one per training procedure, not per paper; conventions.md) build their networks from the
configs they are given and implement ``training_step`` and ``translate``. Everything a module is built
from is stored in its hyperparameters, so ``Module.load_from_checkpoint(path)`` rebuilds it.
"""

import inspect

import lightning as L
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from fundus2ffa.errors import ConfigError
from fundus2ffa.targets import check_targets, instantiate
from fundus2ffa.metrics.evaluation import evaluation_scores
from fundus2ffa.metrics.image import MetricTable
from fundus2ffa.models.ema import EMASettings, ema_update, frozen_copy
from fundus2ffa.models.schedules import CONVENTIONS, constant_then_linear_decay

EVAL_MODES = ("eval", "train")


class GANModule(L.LightningModule):
    """Base of the GAN LightningModules.

    Args (common to subclasses):
        optimizer_g / optimizer_d: ``_partial_`` optimizer configs (Adam 2e-4, betas (0.5, 0.999) in every paper here).
        schedule: {constant_epochs, decay_epochs, convention: pix2pix | pix2pixhd} of the linear-decay
            policy (models/schedules.py: pix2pixhd starts the decay one epoch later), set at epoch start.
        metrics: {quantize: bool, structure: bool, lpips: bool, lpips_backbone, lpips_heads}; quantize
            evaluates on 8-bit images as saved files are; structure (default true) adds vessel and leakage
            Dice (metrics/structure.py); lpips adds LPIPS v0.1 (AlexNet, metrics/lpips.py; spec 6.2) per image,
            with the trunk from ``pretrained.lpips_backbone`` and the heads from ``pretrained.lpips_heads``.
        eval_mode: eval | train: how the generators run whenever the model is evaluated (validation, test,
            prediction, sample grids). eval (default; reference_spec pitfall B4): dropout off, BatchNorm on
            its running statistics, as Lightning's ``model.eval()``. train: pix2pix's own test.py default
            (without ``--eval``): dropout active and BatchNorm on the statistics of the evaluated batch, so
            outputs vary between runs and with the batch; running statistics are not updated by it here.
        compile: torch.compile the networks (never the LightningModule; conventions.md).
        ema: {enabled, decay, start_step, every_n_steps}: an EMA copy of the generator(s) that
            ``translate`` (validation, test, predict, export) uses when enabled (models/ema.py).
    """

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
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

    def make_schedulers(self, optimizers: list) -> list:
        schedule = self.hparams.get("schedule") or {}
        convention = schedule.get("convention", "pix2pix")
        if convention not in CONVENTIONS:
            raise ConfigError(f"model.schedule.convention must be one of {'|'.join(CONVENTIONS)}, got {convention!r}")
        return [
            constant_then_linear_decay(
                opt, int(schedule.get("constant_epochs", 100)), int(schedule.get("decay_epochs", 100)), convention
            )
            for opt in optimizers
        ]

    def on_train_epoch_start(self) -> None:
        """Set every learning rate from the current epoch.

        The schedule is a pure function of the epoch, applied at epoch start rather than stepped at
        epoch end: a checkpoint is written before ``on_train_epoch_end`` runs, and a stepped scheduler
        would then resume one epoch behind.
        """
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.last_epoch = self.current_epoch
            for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_lr()):
                group["lr"] = lr
            scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record the class, and the run config ``run`` attached as ``fundus2ffa_record``, so ``task=test``
        and ``task=predict`` rebuild the module and its data settings from the checkpoint alone (the
        format: fundus2ffa/checkpoint.py)."""
        checkpoint["fundus2ffa_target"] = f"{type(self).__module__}.{type(self).__qualname__}"
        record = getattr(self, "fundus2ffa_record", None)
        if record:
            checkpoint["fundus2ffa"] = record

    # ----------------------------------------------------------------- evaluation mode
    def evaluated_networks(self) -> list[nn.Module]:
        """The networks ``translate`` runs, to which ``eval_mode`` applies."""
        nets = [net for name in ("generator", "g_ab", "g_ba") if isinstance(net := getattr(self, name, None), nn.Module)]
        return nets + (list(self.ema.values()) if self.ema is not None else [])

    def train(self, mode: bool = True):
        """``eval()`` (Lightning's evaluation loops, prediction) puts the generators in train mode when
        ``eval_mode=train``, with BatchNorm momentum 0 so evaluation leaves the running statistics as they
        are; ``train()`` restores the momenta."""
        super().train(mode)
        frozen = self.__dict__.setdefault("_eval_bn_momenta", [])
        if mode:
            for norm, momentum in frozen:
                norm.momentum = momentum
            frozen.clear()
        elif self.hparams.get("eval_mode", "eval") == "train":
            for net in self.evaluated_networks():
                net.train(True)
                if not frozen:
                    for m in net.modules():
                        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                            frozen.append((m, m.momentum))
                            m.momentum = 0.0
        return self

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
