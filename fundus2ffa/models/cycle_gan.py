"""CycleGAN (Zhu et al., ICCV 2017) as the unpaired CF -> FFA baseline (reference_spec section 5).

Two generators, G_AB: CF -> FFA and G_BA: FFA -> CF (resnet_9blocks, instance norm, no dropout), and
two unconditioned 70x70 PatchGAN discriminators, one per domain: D_A judges CFs (3 channels), D_B
FFAs. Domain A is the CF, B the FFA, and each D is named by the domain it judges. (The reference code
names them the other way round: its D_A judges G_A(A), i.e. domain B.)

One training step (update order G then D, as the reference code):

1. G step, one optimizer over both generators: fake_b = G_AB(a), rec_a = G_BA(fake_b),
   fake_a = G_BA(b), rec_b = G_AB(fake_a) (and the identity images when their terms are active);
   loss = w_gan * (LSGAN(D_B(fake_b)) + LSGAN(D_A(fake_a))) + sum of the weighted cycle/identity terms.
2. D step, one optimizer over both discriminators: each D sees its real images and a batch of
   generated ones drawn from its 50-image :class:`~fundus2ffa.models.image_pool.ImagePool`;
   loss = 0.5 * (real + fake) per discriminator, D_A's and D_B's summed (their parameters are
   disjoint, so this is the reference code's two backward passes and one joint Adam step).

Logged: ``train/g_gan_a`` (G_BA against D_A), ``train/g_gan_b`` (G_AB against D_B), ``train/g_<term>``
for every other active term, ``train/g_total``; ``train/d_a_real``, ``d_a_fake``, ``d_b_real``,
``d_b_fake`` and ``train/d_total``.

Deviations from the paper, each a config switch:

- ``unpaired``: our data modules serve registered pairs. With ``unpaired: true`` (default) every CF is
  trained against the real FFA of a different, earlier-seen eye from a
  :class:`~fundus2ffa.models.image_pool.PartnerHistory` of the last ``partner_history`` training FFAs,
  so the pairing is never seen, like the reference code's unaligned loader; the first batch of a run
  only fills that history (no step is taken). ``unpaired: false`` trains on the pairs as served
  (pairing still unused by the cycle losses, but paired terms such as L1 then become valid).
- ``ffa_channels``: 1 (default) keeps the FFA one-channel, so G_AB maps 3 -> 1 channels and the
  identity terms, which need equal channel counts, must be off (pitfall B5: the reference code
  asserts input_nc == output_nc). 3 replicates the real FFA to 3 channels inside the model (the fix the
  spec names), which allows the identity terms with the paper's weight 0.5 * lambda;
  ``translate`` then returns the mean of the 3 generated channels as the one-channel FFA.
"""

import logging

import torch
from omegaconf import DictConfig
from torch import nn

from fundus2ffa.errors import ConfigError
from fundus2ffa.losses.adversarial import AdversarialLoss
from fundus2ffa.losses.cycle import CycleInputs, CycleTerm, IdentityL1
from fundus2ffa.models.gan_module import GANModule
from fundus2ffa.models.image_pool import ImagePool, PartnerHistory

log = logging.getLogger(__name__)

STATE_KEY = "cycle_gan_histories"


def _as_dict(config) -> dict:
    return dict(config) if config is not None else {}


class CycleGAN(GANModule):
    """Unpaired CF <-> FFA translation with cycle consistency; ``translate(cf) = G_AB(cf)``.

    Args:
        generator: net config used for both generators; the module sets ``in_channels`` and
            ``out_channels`` per direction (G_AB: cf_channels -> ffa_channels, G_BA: the reverse), so
            the config's own channel counts are ignored except ``in_channels`` (the CF's, 3).
        discriminator: net config used for both discriminators (unconditioned, one per domain); the
            module sets ``in_channels`` (D_A: the CF's, D_B: ``ffa_channels``).
        losses: name -> loss-term config. ``gan`` must be an :class:`AdversarialLoss` (LSGAN in the
            paper); CycleGAN terms (:class:`~fundus2ffa.losses.cycle.CycleL1`, ``IdentityL1``) read
            both directions; any other term is a paired term on (G_AB(cf), ffa) and needs ``unpaired: false``.
        optimizer_g, optimizer_d: ``_partial_`` optimizer configs (Adam 2e-4, betas (0.5, 0.999)).
        schedule: {constant_epochs, decay_epochs} (100 + 100 in the paper).
        pool_size: size of each discriminator's image pool (50; 0 disables).
        unpaired: pair each CF with another eye's FFA (see the module docstring).
        partner_history: how many recent training FFAs the unpaired partners are drawn from.
        ffa_channels: 1, or 3 to replicate the FFA (needed for the identity terms).
        metrics: {quantize}; compile: torch.compile the four networks.

    The image pools and the partner history are saved in checkpoints (``on_save_checkpoint``), so a
    resumed run continues exactly; at 256 px the two 50-image pools add about 52 MB.
    """

    def __init__(
        self,
        generator: DictConfig,
        discriminator: DictConfig,
        losses: DictConfig,
        optimizer_g: DictConfig,
        optimizer_d: DictConfig | None = None,
        schedule: DictConfig | None = None,
        pool_size: int = 50,
        unpaired: bool = True,
        partner_history: int = 16,
        ffa_channels: int = 1,
        metrics: DictConfig | None = None,
        eval_mode: str = "eval",
        compile: bool = False,
        ema: DictConfig | None = None,
    ):
        super().__init__()
        self.store_hparams()
        if generator is None or discriminator is None:
            raise ConfigError("CycleGAN needs a generator and a discriminator config (generator=resnet_9blocks discriminator=patchgan)")
        if ffa_channels not in (1, 3):
            raise ConfigError(f"model.ffa_channels must be 1 or 3 (3 replicates the FFA), got {ffa_channels!r}")
        if pool_size < 0:
            raise ConfigError(f"model.pool_size must be >= 0 (0 disables the image pools), got {pool_size}")
        if unpaired and partner_history < 1:
            raise ConfigError(f"model.partner_history must be >= 1 with model.unpaired=true, got {partner_history}")

        generator, discriminator = _as_dict(generator), _as_dict(discriminator)
        cf_channels = int(generator.get("in_channels", 3))
        self.cf_channels, self.ffa_channels = cf_channels, int(ffa_channels)
        self.g_ab = self.maybe_compile(self.build({**generator, "in_channels": cf_channels, "out_channels": ffa_channels}))
        self.g_ba = self.maybe_compile(self.build({**generator, "in_channels": ffa_channels, "out_channels": cf_channels}))
        self.d_a = self.maybe_compile(self.build({**discriminator, "in_channels": cf_channels}))
        self.d_b = self.maybe_compile(self.build({**discriminator, "in_channels": ffa_channels}))

        self.losses = nn.ModuleDict({name: self.build(cfg) for name, cfg in (losses or {}).items() if cfg is not None})
        self.gan = self.losses["gan"] if "gan" in self.losses else None
        if not isinstance(self.gan, AdversarialLoss):
            raise ConfigError("CycleGAN needs an adversarial loss named 'gan' in its losses (loss=[gan,cycle,identity], loss.gan.mode=lsgan)")
        self._check_terms(unpaired)
        self.active_terms = [name for name, term in self.losses.items() if term.active and name != "gan"]
        # the optional images (rec_a, idt_b ...) the active terms read; the others are not computed
        self._needs = {
            f"{kind}_{term.domain}"
            for term in (self.losses[name] for name in self.active_terms)
            if isinstance(term, CycleTerm)
            for kind in term.needs
        }

        self.pool_a, self.pool_b = ImagePool(pool_size), ImagePool(pool_size)
        self.partners = PartnerHistory(partner_history) if unpaired else None
        self._warned_skip = False
        self.setup_ema(ema, ("g_ab",))  # the CF -> FFA direction translate uses

    def _check_terms(self, unpaired: bool) -> None:
        """Refuse terms this procedure cannot compute, naming the config key and the fix."""
        for name, term in self.losses.items():
            if name == "gan" or not term.active:
                continue
            if isinstance(term, IdentityL1) and self.cf_channels != self.ffa_channels:
                raise ConfigError(
                    f"loss.{name}.weight={term.weight} needs both domains to have the same number of channels, "
                    f"but the CF has {self.cf_channels} and the FFA {self.ffa_channels} (CycleGAN's identity "
                    f"loss feeds one domain's image to the other domain's generator; reference_spec pitfall B5). "
                    f"Set loss.{name}.weight=0, or replicate the FFA to 3 channels with model.ffa_channels=3"
                )
            if not isinstance(term, CycleTerm) and unpaired:
                raise ConfigError(
                    f"loss.{name} ({type(term).__name__}) compares the generated FFA with its paired target, "
                    f"which CycleGAN with model.unpaired=true never sees; remove it from the loss list or set model.unpaired=false"
                )

    # ----------------------------------------------------------------- nets
    def to_domain_b(self, ffa: torch.Tensor) -> torch.Tensor:
        """A real one-channel FFA as the B domain holds it (replicated when ``ffa_channels`` is 3)."""
        if ffa.shape[1] == self.ffa_channels:
            return ffa
        return ffa.expand(-1, self.ffa_channels, -1, -1)

    def translate(self, cf: torch.Tensor) -> torch.Tensor:
        fake = self.eval_net("g_ab")(cf)
        return fake if self.ffa_channels == 1 else fake.mean(1, keepdim=True)

    def configure_optimizers(self):
        opt_g = self.make_optimizer(self.hparams.optimizer_g, [*self.g_ab.parameters(), *self.g_ba.parameters()])
        opt_d = self.make_optimizer(self.hparams.optimizer_d or self.hparams.optimizer_g, [*self.d_a.parameters(), *self.d_b.parameters()])
        optimizers = [opt_g, opt_d]
        return optimizers, self.make_schedulers(optimizers)

    # ----------------------------------------------------------------- training
    def generator_step(self, opt_g, real_a: torch.Tensor, real_b: torch.Tensor, fov=None) -> CycleInputs:
        """Forward both cycles, step both generators; returns the step's images (fakes with graph)."""
        self.toggle_optimizer(opt_g)
        fake_b = self.g_ab(real_a)
        fake_a = self.g_ba(real_b)
        inputs = CycleInputs(cf=real_a, real=real_b, fake=fake_b, fov=fov, fake_a=fake_a)
        needs = self._needs
        if "rec_a" in needs:
            inputs.rec_a = self.g_ba(fake_b)
        if "rec_b" in needs:
            inputs.rec_b = self.g_ab(fake_a)
        if "idt_a" in needs:
            inputs.idt_a = self.g_ba(real_a)
        if "idt_b" in needs:
            inputs.idt_b = self.g_ab(real_b)
        values = {}
        loss = fake_b.new_zeros(())
        if self.gan.active:
            inputs.pred_fake, inputs.pred_fake_a = self.d_b(fake_b), self.d_a(fake_a)
            values["gan_a"] = self.gan.loss(inputs.pred_fake_a, target_real=True, for_discriminator=False)
            values["gan_b"] = self.gan.loss(inputs.pred_fake, target_real=True, for_discriminator=False)
            loss = loss + self.gan.weight * (values["gan_a"] + values["gan_b"])
        if any(self.losses[name].needs_pred_real for name in self.active_terms):
            with torch.no_grad():
                inputs.pred_real = self.d_b(real_b)
        for name in self.active_terms:
            values[name] = self.losses[name](inputs)
            loss = loss + self.losses[name].weight * values[name]
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self.log_terms("g", {**values, "total": loss}, real_a.shape[0])
        return inputs

    def discriminator_step(self, opt_d, real_a, real_b, fake_a, fake_b) -> None:
        """Step both discriminators on real images and pooled, detached generated ones."""
        self.toggle_optimizer(opt_d)
        terms_a = self.gan.discriminator_terms(self.d_a(real_a), self.d_a(self.pool_a.query(fake_a.detach())))
        terms_b = self.gan.discriminator_terms(self.d_b(real_b), self.d_b(self.pool_b.query(fake_b.detach())))
        loss = 0.5 * (terms_a["real"] + terms_a["fake"]) + 0.5 * (terms_b["real"] + terms_b["fake"])
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)
        values = {f"a_{k}": v for k, v in terms_a.items()} | {f"b_{k}": v for k, v in terms_b.items()}
        self.log_terms("d", {**values, "total": loss}, real_a.shape[0])

    def training_step(self, batch, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real_a, real_b = batch["cf"], self.to_domain_b(batch["ffa"])
        if self.partners is not None:
            ids = batch.get("id")
            real_b = self.partners.exchange(real_b, list(ids) if ids is not None else None)
            if real_b is None:
                if not self._warned_skip:
                    log.info("CycleGAN (model.unpaired=true): this batch only fills the FFA partner history; no step taken")
                    self._warned_skip = True
                return
        out = self.generator_step(opt_g, real_a, real_b, batch.get("fov"))
        self.discriminator_step(opt_d, real_a, real_b, out.fake_a, out.fake_b)

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[STATE_KEY] = {
            "pool_a": self.pool_a.state_dict(),
            "pool_b": self.pool_b.state_dict(),
            "partners": self.partners.state_dict() if self.partners is not None else None,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get(STATE_KEY)
        if not state:
            return
        self.pool_a.load_state_dict(state["pool_a"])
        self.pool_b.load_state_dict(state["pool_b"])
        if self.partners is not None and state.get("partners"):
            self.partners.load_state_dict(state["partners"])
