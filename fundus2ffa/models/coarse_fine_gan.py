"""Fundus2Angio's training procedure (Kamran et al., ISVC 2020; reference_spec 3.5, pitfalls A2, A3, A7):
a coarse and a fine generator, four PatchGAN discriminators, and an alternating schedule of 19
separate optimiser steps per iteration.

One ``training_step`` is one iteration of the official Keras loop:

1. Discriminator phase, ``d_rounds`` (2) times, each on its own random batch: Lanczos-halve CF and FFA
   (``tf.image.resize(LANCZOS3)``, not antialiased: ``lanczos_antialias``; not clipped: the float result
   keeps the kernel's overshoot outside [-1, 1], ``lanczos_clamp``),
   predict fake_256 and the coarse feature with G_coarse and fake_512 with G_fine, then eight separate
   Adam steps: for each of d1_fine, d2_fine, d1_coarse, d2_coarse, one step on real -> 1 and one on
   fake -> 0 (LSGAN).
2. G_coarse supervised step on a new batch: cache the coarse feature *before* the update (no gradient),
   then one Adam step on MSE(G_coarse(CF_256), FFA_256).
3. G_fine supervised step on the same batch (``fine_new_batch=true``: a new one, as the paper says):
   one Adam step on MSE(G_fine(CF_512, cached feature), FFA_512).
4. Joint step on that batch, discriminators frozen: both generators take one Adam step on
   ``gan.weight * sum of the 4 LSGAN terms + mse.weight * (MSE_coarse + MSE_fine)`` (Keras loss weights
   [1, 1, 1, 1, 10, 10]). G_fine gets the cached feature as a constant input, so no gradient from the
   fine losses reaches G_coarse (the code; ``coarse_feature_grad=true`` feeds the live feature instead).

Keras quirks kept (A2): the generators are updated by three independent Adam states (``opt_gc_sup``,
``opt_gf_sup``, ``opt_g_joint``) and every discriminator has its own.

BatchNorm modes, two defaults this module derives from Keras' semantics (the spec does not state them):
``predict_bn_inference``: Keras' ``predict`` always runs BatchNorm in inference mode, so the fakes of
step 1 and the cached feature of step 2 use the generators' running statistics (and do not update
them). ``frozen_d_bn_inference``: the official code is multi-backend Keras 2.3.1 (``import keras``), where
``trainable=False`` only stops weight updates: the frozen discriminators inside the GAN model of step 4
normalise with *batch* statistics (the training phase), and since a non-trainable nested model reports
no updates (``Network.updates`` is empty when not trainable; the loop sets ``trainable=False`` right
before the GAN model's first, lazily compiled, ``train_on_batch``), their moving statistics stay as they
are (keras-team/keras issue 9522; PR 13892, which would have changed it, was closed unmerged). That is
the default, false. true = inference mode (running statistics), which is what tf.keras (TF2) does for a
frozen BatchNorm; an earlier version of this module defaulted to it.

Batches: the Keras loop draws each of its random batches itself. Here the data loader supplies them:
a loader batch of ``k * B`` samples is split into ``k`` batches of B, ``k = d_rounds + 1`` (+1 with
``fine_new_batch``), so the isfahan_fundus2angio data config loads 12 = 3 x 4 (the paper's batch of 4).
A loader batch smaller than ``k`` (the batch-1 data configs) is reused for every draw, with a warning.

Training inputs must have sides divisible by 8 (halving, then G_coarse's two downsamplings); the
coarse level runs at half the input size, so 512 crops give the paper's 256/512 pair and the 256 px
synthetic retina a 128/256 one. ``translate`` accepts any size: it reflection-pads to a multiple of 8.
"""

import contextlib
import logging

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from fundus2ffa.errors import ConfigError, DataError
from fundus2ffa.losses.adversarial import AdversarialLoss
from fundus2ffa.losses.base import LossInputs
from fundus2ffa.models.gan_module import GANModule
from fundus2ffa.nets.resample import lanczos_halve

log = logging.getLogger(__name__)

LANCZOS_MODES = ("float", "uint8")
MULTIPLE = 8  # halving x two stride-2 downsamplings of G_coarse


@contextlib.contextmanager
def inference_mode_bn(module: nn.Module, enabled: bool = True):
    """Run ``module`` in eval mode (BatchNorm on running statistics, which stay untouched), then restore
    every submodule's previous mode."""
    if not enabled:
        yield
        return
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


@contextlib.contextmanager
def batch_stats_without_update(module: nn.Module):
    """BatchNorm layers of ``module`` normalise with batch statistics (if in training mode) but leave their
    running statistics as they are (momentum 0 inside the block): Keras 2.3.1's frozen nested model."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m, m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, count in saved:
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Parameters of ``module`` do not require grad inside the block (restored afterwards)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class CoarseFineGAN(GANModule):
    """Fundus2Angio's coarse/fine GAN and its alternating training schedule (reference_spec 3.5).

    Args:
        generator: config of a :class:`~fundus2ffa.nets.generators.fundus2angio.CoarseFineGenerator`
            (anything with ``coarse(x) -> (image, feature)`` and ``fine(x, feature) -> image``).
        discriminator: config of a
            :class:`~fundus2ffa.nets.discriminators.fundus2angio.Fundus2AngioDiscriminators`.
        losses: {gan: AdversarialLoss (mode lsgan, labels 1/0: the code; fake_label=-1 is the paper's
            equation, A7), mse: MSE (weight 10)}; no other terms.
        optimizer_g / optimizer_d: ``_partial_`` optimizer configs; one instance per generator
            optimiser (3) and per discriminator (4).
        schedule: {constant_epochs: 100, decay_epochs: 0}: the paper trains at a constant rate.
        d_rounds: discriminator phases per iteration (2).
        fine_new_batch: G_fine's supervised (and the joint) step on a new batch (paper) instead of
            G_coarse's batch (code, default).
        coarse_feature_grad: let the joint step back-propagate the fine losses into G_coarse through a
            live coarse feature (false: the cached constant, as the code).
        predict_bn_inference: step 1's fakes and the cached feature with BatchNorm in inference mode
            (Keras ``predict``); see the module docstring.
        frozen_d_bn_inference: the frozen discriminators of step 4 in inference mode (tf.keras / TF2
            semantics); false (default, Keras 2.3.1 as the code): batch statistics, running ones untouched.
        lanczos: float (the code: tf.image.resize on [-1, 1] floats) | uint8 (the halved real images
            rounded to 8-bit levels, as the SZU reproduction's PIL path on uint8 gives).
        lanczos_antialias: false (the code: TensorFlow's default, a 6-tap halving kernel) | true (the
            stretched 12-tap kernel of PIL / antialias=True); nets/resample.py. None (a checkpoint written
            before the switch existed) means true, the kernel such a model was trained with.
        lanczos_clamp: false (the code: ``tf.image.resize`` returns the float result as it is, overshoot
            outside [-1, 1] included; about 1-1.6 % of the pixels of a real FFA frame, issue 20 item 5) |
            true (clip to [-1, 1], the earlier default, after the spec's "clamp afterwards", 3.3). With
            ``lanczos=uint8`` the result is always clipped (8-bit levels saturate, as PIL's path). None (a
            checkpoint written before the switch existed) means true, the halving it was trained with.
        metrics: {quantize}; compile: torch.compile the networks.
        ema: {enabled, decay, start_step, every_n_steps}: EMA of G_coarse and G_fine (models/ema.py).
    """

    def __init__(
        self,
        generator: DictConfig,
        discriminator: DictConfig,
        losses: DictConfig,
        optimizer_g: DictConfig,
        optimizer_d: DictConfig,
        schedule: DictConfig | None = None,
        d_rounds: int = 2,
        fine_new_batch: bool = False,
        coarse_feature_grad: bool = False,
        predict_bn_inference: bool = True,
        frozen_d_bn_inference: bool = False,
        lanczos: str = "float",
        lanczos_antialias: bool | None = None,
        lanczos_clamp: bool | None = None,
        metrics: DictConfig | None = None,
        eval_mode: str = "eval",
        compile: bool = False,
        ema: DictConfig | None = None,
    ):
        super().__init__()
        if lanczos not in LANCZOS_MODES:
            raise ConfigError(f"model.lanczos must be one of {'|'.join(LANCZOS_MODES)}, got {lanczos!r}")
        if int(d_rounds) < 1:
            raise ConfigError(f"model.d_rounds must be at least 1, got {d_rounds}")
        if discriminator is None:
            raise ConfigError("model=fundus2angio needs its discriminators; set discriminator=fundus2angio")
        self.store_hparams()
        if lanczos_antialias is None:
            log.warning("model.lanczos_antialias is not set (a Fundus2Angio checkpoint from before it existed): using the "
                        "antialiased 12-tap Lanczos halving it was trained with; new runs default to the code's 6-tap kernel")
        self.lanczos_antialias = True if lanczos_antialias is None else bool(lanczos_antialias)
        self.lanczos_clamp = True if lanczos_clamp is None else bool(lanczos_clamp)
        self.generator = self._build_network(generator, "generator", "a coarse/fine generator (generator=fundus2angio)")
        self.discriminator = self._build_network(
            discriminator, "discriminator", "the four Fundus2Angio discriminators (discriminator=fundus2angio)"
        )
        for attr in ("coarse", "fine"):
            if not hasattr(self.generator, attr):
                raise ConfigError(
                    f"CoarseFineGAN needs a coarse/fine generator (generator=fundus2angio); "
                    f"{type(self.generator).__name__} has no '{attr}'"
                )
        if not hasattr(self.discriminator, "discriminate"):
            raise ConfigError(
                f"CoarseFineGAN needs the four Fundus2Angio discriminators (discriminator=fundus2angio), "
                f"got {type(self.discriminator).__name__}"
            )
        self.losses = nn.ModuleDict({name: self.build(cfg) for name, cfg in (losses or {}).items() if cfg is not None})
        extra = sorted(set(self.losses) - {"gan", "mse"})
        gan = self.losses["gan"] if "gan" in self.losses else None  # noqa: SIM401 (a ModuleDict has no get)
        if extra or "mse" not in self.losses or not isinstance(gan, AdversarialLoss):
            raise ConfigError(
                f"model=fundus2angio trains with exactly two loss terms, gan (an AdversarialLoss) and mse; got "
                f"{sorted(self.losses)} (use loss=[gan,mse]; set loss.gan.weight=0 to drop the adversarial terms)"
            )
        self.gan, self.mse = self.losses["gan"], self.losses["mse"]
        if compile:
            self.generator.coarse = self.maybe_compile(self.generator.coarse)
            self.generator.fine = self.maybe_compile(self.generator.fine)
            for name in self.discriminator.names:
                self.discriminator.nets[name] = self.maybe_compile(self.discriminator.nets[name])
        self.d_names = tuple(self.discriminator.names)
        self._warned_small_batch = False
        self.setup_ema(ema, ("generator",))  # both G_coarse and G_fine

    # ----------------------------------------------------------------- inference
    def _build_network(self, cfg, key: str, needed: str):
        """Build the generator or discriminator; the model config passes ``lanczos_antialias`` and
        ``lanczos_clamp`` to both, so a network of another family fails on those keywords: say which network
        this procedure needs instead."""
        try:
            return self.build(cfg)
        except Exception as exc:  # noqa: BLE001 - Hydra wraps the TypeError in its own exception
            for option in ("lanczos_antialias", "lanczos_clamp"):
                if option in str(exc):
                    raise ConfigError(f"CoarseFineGAN needs {needed}; {key}={cfg.get('_target_') if hasattr(cfg, 'get') else cfg} "
                                      f"does not take model.{option}") from exc
            raise

    @property
    def lanczos_clamp_range(self) -> tuple[float, float] | None:
        """What the halving clips to: None (the code's unclipped floats) unless ``lanczos_clamp`` or the
        8-bit path (whose levels saturate at 0 and 255)."""
        return (-1.0, 1.0) if self.lanczos_clamp or self.hparams.lanczos == "uint8" else None

    def halve(self, x: torch.Tensor) -> torch.Tensor:
        """The 512 -> 256 step: Lanczos-3 on [-1, 1] floats (optionally 8-bit); 6 taps as the code's
        tf.image.resize unless ``lanczos_antialias``; unclipped as the code unless ``lanczos_clamp``."""
        return lanczos_halve(
            x, clamp=self.lanczos_clamp_range, quantize=self.hparams.lanczos == "uint8", antialias=self.lanczos_antialias
        )

    def translate(self, cf: torch.Tensor) -> torch.Tensor:
        """Lanczos-halve the CF, G_coarse's feature, G_fine's output (reference_spec 3.6); any size."""
        height, width = cf.shape[-2:]
        pad_h, pad_w = (-height) % MULTIPLE, (-width) % MULTIPLE
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            cf = F.pad(cf, (0, pad_w, 0, pad_h), mode=mode)
        generator = self.eval_net("generator")
        _, feature = generator.coarse(self.halve(cf))
        return generator.fine(cf, feature)[..., :height, :width]

    # ----------------------------------------------------------------- optimisers
    def configure_optimizers(self):
        coarse, fine = list(self.generator.coarse.parameters()), list(self.generator.fine.parameters())
        g = self.hparams.optimizer_g
        optimizers = [self.make_optimizer(g, coarse), self.make_optimizer(g, fine), self.make_optimizer(g, coarse + fine)]
        optimizers += [self.make_optimizer(self.hparams.optimizer_d, self.discriminator.nets[n].parameters()) for n in self.d_names]
        return optimizers, self.make_schedulers(optimizers)

    def optimizer_labels(self, count: int) -> tuple[str, ...]:
        """lr-G_coarse, lr-G_fine, lr-G_joint, lr-D_<discriminator> in the learning-rate monitor."""
        return ("G_coarse", "G_fine", "G_joint", *(f"D_{name}" for name in self.d_names))[:count]

    @property
    def optimizer_names(self) -> tuple[str, ...]:
        """Names of :meth:`configure_optimizers`' optimisers, in order."""
        return ("gc_sup", "gf_sup", "g_joint", *self.d_names)

    def _named_optimizers(self) -> dict:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        return dict(zip(self.optimizer_names, optimizers))

    def _step(self, optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()

    # ----------------------------------------------------------------- batches
    @property
    def draws_per_iteration(self) -> int:
        return int(self.hparams.d_rounds) + (2 if self.hparams.fine_new_batch else 1)

    def split_batch(self, batch: dict) -> list[dict]:
        """The loader batch as ``draws_per_iteration`` random batches, each a dict of ``cf``, ``ffa`` (full
        resolution) and ``cf_c``, ``ffa_c`` (Lanczos-halved)."""
        cf, ffa = batch["cf"], batch["ffa"]
        height, width = cf.shape[-2:]
        if height % MULTIPLE or width % MULTIPLE:
            raise DataError(
                f"model=fundus2angio trains on images with sides divisible by {MULTIPLE} (the coarse generator runs at "
                f"half size and downsamples twice), got {height}x{width}; set data.image_size (the crop) to a multiple of {MULTIPLE}"
            )
        k = self.draws_per_iteration
        n = cf.shape[0]
        if n >= k:
            parts = list(zip(torch.tensor_split(cf, k), torch.tensor_split(ffa, k)))
        else:
            if not self._warned_small_batch:
                log.warning(
                    "CoarseFineGAN draws %d batches per iteration from one loader batch, but data.batch_size gives %d "
                    "sample(s); every draw reuses the same batch (set data.batch_size to %d x the per-step batch)", k, n, k,
                )
                self._warned_small_batch = True
            parts = [(cf, ffa)] * k
        draws, halved = [], {}
        for part_cf, part_ffa in parts:
            key = (part_cf.data_ptr(), part_cf.shape[0])
            if key not in halved:  # reused draws are halved once
                halved[key] = (self.halve(part_cf), self.halve(part_ffa))
            cf_c, ffa_c = halved[key]
            draws.append({"cf": part_cf, "ffa": part_ffa, "cf_c": cf_c, "ffa_c": ffa_c})
        return draws

    # ----------------------------------------------------------------- steps
    def discriminator_round(self, draw: dict, optimizers: dict) -> dict[str, torch.Tensor]:
        """Step 1 once: predict the fakes, then real -> 1 and fake -> 0 Adam steps for each D."""
        with torch.no_grad(), inference_mode_bn(self.generator, self.hparams.predict_bn_inference):
            fake_c, feature = self.generator.coarse(draw["cf_c"])
            fake = self.generator.fine(draw["cf"], feature)
        pairs = {
            "fine": (torch.cat([draw["cf"], draw["ffa"]], 1), torch.cat([draw["cf"], fake], 1)),
            "coarse": (torch.cat([draw["cf_c"], draw["ffa_c"]], 1), torch.cat([draw["cf_c"], fake_c], 1)),
        }
        terms = {}
        for name in self.d_names:
            real_pair, fake_pair = pairs["fine" if name.endswith("fine") else "coarse"]
            for label, pair in (("real", real_pair), ("fake", fake_pair)):
                loss = self.gan.loss(self.discriminator.discriminate(name, pair), target_real=label == "real", for_discriminator=True)
                self._step(optimizers[name], loss)
                terms[f"{name}_{label}"] = loss.detach()
        return terms

    @torch.no_grad()
    def cached_feature(self, draw: dict) -> torch.Tensor:
        """G_coarse's feature for ``draw`` as Keras' ``predict`` gives it (the constant of steps 3 and 4)."""
        with inference_mode_bn(self.generator.coarse, self.hparams.predict_bn_inference):
            return self.generator.coarse(draw["cf_c"])[1]

    def coarse_supervised_loss(self, draw: dict) -> torch.Tensor:
        fake_c, _ = self.generator.coarse(draw["cf_c"])
        return self.mse(LossInputs(cf=draw["cf_c"], real=draw["ffa_c"], fake=fake_c))

    def fine_supervised_loss(self, draw: dict, feature: torch.Tensor) -> torch.Tensor:
        fake = self.generator.fine(draw["cf"], feature)
        return self.mse(LossInputs(cf=draw["cf"], real=draw["ffa"], fake=fake))

    def joint_terms(self, draw: dict, feature: torch.Tensor) -> dict[str, torch.Tensor]:
        """Step 4's unweighted terms (with graphs): gan_<d name> for each D, mse_coarse and mse_fine.

        Call with the discriminators frozen. G_fine's feature input is ``feature`` (the cached constant)
        unless ``coarse_feature_grad``, when it is the live coarse feature.
        """
        fake_c, live_feature = self.generator.coarse(draw["cf_c"])
        fake = self.generator.fine(draw["cf"], live_feature if self.hparams.coarse_feature_grad else feature)
        terms = {}
        if self.gan.active:
            bn_mode = inference_mode_bn if self.hparams.frozen_d_bn_inference else batch_stats_without_update
            with bn_mode(self.discriminator):
                preds = self.discriminator(torch.cat([draw["cf"], fake], 1), torch.cat([draw["cf_c"], fake_c], 1))
            for name in self.d_names:
                terms[f"gan_{name}"] = self.gan(LossInputs(cf=draw["cf"], real=draw["ffa"], fake=fake, pred_fake=preds[name]))
        terms["mse_coarse"] = self.mse(LossInputs(cf=draw["cf_c"], real=draw["ffa_c"], fake=fake_c))
        terms["mse_fine"] = self.mse(LossInputs(cf=draw["cf"], real=draw["ffa"], fake=fake))
        return terms

    def joint_objective(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        adversarial = sum(v for k, v in terms.items() if k.startswith("gan_"))
        return self.gan.weight * adversarial + self.mse.weight * (terms["mse_coarse"] + terms["mse_fine"])

    def training_step(self, batch, batch_idx: int) -> None:
        optimizers = self._named_optimizers()
        draws = self.split_batch(batch)
        rounds = int(self.hparams.d_rounds)
        batch_size = draws[0]["cf"].shape[0]

        # 1. discriminators, d_rounds times on fresh batches (skipped when the GAN term is off)
        if self.gan.active:
            d_terms: dict[str, torch.Tensor] = {}
            for draw in draws[:rounds]:
                for key, value in self.discriminator_round(draw, optimizers).items():
                    d_terms[key] = d_terms.get(key, 0.0) + value / rounds
            d_terms["total"] = sum(d_terms.values())
            self.log_terms("d", d_terms, batch_size)

        # 2. G_coarse supervised, caching the feature from before its update
        coarse_draw = draws[rounds]
        fine_draw = draws[rounds + 1] if self.hparams.fine_new_batch else coarse_draw
        feature = self.cached_feature(fine_draw)
        sup_coarse = self.coarse_supervised_loss(coarse_draw)
        self._step(optimizers["gc_sup"], sup_coarse)

        # 3. G_fine supervised on the cached feature
        sup_fine = self.fine_supervised_loss(fine_draw, feature)
        self._step(optimizers["gf_sup"], sup_fine)

        # 4. joint step, discriminators frozen
        with frozen(self.discriminator):
            terms = self.joint_terms(fine_draw, feature)
            total = self.joint_objective(terms)
            self._step(optimizers["g_joint"], total)
        if self.gan.active:
            terms["gan"] = sum(v for k, v in terms.items() if k.startswith("gan_"))
        self.log_terms("g", {"sup_coarse_mse": sup_coarse, "sup_fine_mse": sup_fine, **terms, "total": total}, batch_size)
