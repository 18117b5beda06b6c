"""Fundus2Video's training procedure (Zhang et al., MICCAI 2024; reference_spec 4.3-4.8, pitfalls F1, F4,
F5, F12, B6, B7): an autoregressive conditional GAN that generates an FFA video from one colour fundus
(CF) image, three frames at a time.

Training (spec 4.6), per video of T frames (batch 1 in the code; equal-length batches work too)::

    for n in 0..T-1:
        y_n = frames [n, n+1, n+2] (indices clamped to T-1)           # the target window
        p   = CF                                   if n == 0          # generator input [CF, CF]
              the previous generated window (detached)   with probability pi
              the real window [n-1, n, n+1] (clamped)    otherwise
        one generator (and projection-head) step, then one discriminator step (Adam)

Scheduled sampling: pi = (1 + k) / (2 + k), k = floor(s / step), and pi = 1 once s >= always_after
(step 100, always_after 1000: the code). s counts training videos (a buffer, so a resumed run continues
the schedule) *including the current one*, as the official train.py increments ``total_steps +=
batchSize`` before the forward pass: the first video uses s = 1 and pi first rises at the 100th video
(``scheduled_sampling.count_current: false``, this module's earlier behaviour, counts only the videos
before it: one video late). Every window's graph is freed before the next (its output is
detached, losses are logged as detached per-video means), so peak memory does not grow with T.

Generator objective per window (spec 4.5): 2 LSGAN (pix2pixHD sums over the 2 scales; AdversarialLoss
averages, hence weight 4 in the config) + 10 feature matching + 10 VGG + 5 gradient variance + 1
mask-enhanced PatchNCE + 1 knowledge-aware LSGAN on D(M * [x, y_hat]) + 1 attention supervision (KBA,
spec 4.8). Discriminator: 0.5 (real + fake) + 0.5 (real_KM + fake_KM) on detached fakes. G is stepped
before D on the same forward (the code's order, which is safe because D's terms use detached fakes, B7).

Inference (spec 4.7): :meth:`translate_video` feeds every generated window back; each window adds to
accumulators of frames n, n+1, n+2 (indices >= T skipped) and frame t is the mean of its (up to three)
predictions. Evaluation: per-frame PSNR/SSIM (standard, spec 6.2; and the released code's variants,
6.1, under ``*_compat``) per video, averaged over videos; optional FVD (``metrics.fvd``).
"""

import logging
from collections import defaultdict

import torch
from omegaconf import DictConfig
from torch import nn

from fundus2ffa.errors import ConfigError, DataError
from fundus2ffa.losses.adversarial import AdversarialLoss
from fundus2ffa.losses.base import LossInputs
from fundus2ffa.losses.kba_attention import AttentionSupervision, downsample_mask
from fundus2ffa.losses.knowledge_gan import KnowledgeAwareAdversarial
from fundus2ffa.losses.patch_nce import PatchNCE
from fundus2ffa.metrics.image import MetricTable
from fundus2ffa.models.gan_module import GANModule

log = logging.getLogger(__name__)

KINDS = ("video",)
KM_DISC_MODES = ("shared", "separate")
KBA_MODES = ("predicted", "oracle_train")
SAMPLING_MODES = ("scheduled", "generated", "real")
WINDOW = 3  # frames per generated window (the generator's 3 output channels, spec 4.3)


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def window_indices(n: int, num_frames: int, size: int = WINDOW) -> list[int]:
    """Frames of the window starting at ``n``: n, n+1, ... clamped to the last frame (spec 4.6)."""
    return [min(n + j, num_frames - 1) for j in range(size)]


class AutoregressiveVideoGAN(GANModule):
    """CF -> FFA video by autoregressive 3-frame windows (Fundus2Video, reference_spec section 4).

    Args:
        generator: config of a 6 -> 3 channel generator with ``encode`` (PatchNCE taps), e.g.
            :class:`~fundus2ffa.nets.generators.fundus2video.Fundus2VideoGenerator` (KBA optional).
        discriminator: config of a 6-channel multi-scale discriminator (concat(CF, window)).
        losses: name -> loss-term config. ``gan`` (an AdversarialLoss) is required; the procedure also
            knows ``gan_km`` (KnowledgeAwareAdversarial), ``feature_matching``, ``vgg``,
            ``gradient_variance``, ``patch_nce`` (PatchNCE) and ``attention`` (AttentionSupervision);
            any other LossTerm reading LossInputs works as well. Weight 0 removes a term (ablations).
        optimizer_g / optimizer_d / optimizer_f: ``_partial_`` optimiser configs (Adam 2e-4, betas (0.5,
            0.999) for G, D and the PatchNCE heads F); optimizer_f defaults to optimizer_g.
        schedule: {constant_epochs: 10, decay_epochs: 40} (the code's niter / niter_decay).
        kind: what data the procedure consumes: ``video`` (batches with ``cf`` N x 3 x H x W and
            ``frames`` N x T x C x H x W in [-1, 1], plus ``knowledge_mask`` and ``fov`` N x 1 x H x W);
            model configs are paired with data configs of the same kind.
        km_disc: shared (the code: the KM-masked pass uses the same D) | separate (its own D).
        fm_bug_compat: take feature matching's real features from the KM-masked real pass (the code's
            overwritten variable, F4); default false: the unmasked real pass, like the fake features.
        kba_mode: predicted (default: the boost uses the predicted attention, also at inference) |
            oracle_train (training boosts with the downsampled KM instead; train/test-inconsistent).
        knowledge_mask: use the KM at all (false: the "without KM" ablation: PatchNCE unmasked, no
            knowledge-aware GAN term, no attention supervision).
        scheduled_sampling: {mode: scheduled | generated | real, step: 100, always_after: 1000,
            count_current: true (s includes the current batch's videos, the code) | false (one video late)}.
        num_frames: frames generated when no ground truth gives T (``translate`` and prediction; 12).
        metrics: {quantize, compat_mode, report_compat, fvd, fvd_mode, fvd_clip_length, fvd_weights, lpips,
            lpips_backbone, lpips_heads}: ``lpips``: per-frame LPIPS (AlexNet v0.1, metrics/lpips.py) as lpips,
            and the code's double-mapped spatial variant as lpips_compat (spec 6.1);
            standard PSNR/SSIM (spec 6.2) as psnr, ssim, psnr_fov, ssim_fov, and the released code's
            [-1, 1] variants (6.1) as psnr_compat, ssim_compat (``report_compat``; ``compat_mode`` makes
            psnr/ssim the code's); ``fvd``: FVD with the I3D weights, ``fvd_mode`` dataset (logged as
            fvd) and/or per_video_compat (the paper's per-video number, logged as fvd_compat).
        compile: torch.compile G and D.
        step_in_backward: apply G's Adam step to each parameter as soon as its gradient is complete and free it
            (models/step_in_backward.py; the same maths, less memory: issue 24).
        ema: {enabled, decay, start_step, every_n_steps}: EMA generator (models/ema.py).
    """

    def __init__(
        self,
        generator: DictConfig,
        discriminator: DictConfig,
        losses: DictConfig,
        optimizer_g: DictConfig,
        optimizer_d: DictConfig | None = None,
        optimizer_f: DictConfig | None = None,
        schedule: DictConfig | None = None,
        kind: str = "video",
        km_disc: str = "shared",
        fm_bug_compat: bool = False,
        kba_mode: str = "predicted",
        knowledge_mask: bool = True,
        scheduled_sampling: DictConfig | None = None,
        num_frames: int = 12,
        metrics: DictConfig | None = None,
        eval_mode: str = "eval",
        compile: bool = False,
        ema: DictConfig | None = None,
        step_in_backward: bool = False,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ConfigError(f"model.kind must be one of {'|'.join(KINDS)} for AutoregressiveVideoGAN, got {kind!r}")
        if km_disc not in KM_DISC_MODES:
            raise ConfigError(f"model.km_disc must be one of {'|'.join(KM_DISC_MODES)}, got {km_disc!r}")
        if kba_mode not in KBA_MODES:
            raise ConfigError(f"model.kba_mode must be one of {'|'.join(KBA_MODES)}, got {kba_mode!r}")
        if discriminator is None:
            raise ConfigError("model=fundus2video needs a discriminator (discriminator=fundus2video)")
        if int(num_frames) < 1:
            raise ConfigError(f"model.num_frames must be at least 1, got {num_frames}")
        sampling = {"mode": "scheduled", "step": 100, "always_after": 1000, "count_current": True, **dict(scheduled_sampling or {})}
        if sampling["mode"] not in SAMPLING_MODES:
            raise ConfigError(f"model.scheduled_sampling.mode must be one of {'|'.join(SAMPLING_MODES)}, got {sampling['mode']!r}")
        if int(sampling["step"]) < 1:
            raise ConfigError(f"model.scheduled_sampling.step must be at least 1, got {sampling['step']}")
        self.store_hparams()
        self.sampling = sampling
        self.metric_settings = {
            "quantize": True, "compat_mode": False, "report_compat": True, "fvd": False, "fvd_mode": "dataset",
            "fvd_clip_length": 16, "fvd_weights": None, "lpips": False, **dict(metrics or {}),
        }

        raw_generator = self.build(generator)
        for attr in ("encode", "in_channels", "out_channels"):
            if not hasattr(raw_generator, attr):
                raise ConfigError(
                    f"AutoregressiveVideoGAN needs a pix2pixHD-style generator with encode() (generator=fundus2video); "
                    f"{type(raw_generator).__name__} has no '{attr}'"
                )
        if raw_generator.in_channels != 3 + WINDOW or raw_generator.out_channels != WINDOW:
            raise ConfigError(
                f"the Fundus2Video generator maps concat(CF, previous {WINDOW}-frame window) to the next window: "
                f"generator.in_channels must be {3 + WINDOW} and out_channels {WINDOW}, got "
                f"{raw_generator.in_channels} and {raw_generator.out_channels}"
            )
        self.generator = self.maybe_compile(raw_generator)
        self.discriminator = self.maybe_compile(self.build(discriminator))
        self.discriminator_km = self.maybe_compile(self.build(discriminator)) if km_disc == "separate" else None

        self.losses = nn.ModuleDict({name: self.build(cfg) for name, cfg in (losses or {}).items() if cfg is not None})
        if not isinstance(self.gan, AdversarialLoss):
            raise ConfigError("model=fundus2video needs an adversarial loss named 'gan' (loss.gan, LSGAN in the code)")
        if self.gan_km is not None and not isinstance(self.gan_km, KnowledgeAwareAdversarial):
            raise ConfigError("loss.gan_km must be a fundus2ffa.losses.knowledge_gan.KnowledgeAwareAdversarial")
        if self.patch_nce is not None:
            if not isinstance(self.patch_nce, PatchNCE):
                raise ConfigError("loss.patch_nce must be a fundus2ffa.losses.patch_nce.PatchNCE")
            depth = len(raw_generator.model)
            bad = [i for i in self.patch_nce.layers if not 0 <= i < depth]
            if bad:
                raise ConfigError(f"loss.patch_nce.layers {bad} lie outside the generator's layers 0..{depth - 1}")
            self.patch_nce.build_heads([raw_generator.channels_at(i) for i in self.patch_nce.layers])
        if self.attention_loss is not None and not isinstance(self.attention_loss, AttentionSupervision):
            raise ConfigError("loss.attention must be a fundus2ffa.losses.kba_attention.AttentionSupervision")
        self.has_attention = bool(getattr(raw_generator, "kba_positions", None))
        if kba_mode == "oracle_train" and not self.has_attention:
            raise ConfigError("model.kba_mode=oracle_train needs a generator with attention (generator.kba=true)")

        self.active_terms = []
        for name, term in self.losses.items():
            if not term.active:
                continue
            if name == "attention" and not self.has_attention:
                log.info("generator without knowledge-boosted attention: loss.attention is not used")
                continue
            if name in ("attention", "gan_km") and not knowledge_mask:
                continue
            self.active_terms.append(name)
        self.use_km_disc = "gan_km" in self.active_terms
        self._batchable_g = not _has_batchnorm(raw_generator)
        self._batchable_d = not _has_batchnorm(self.discriminator)
        self.trains_nce_head = self.patch_nce is not None and "patch_nce" in self.active_terms and not self.patch_nce.freeze_head
        # training videos seen so far (the scheduled-sampling counter s); a buffer, so checkpoints keep it
        self.register_buffer("videos_seen", torch.zeros((), dtype=torch.long))
        self._fvd: dict = {}
        self.setup_ema(ema, ("generator",))

    # ----------------------------------------------------------------- named terms
    # properties, not attributes: an attribute would register the term a second time (state_dict twice)
    def _term(self, name: str):
        return self.losses[name] if name in self.losses else None

    @property
    def gan(self):
        return self._term("gan")

    @property
    def gan_km(self):
        return self._term("gan_km")

    @property
    def patch_nce(self):
        return self._term("patch_nce")

    @property
    def attention_loss(self):
        return self._term("attention")

    # ----------------------------------------------------------------- fit-time checks
    def setup(self, stage: str) -> None:
        """Refuse still-image data before anything runs (the model config cannot switch the data group);
        load the LPIPS network if asked for (missing weights fail before training)."""
        super().setup(stage)
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None:
            return
        kind = getattr(datamodule, "kind", "image")  # still-image datamodules carry no kind
        if kind not in KINDS:
            raise ConfigError(
                f"model=fundus2video trains on videos (kind: video) but the data config ({type(datamodule).__name__}) "
                f"serves {kind!r} data; add data=synthetic_video (or data=uwf_video | data=fundus2video_csv data.reader.csv=...)"
            )

    def configure_callbacks(self):
        """Replace a still-image :class:`SampleGrid` of the trainer by :class:`VideoSamples` (same folder,
        count and frequency): Lightning lets a model's callbacks take the place of their parent types."""
        from fundus2ffa.callbacks.samples import SampleGrid
        from fundus2ffa.callbacks.video_samples import VideoSamples

        trainer = self._trainer
        if trainer is None:
            return []
        return [VideoSamples.from_grid(cb) for cb in trainer.callbacks if type(cb) is SampleGrid]

    # ----------------------------------------------------------------- scheduled sampling
    def sampling_probability(self, videos_seen: int) -> float:
        """pi(s): the probability that the previous window is the generated one (spec 4.6)."""
        mode = self.sampling["mode"]
        if mode != "scheduled":
            return 1.0 if mode == "generated" else 0.0
        if videos_seen >= int(self.sampling["always_after"]):
            return 1.0
        k = videos_seen // int(self.sampling["step"])
        return (1.0 + k) / (2.0 + k)

    def sampling_counter(self, num_videos: int) -> int:
        """s for a batch of ``num_videos`` videos per rank: the videos seen before it, plus (``count_current``,
        the code's ``total_steps += batchSize`` before the forward) the batch's videos on all ranks."""
        world = self.trainer.world_size if self._trainer is not None else 1
        current = num_videos * world if self.sampling.get("count_current", True) else 0
        return int(self.videos_seen) + current

    def choose_previous(self, generated: torch.Tensor, real: torch.Tensor, probability: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Per video, the generated previous window with probability ``probability``, else the real one.

        Draws on the CPU from torch's global RNG (seeded, and saved by the RNGState callback). Returns the
        chosen windows and the boolean choice per video (True: generated).
        """
        use_generated = torch.rand(generated.shape[0]) < probability
        mask = use_generated.to(generated.device).view(-1, 1, 1, 1)
        return torch.where(mask, generated, real), use_generated

    # ----------------------------------------------------------------- frames
    @staticmethod
    def grey_frames(frames: torch.Tensor) -> torch.Tensor:
        """N x T x C x H x W frames -> N x T x H x W grey (C = 3 holds the green channel replicated)."""
        return frames[:, :, 0] if frames.shape[2] == 1 else frames.mean(2)

    @staticmethod
    def window(grey: torch.Tensor, n: int) -> torch.Tensor:
        """The window of frames [n, n+1, n+2] (clamped) of N x T x H x W frames: N x 3 x H x W."""
        return grey[:, window_indices(n, grey.shape[1])]

    def _video_batch(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if "frames" not in batch:
            raise DataError(
                "model=fundus2video trains on FFA videos, but the batch has no 'frames' (a still-image data config?); "
                "use a video data config: data=synthetic_video | uwf_video | fundus2video_csv"
            )
        return batch["cf"], self.grey_frames(batch["frames"])

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def translate_video(self, cf: torch.Tensor, num_frames: int | None = None, step=None) -> torch.Tensor:
        """CF N x 3 x H x W in [-1, 1] -> generated video N x T x 1 x H x W in [-1, 1] (spec 4.7).

        The window loop with the previous generated window always fed back; frame t is the mean of the
        predictions of the windows that cover it (t-2, t-1, t; indices >= T skipped). ``num_frames``: T
        (the ground truth's length at evaluation; default ``model.num_frames``, 12). ``step``: what runs
        one window step, concat(CF, previous window) N x 6 x H x W -> next window N x 3 x H x W (default
        the generator, its EMA copy when enabled; inference/tiled.py passes a tiled one).
        """
        step = step or self.eval_net("generator")
        frames = int(num_frames or self.hparams.num_frames)
        n, _, h, w = cf.shape
        total = cf.new_zeros(n, frames, h, w, dtype=torch.float32)
        count = torch.zeros(frames, dtype=torch.float32)
        previous = cf
        for start in range(frames):
            window = step(torch.cat([cf, previous], 1))
            for j in range(WINDOW):
                if start + j < frames:
                    total[:, start + j] += window[:, j].float()
                    count[start + j] += 1
            previous = window
        return (total / count.to(total.device).view(1, -1, 1, 1)).unsqueeze(2).to(cf.dtype)

    def translate(self, cf: torch.Tensor) -> torch.Tensor:
        """CF -> the *last* frame of a ``model.num_frames``-frame generated video, N x 1 x H x W.

        The still-image tooling (sample grids, image metrics, the image prediction path) sees the late
        phase, the frame that shows leakage; :meth:`translate_video` gives the whole video.
        """
        return self.translate_video(cf, self.hparams.num_frames)[:, -1]

    def predict_step(self, batch, batch_idx: int):
        frames = batch["frames"].shape[1] if "frames" in batch else self.hparams.num_frames
        return self.translate_video(batch["cf"], frames)

    # ----------------------------------------------------------------- optimisers
    def configure_optimizers(self):
        optimizers = [self.make_optimizer(self.hparams.optimizer_g, self.generator.parameters())]
        d_params = list(self.discriminator.parameters())
        if self.discriminator_km is not None:
            d_params += list(self.discriminator_km.parameters())
        optimizers.append(self.make_optimizer(self.hparams.optimizer_d or self.hparams.optimizer_g, d_params))
        if self.trains_nce_head:
            optimizers.append(self.make_optimizer(self.hparams.optimizer_f or self.hparams.optimizer_g, self.patch_nce.heads.parameters()))
        return optimizers, self.make_schedulers(optimizers)

    def _named_optimizers(self) -> dict:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        return dict(zip(("g", "d", "f"), optimizers))

    # ----------------------------------------------------------------- discriminator passes
    def _discriminate(self, pairs: list[tuple[nn.Module, torch.Tensor]]) -> list[list[list[torch.Tensor]]]:
        """D outputs for several (net, input) pairs; inputs of one net go through it as one batch when the
        net has no BatchNorm (InstanceNorm is per sample, so the result is the same and it is faster)."""
        outputs: list = [None] * len(pairs)
        groups: dict[int, list[int]] = defaultdict(list)
        for i, (net, _) in enumerate(pairs):
            groups[id(net)].append(i)
        for members in groups.values():
            net = pairs[members[0]][0]
            if len(members) == 1 or not self._batchable_d:
                for i in members:
                    outputs[i] = net(pairs[i][1])
                continue
            sizes = [pairs[i][1].shape[0] for i in members]
            joint = net(torch.cat([pairs[i][1] for i in members]))
            parts = [[feature.split(sizes) for feature in scale] for scale in joint]
            for k, i in enumerate(members):
                outputs[i] = [[chunks[k] for chunks in scale] for scale in parts]
        return outputs

    @property
    def km_net(self) -> nn.Module:
        return self.discriminator_km if self.discriminator_km is not None else self.discriminator

    # ----------------------------------------------------------------- one window
    def _oracle_maps(self, km: torch.Tensor, size: tuple[int, int]) -> dict:
        raw = getattr(self.generator, "_orig_mod", self.generator)
        pool = self.attention_loss.target_pool if self.attention_loss is not None else "area"
        maps = {}
        for stage, index in raw.kba_positions.items():
            factor = raw.downsampling_at(index)
            maps[stage] = downsample_mask(km, size[0] // factor, size[1] // factor, pool)
        return maps

    def _encoder(self):
        raw = getattr(self.generator, "_orig_mod", self.generator)
        layers = self.patch_nce.layers
        return lambda x: raw.encode(x, layers)

    def generator_step(self, opt_g, opt_f, cf, previous, target, km, fov) -> tuple[torch.Tensor, dict]:
        """One G (+ F) Adam step on one window; returns the detached generated window and the terms."""
        self.toggle_optimizer(opt_g)
        if opt_f is not None:  # toggle_optimizer froze the heads (another optimiser's parameters)
            self.patch_nce.heads.requires_grad_(True)
        oracle = None
        if self.hparams.kba_mode == "oracle_train" and km is not None:
            oracle = self._oracle_maps(km, cf.shape[-2:])
        if self.has_attention:
            fake, attention = self.generator(torch.cat([cf, previous], 1), return_attention=True, oracle=oracle)
        else:
            fake, attention = self.generator(torch.cat([cf, previous], 1)), {}
        extra = {"knowledge_mask": km, "attention": attention, "batch_keys": self._batchable_g}
        if self.patch_nce is not None:
            extra["encoder"] = self._encoder()
        inputs = LossInputs(cf=cf, real=target, fake=fake, fov=fov, extra=extra)
        terms = {name: self.losses[name] for name in self.active_terms}
        fake_pair = torch.cat([cf, fake], 1)
        passes = []
        if any(t.needs_pred_fake for t in terms.values()):
            passes.append(("pred_fake", self.discriminator, fake_pair))
        if self.use_km_disc:
            passes.append(("pred_fake_km", self.km_net, fake_pair * km))
        for (key, _, _), output in zip(passes, self._discriminate([(net, x) for _, net, x in passes])):
            if key == "pred_fake":
                inputs.pred_fake = output
            else:
                extra[key] = output
        if any(t.needs_pred_real for t in terms.values()):
            real_pair = torch.cat([cf, target], 1)
            with torch.no_grad():
                if self.hparams.fm_bug_compat and km is not None:
                    # F4: the code's real features come from the KM-masked real pass
                    inputs.pred_real = self.km_net(real_pair * km)
                else:
                    inputs.pred_real = self.discriminator(real_pair)
        values = {name: term(inputs) for name, term in terms.items()}
        loss = sum(self.losses[name].weight * value for name, value in values.items())
        # F1 fixed: zero_grad -> backward -> step (G's step inside backward with model.step_in_backward)
        self.backward_and_step(loss, *([opt_g] if opt_f is None else [opt_g, opt_f]))
        self.untoggle_optimizer(opt_g)
        values = {name: value.detach() for name, value in values.items()}
        values["total"] = loss.detach()
        return fake.detach(), values

    def discriminator_step(self, opt_d, cf, target, fake, km) -> dict:
        """One D Adam step on the window: 0.5 (real + fake) [+ 0.5 (real_KM + fake_KM)], fakes detached."""
        self.toggle_optimizer(opt_d)
        real_pair, fake_pair = torch.cat([cf, target], 1), torch.cat([cf, fake.detach()], 1)
        pairs = [(self.discriminator, real_pair), (self.discriminator, fake_pair)]
        if self.use_km_disc:
            pairs += [(self.km_net, real_pair * km), (self.km_net, fake_pair * km)]
        outputs = self._discriminate(pairs)
        terms = self.gan.discriminator_terms(outputs[0], outputs[1])
        loss = 0.5 * (terms["real"] + terms["fake"])
        if self.use_km_disc:
            km_terms = self.gan_km.discriminator_terms(outputs[2], outputs[3])
            loss = loss + 0.5 * (km_terms["real"] + km_terms["fake"])
            terms.update({f"{k}_km": v for k, v in km_terms.items()})
        self.backward_and_step(loss, opt_d)
        self.untoggle_optimizer(opt_d)
        terms = {name: value.detach() for name, value in terms.items()}
        terms["total"] = loss.detach()
        return terms

    # ----------------------------------------------------------------- training
    def window_step(self, optimizers: dict, cf, previous, target, km, fov) -> tuple[torch.Tensor, dict, dict]:
        """One window: a G (+ F) step, then a D step on the same generated window (spec 4.6).

        Returns the detached generated window and the detached G and D terms."""
        fake, g_terms = self.generator_step(optimizers["g"], optimizers.get("f"), cf, previous, target, km, fov)
        d_terms = self.discriminator_step(optimizers["d"], cf, target, fake, km)
        return fake, g_terms, d_terms

    def training_step(self, batch, batch_idx: int) -> None:
        optimizers = self._named_optimizers()
        cf, grey = self._video_batch(batch)
        needs_km = self.use_km_disc or "attention" in self.active_terms or self.hparams.kba_mode == "oracle_train" or (
            self.patch_nce is not None and "patch_nce" in self.active_terms and (self.patch_nce.mask_inputs or self.patch_nce.sampling != "uniform")
        )
        km = batch.get("knowledge_mask") if self.hparams.knowledge_mask else None
        if needs_km and self.hparams.knowledge_mask and km is None:
            raise DataError("the batch has no 'knowledge_mask'; video data configs compute it (data.km); check the data config")
        km = km.to(cf.dtype) if km is not None else None
        fov = batch.get("fov")
        num_videos, num_frames = grey.shape[:2]
        probability = self.sampling_probability(self.sampling_counter(num_videos))
        g_sums: dict = defaultdict(float)
        d_sums: dict = defaultdict(float)
        generated_previous = 0
        previous_fake = None
        for n in range(num_frames):
            target = self.window(grey, n)
            if n == 0:
                previous = cf  # generator input [CF, CF] (spec 4.6)
            else:
                previous, used = self.choose_previous(previous_fake, self.window(grey, n - 1), probability)
                generated_previous += int(used.sum())
            previous_fake, g_terms, d_terms = self.window_step(optimizers, cf, previous, target, km, fov)
            for name, value in g_terms.items():
                g_sums[name] += value
            for name, value in d_terms.items():
                d_sums[name] += value
        world = self.trainer.world_size if self._trainer is not None else 1
        self.videos_seen += num_videos * world
        self.log_terms("g", {k: v / num_frames for k, v in g_sums.items()}, num_videos)
        self.log_terms("d", {k: v / num_frames for k, v in d_sums.items()}, num_videos)
        self.log_dict(
            {"train/sampling_probability": probability,
             "train/generated_previous": generated_previous / max(1, (num_frames - 1) * num_videos)},
            on_step=True, on_epoch=False, batch_size=num_videos,
        )

    # ----------------------------------------------------------------- evaluation
    def fvd_modes(self) -> list[str]:
        """``metrics.fvd_mode``: dataset | per_video_compat, or a list of both (logged as fvd / fvd_compat)."""
        modes = self.metric_settings.get("fvd_mode", "dataset")
        return [modes] if isinstance(modes, str) else list(modes)

    def _fvd_metrics(self, stage: str) -> dict:
        """{log key: FrechetVideoDistance} for ``stage``, built on first use (the I3D weights load then)."""
        if stage not in self._fvd:
            from fundus2ffa.metrics.fvd import FrechetVideoDistance

            m = self.metric_settings
            self._fvd[stage] = {
                ("fvd" if mode == "dataset" else "fvd_compat"): FrechetVideoDistance(
                    weights=m.get("fvd_weights"), mode=mode, clip_length=int(m.get("fvd_clip_length", 16)),
                    config_key="pretrained.i3d",
                ).to(self.device)
                for mode in self.fvd_modes()
            }
        return self._fvd[stage]

    def _eval_step(self, stage: str, batch) -> dict:
        """Per-video PSNR/SSIM rows (and FVD features) of one batch; returns {"fake": N x T x 1 x H x W}."""
        from fundus2ffa.metrics.video import video_quality

        cf, grey = self._video_batch(batch)
        real = grey.unsqueeze(2)
        fake = self.translate_video(cf, real.shape[1])
        m = self.metric_settings
        scores = video_quality(fake, real, batch.get("fov"), compat_mode=bool(m["compat_mode"]), quantize=bool(m["quantize"]))
        if m.get("report_compat", True) and not m["compat_mode"]:
            compat = video_quality(fake, real, compat_mode=True)
            scores.update({f"{k}_compat": v for k, v in compat.items()})
        lpips = self.lpips_network()
        if lpips is not None:  # per frame, averaged per video: standard (spec 6.2) and the code's (6.1)
            frames_fake, frames_real = fake.flatten(0, 1), real.flatten(0, 1)
            per_video = lambda values: values.view(fake.shape[0], fake.shape[1]).mean(1)  # noqa: E731
            scores["lpips"] = per_video(lpips(frames_fake, frames_real))
            if m.get("report_compat", True) or m["compat_mode"]:
                scores["lpips_compat"] = per_video(lpips(frames_fake, frames_real, compat=True))
        self._tables.setdefault(stage, MetricTable()).add(batch["id"], batch.get("category"), scores)
        if m.get("fvd"):
            for metric in self._fvd_metrics(stage).values():
                metric.update(real, fake)
        return {"fake": fake}

    def _eval_epoch_end(self, stage: str) -> None:
        super()._eval_epoch_end(stage)
        if not self.metric_settings.get("fvd"):
            return
        for key, metric in self._fvd.get(stage, {}).items():
            value = metric.compute()
            metric.reset()
            self.log(f"{stage}/{key}", float(value), sync_dist=False, rank_zero_only=False)
