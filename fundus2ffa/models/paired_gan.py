"""One generator, one (multi-scale) discriminator, a weighted sum of named losses: the training
procedure shared by pix2pix, pix2pixHD and the saliency cGAN of Li et al. (2020), which differ only in
their configs (conventions.md: a paper's family is a config composition, not a copy).
"""

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from fundus2ffa.errors import ConfigError
from fundus2ffa.losses.adversarial import AdversarialLoss
from fundus2ffa.losses.base import LossInputs, restrict_to_valid
from fundus2ffa.models.gan_module import GANModule
from fundus2ffa.priors.fov import PIL_BICUBIC, resize_image

UPDATE_ORDERS = ("d_first", "g_first")
INPUT_RESIZES = ("pil_bicubic", "bicubic")


class PairedGAN(GANModule):
    """Paired CF -> FFA translation with a conditional discriminator on concat(CF, FFA).

    Args:
        generator: net config (``_target_``), CF 3 channels -> FFA 1 channel.
        discriminator: net config, or None for a generator trained by its pixel losses only.
        losses: mapping name -> loss-term config. The term named ``gan`` must be an
            :class:`AdversarialLoss`; it also gives the discriminator its objective.
        optimizer_g, optimizer_d: ``_partial_`` optimizer configs.
        schedule: {constant_epochs, decay_epochs}.
        update_order: d_first (pix2pix: D then G on the same fake) | g_first (pix2pixHD: G then D).
        conditional: the discriminator sees concat(CF, FFA) (pix2pix) rather than the FFA alone.
        metrics: {quantize}; compile: torch.compile G and D.
        step_in_backward: apply G's Adam step to each parameter as soon as its gradient is complete and free
            the gradient (models/step_in_backward.py; the same maths, less memory: issue 24).
        d_real_once: with update_order g_first and a term that needs D's features of the real pair (feature
            matching), run D on the real pair once, with D's gradients, and use it for G's term (detached)
            and D's loss, as pix2pixHD's forward does (D is not updated in between: the same maths).
        d_free_terms_first: evaluate the generator's terms that read no discriminator output (the VGG, L1,
            ...) right after the generator's forward, before any discriminator pass, instead of after them:
            their forward's passing activations (the VGG's largest at full resolution) then sit on the
            generator's kept graph only, not also on the discriminator's (issue 24: pix2pixHD's peak, which
            falls inside the VGG's forward). The same values, summed in the same order (bit for bit the
            same loss); off by default: with update_order d_first the terms' kept graphs then wait through
            the discriminator's step.
        ema: {enabled, decay, start_step, every_n_steps}: EMA generator (models/ema.py).
        generator_input_size: None, or [height, width]: the generator runs at this size whatever the data's:
            training pairs (and their masks) not already at it are resized to it, and ``translate`` resizes
            the CF to it and the output back to the CF's size, so metrics stay on the native images. For a
            generator built for one input size (pix2pix's unet_256: 256 x 256 squares) on other sizes (Li et
            al.'s 288 x 360 patches). The li2020/pix2pix preset gives the training pairs pix2pix's own
            resize_and_crop in the data instead (286 then a random 256; data.train_transform.view_*).
        generator_input_resize: how images are brought to ``generator_input_size``: pil_bicubic (default:
            PIL Image.BICUBIC on the 8-bit images, what pix2pix's loader does; test.py resizes the test
            input to 256 x 256 this way) | bicubic (torch bicubic, antialiased, on the float tensors: the
            earlier behaviour; 0.3 grey levels mean, 6 max apart on Isfahan patches). The output goes back
            to the CF's size with torch bicubic on floats either way (pix2pix never maps back: [D]).
    """

    def __init__(
        self,
        generator: DictConfig,
        discriminator: DictConfig | None,
        losses: DictConfig,
        optimizer_g: DictConfig,
        optimizer_d: DictConfig | None = None,
        schedule: DictConfig | None = None,
        update_order: str = "d_first",
        conditional: bool = True,
        metrics: DictConfig | None = None,
        eval_mode: str = "eval",
        compile: bool = False,
        generator_input_size: list[int] | None = None,
        ema: DictConfig | None = None,
        generator_input_resize: str = "pil_bicubic",
        step_in_backward: bool = False,
        d_real_once: bool = True,
        d_free_terms_first: bool = False,
    ):
        super().__init__()
        if generator_input_resize not in INPUT_RESIZES:
            raise ConfigError(f"model.generator_input_resize must be one of {'|'.join(INPUT_RESIZES)}, got {generator_input_resize!r}")
        if generator_input_size is not None and (len(generator_input_size) != 2 or min(int(v) for v in generator_input_size) < 1):
            raise ConfigError(f"model.generator_input_size must be null or [height, width], got {generator_input_size}")
        if update_order not in UPDATE_ORDERS:
            raise ConfigError(f"model.update_order must be one of {'|'.join(UPDATE_ORDERS)}, got {update_order!r}")
        self.store_hparams()
        self.generator = self.maybe_compile(self.build(generator))
        self.discriminator = self.maybe_compile(self.build(discriminator))
        self.losses = nn.ModuleDict({name: self.build(cfg) for name, cfg in (losses or {}).items() if cfg is not None})
        self.gan = self.losses["gan"] if "gan" in self.losses else None
        if self.discriminator is not None and not isinstance(self.gan, AdversarialLoss):
            raise ConfigError(
                "a model with a discriminator needs an adversarial loss named 'gan' in its losses "
                "(add loss=gan to the loss list, or set discriminator=null for a generator-only model)"
            )
        if self.discriminator is None and self.gan is not None and self.gan.active:
            raise ConfigError("loss.gan has a non-zero weight but the model has no discriminator; set loss.gan.weight=0 or choose a discriminator")
        self.active_terms = [name for name, term in self.losses.items() if term.active]
        self.setup_ema(ema, ("generator",))

    # ----------------------------------------------------------------- nets
    @property
    def generator_size(self) -> tuple[int, int] | None:
        size = self.hparams.get("generator_input_size")
        return tuple(int(v) for v in size) if size else None

    @staticmethod
    def _resize_image(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)

    def _resize_input(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """An image batch in [-1, 1] to the generator's input size (``generator_input_resize``)."""
        if self.hparams.get("generator_input_resize", "pil_bicubic") == "bicubic":
            return self._resize_image(x, size)
        return pil_resize_batch(x, size)

    def generator_batch(self, batch: dict) -> dict:
        """``batch`` at ``generator_input_size`` (unchanged without it): CF and FFA as
        ``generator_input_resize`` says, other same-size maps (masks) nearest, as pix2pix's ``resize``
        preprocessing gives its training pairs."""
        size = self.generator_size
        if size is None or tuple(batch["cf"].shape[-2:]) == size:
            return batch
        full = tuple(batch["cf"].shape[-2:])
        out = dict(batch)
        for key, value in batch.items():
            if isinstance(value, torch.Tensor) and value.dim() == 4 and tuple(value.shape[-2:]) == full:
                if key in ("cf", "ffa"):
                    out[key] = self._resize_input(value, size)
                else:
                    out[key] = F.interpolate(value.float(), size=size, mode="nearest").to(value.dtype)
        return out

    def translate(self, cf: torch.Tensor) -> torch.Tensor:
        generator = self.eval_net("generator")
        size = self.generator_size
        if size is None or tuple(cf.shape[-2:]) == size:
            return generator(cf)
        return self._resize_image(generator(self._resize_input(cf, size)), tuple(cf.shape[-2:]))

    def discriminate(self, cf: torch.Tensor, ffa: torch.Tensor) -> list[list[torch.Tensor]]:
        return self.discriminator(torch.cat([cf, ffa], 1) if self.hparams.conditional else ffa)

    def configure_optimizers(self):
        opt_g = self.make_optimizer(self.hparams.optimizer_g, self.generator.parameters())
        optimizers = [opt_g]
        if self.discriminator is not None:
            optimizers.append(self.make_optimizer(self.hparams.optimizer_d, self.discriminator.parameters()))
        return optimizers, self.make_schedulers(optimizers)

    # ----------------------------------------------------------------- training
    def _discriminator_step(self, opt_d, cf, real, fake, batch_size: int, pred_real=None) -> None:
        self.toggle_optimizer(opt_d)
        pred_real = pred_real if pred_real is not None else self.discriminate(cf, real)
        terms = self.gan.discriminator_terms(pred_real, self.discriminate(cf, fake.detach()))
        loss = 0.5 * (terms["real"] + terms["fake"])
        self.backward_and_step(loss, opt_d)
        self.untoggle_optimizer(opt_d)
        self.log_terms("d", {**terms, "total": loss}, batch_size)

    def _d_free_values(self, batch, fake) -> dict[str, torch.Tensor]:
        """The values of the active terms that read no discriminator output (``d_free_terms_first``)."""
        inputs = LossInputs(cf=batch["cf"], real=batch["ffa"], fake=fake, fov=batch.get("fov"))
        return {name: self.losses[name](inputs) for name in self.active_terms
                if not (self.losses[name].needs_pred_fake or self.losses[name].needs_pred_real)}

    def _generator_step(self, opt_g, batch, fake, batch_size: int, pred_real=None, early=None) -> None:
        """G's objective, backward and step; ``early``: term values already computed (``_d_free_values``)."""
        self.toggle_optimizer(opt_g)
        cf, real = batch["cf"], batch["ffa"]
        inputs = LossInputs(cf=cf, real=real, fake=fake, fov=batch.get("fov"))
        early = early or {}
        terms = {name: self.losses[name] for name in self.active_terms if name not in early}
        if self.discriminator is not None and any(t.needs_pred_fake for t in terms.values()):
            inputs.pred_fake = self.discriminate(cf, fake)
        if self.discriminator is not None and any(t.needs_pred_real for t in terms.values()):
            if pred_real is not None:
                inputs.pred_real = [[f.detach() for f in scale] for scale in pred_real]
            else:
                with torch.no_grad():
                    inputs.pred_real = self.discriminate(cf, real)
        later = {name: term(inputs) for name, term in terms.items()}
        values = {name: early[name] if name in early else later[name] for name in self.active_terms}  # the summing order
        loss = sum(self.losses[name].weight * value for name, value in values.items())
        self.backward_and_step(loss, opt_g)
        self.untoggle_optimizer(opt_g)
        self.log_terms("g", {**values, "total": loss}, batch_size)

    def training_step(self, batch, batch_idx: int) -> None:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        opt_g = optimizers[0]
        batch = self.generator_batch(batch)
        cf, real = batch["cf"], batch["ffa"]
        batch_size = cf.shape[0]
        # a registered pair's valid mask: nothing outside it reaches a loss or the discriminator
        fake = restrict_to_valid(self.generator(cf), real, batch.get("valid"))
        if self.discriminator is None:
            self._generator_step(opt_g, batch, fake, batch_size)
            return
        early = self._d_free_values(batch, fake) if self.hparams.get("d_free_terms_first", False) else None
        opt_d = optimizers[1]
        if self.hparams.update_order == "d_first":
            self._discriminator_step(opt_d, cf, real, fake, batch_size)
            self._generator_step(opt_g, batch, fake, batch_size, early=early)
        else:
            pred_real = None
            if self.hparams.get("d_real_once", True) and any(self.losses[n].needs_pred_real for n in self.active_terms):
                # D on the real pair once, with D's gradients (pix2pixHD's forward): G's feature matching reads
                # it detached, D's loss backpropagates through it after G's step (D unchanged in between)
                self.toggle_optimizer(opt_d)
                pred_real = self.discriminate(cf, real)
                self.untoggle_optimizer(opt_d)
            self._generator_step(opt_g, batch, fake, batch_size, pred_real, early)
            self._discriminator_step(opt_d, cf, real, fake, batch_size, pred_real)


def pil_resize_batch(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N x C x H x W in [-1, 1] (8-bit levels, as the data gives them) -> N x C x h x w resized as pix2pix
    loads images: rounded to uint8, PIL Image.BICUBIC (priors/fov.py ``resize_image``), back to [-1, 1].
    Not differentiable (inputs only)."""
    height, width = int(size[0]), int(size[1])
    levels = ((x.detach().float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    images = levels.permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([resize_image(image, height, width, PIL_BICUBIC) for image in images])
    return torch.from_numpy(out).to(device=x.device).permute(0, 3, 1, 2).to(x.dtype).div(127.5).sub(1.0)
