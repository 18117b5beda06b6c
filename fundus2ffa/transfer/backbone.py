"""Backbones for downstream transfer: a trained generator's encoder, the same architecture from random
initialisation, or an ImageNet network through timm (reference_spec 4.9 [D]).

Fundus2Video's journal follow-up (arXiv 2410.13242) transfers the trained generator to downstream tasks;
its protocol could not be retrieved, so this module follows the spec's proposal:

* the *encoder* of a generator is everything up to and including its bottleneck (for the pix2pixHD
  global generator of Fundus2Video, model indices 0-24: stem, 4 downsamplings, 9 residual blocks, plus the
  knowledge-boosted attention boost when the generator has one at the bottleneck);
* a Fundus2Video generator takes 6 channels, concat(CF, previous window); at step 0 the previous window
  is the CF itself (spec 4.6), so a downstream image ``x`` enters as ``[x, x]``;
* FFA images are grey: they are replicated to the 3 channels the generator's CF input has.

Generators are rebuilt from a training checkpoint with ``torch.load(weights_only=True)``: the generator
config stored in the checkpoint's hyperparameters (plain containers, see ``GANModule.store_hparams``)
gives the architecture, the ``generator.`` (CycleGAN: ``g_ab.``) entries of its state dict the weights.
Nothing in a checkpoint runs as code.

Supported families (one small adapter each, :func:`encoder_parts`): pix2pixHD global generator and
Fundus2Video (``GlobalGenerator`` and subclasses), the pix2pixHD local enhancer (its global generator on
the pooled input), the ResNet generator (saliency cGAN, CycleGAN), the pix2pix U-Net (its innermost
down block) and Fundus2Angio's coarse/fine generator (the coarse generator on the Lanczos-halved input,
as in training).
"""

import copy
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fundus2ffa import loader
from fundus2ffa.errors import CheckpointError, ConfigError, WeightsError
from fundus2ffa.nets.generators.fundus2angio import CoarseFineGenerator
from fundus2ffa.nets.generators.pix2pixhd import GlobalGenerator, LocalEnhancer
from fundus2ffa.nets.generators.resnet import ResnetGenerator
from fundus2ffa.nets.generators.unet import UNetGenerator
from fundus2ffa.nets.resample import lanczos_halve

log = logging.getLogger(__name__)

#: state-dict prefixes under which the training modules keep their CF -> FFA generator
GENERATOR_PREFIXES = ("generator.", "g_ab.")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------- loading
def read_checkpoint(path: str | Path, key: str = "backbone.checkpoint") -> dict:
    """A training checkpoint as a dict, through ``fundus2ffa.checkpoint.load_checkpoint``
    (``weights_only=True``: nothing in it runs as code); errors name ``key``."""
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"{key}={path}: no such checkpoint. Point it to a trained run's checkpoints/last.ckpt "
            "(python -m fundus2ffa.run ... writes one), or use backbone.inits=[random] for a from-scratch baseline."
        )
    try:
        checkpoint = loader.read(path, mmap=False).checkpoint  # the one loader: weights_only, allow-listed targets
    except CheckpointError as exc:
        raise WeightsError(f"{key}={path}: {exc}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise WeightsError(f"{key}={path} is not a Lightning checkpoint (no state_dict); give a run's checkpoints/*.ckpt")
    return checkpoint


def generator_config(checkpoint: dict, path: str = "") -> dict:
    """The generator config stored in a checkpoint's hyperparameters, with the channels CycleGAN sets."""
    hparams = checkpoint.get("hyper_parameters") or {}
    config = hparams.get("generator")
    if not isinstance(config, dict) or "_target_" not in config:
        raise WeightsError(
            f"checkpoint {path} has no generator config in its hyperparameters; it was not written by a fundus2ffa "
            "GAN module. Pass backbone.generator=<a generator config> to describe the architecture."
        )
    config = dict(config)
    if "cf_channels" in hparams or "ffa_channels" in hparams:  # CycleGAN sets G_AB's channels itself
        config["in_channels"] = int(config.get("in_channels", 3))
        config["out_channels"] = int(hparams.get("ffa_channels", 1))
    return config


def build_generator(config: dict, source: str = "backbone.generator") -> nn.Module:
    """Instantiate a generator from a plain config (``_target_`` + keyword arguments), freshly initialised;
    the target must be on the allow-list (fundus2ffa/targets.py): the config may come from a checkpoint."""
    from fundus2ffa.targets import resolve_class

    config = dict(config)
    target = config.pop("_target_", None)
    if not target:
        raise ConfigError("backbone.generator needs a _target_ (e.g. fundus2ffa.nets.generators.fundus2video.Fundus2VideoGenerator)")
    cls = resolve_class(target, "generator._target_", source)
    try:
        return cls(**config)
    except (TypeError, ValueError, ImportError) as exc:
        raise ConfigError(f"cannot build the generator {target} from backbone.generator: {exc}") from None


def generator_state(checkpoint: dict, path: str = "") -> dict:
    """The CF -> FFA generator's weights from a module's state dict (``torch.compile`` prefixes removed)."""
    state = checkpoint["state_dict"]
    for prefix in GENERATOR_PREFIXES:
        found = {k[len(prefix):].replace("_orig_mod.", ""): v for k, v in state.items() if k.startswith(prefix)}
        if found:
            return found
    raise WeightsError(
        f"checkpoint {path} has no generator weights (no keys starting with {' or '.join(GENERATOR_PREFIXES)}); "
        "give a checkpoint of a fundus2ffa GAN run"
    )


def load_generator(path: str | Path, key: str = "backbone.checkpoint") -> tuple[nn.Module, dict]:
    """(trained generator, its config) from a training checkpoint."""
    checkpoint = read_checkpoint(path, key)
    config = generator_config(checkpoint, str(path))
    generator = build_generator(config, f"{key}={path}")
    state = generator_state(checkpoint, str(path))
    missing, unexpected = generator.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(
            f"{key}={path}: the stored generator weights do not fit its stored config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); the checkpoint is from another version or was edited"
        )
    return generator, config


# --------------------------------------------------------------------------------------------- encoders
def input_channels(generator: nn.Module) -> int:
    if isinstance(generator, CoarseFineGenerator):
        return generator.coarse.stem[0][1].in_channels
    if isinstance(generator, LocalEnhancer):
        return generator.global_generator.in_channels
    if isinstance(generator, UNetGenerator):
        return generator.down[0][0].in_channels
    if isinstance(generator, ResnetGenerator):
        return generator.model[1].in_channels
    if isinstance(generator, GlobalGenerator):
        return generator.in_channels
    raise ConfigError(
        f"transfer does not know the generator {type(generator).__name__}; supported: GlobalGenerator (pix2pixHD, "
        "Fundus2Video), LocalEnhancer, ResnetGenerator, UNetGenerator, CoarseFineGenerator"
    )


def adapt_input(x: torch.Tensor, channels: int) -> torch.Tensor:
    """An N x C x H x W image in [-1, 1] as the generator's input: grey -> 3 channels; 3 -> 6 as [x, x].

    Fundus2Video's generator sees concat(CF, previous window); at step 0 the window is the CF itself
    (reference_spec 4.6), so [x, x] is the input the trained encoder knows.
    """
    if x.shape[1] == 1 and channels != 1:
        x = x.expand(-1, 3 if channels in (3, 6) else channels, -1, -1)
    if x.shape[1] == channels:
        return x
    if 2 * x.shape[1] == channels:
        return torch.cat([x, x], 1)
    raise ConfigError(f"images have {x.shape[1]} channels but the generator takes {channels}; check the data reader's modality")


class GeneratorEncoder(nn.Module):
    """The encoder (up to the bottleneck) of a generator; ``forward`` returns the bottleneck feature map.

    It holds the generator's own layers (shared, not copied), so weights loaded into the generator are the
    encoder's. ``out_channels`` is the bottleneck width (1024 for Fundus2Video at ngf 64).
    """

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator
        self.channels = input_channels(generator)
        self.layers, self.out_channels = encoder_parts(generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = adapt_input(x, self.channels)
        g = self.generator
        if isinstance(g, CoarseFineGenerator):
            return g.coarse.blocks(g.coarse.down(g.coarse.stem(lanczos_halve(x))))
        if isinstance(g, LocalEnhancer):
            x = g.pool(x)
            g = g.global_generator
        if isinstance(g, UNetGenerator):
            for block in g.down:
                x = block(x)
            return x
        if isinstance(g, GlobalGenerator):
            g.check_size(x)
            attention = {index: stage for stage, index in getattr(g, "kba_positions", {}).items()}
            for i, layer in enumerate(self.layers):
                x = layer(x)
                if i in attention:
                    x = x * (1.0 + g.attention[attention[i]](x))
            return x
        return self.layers(x)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled bottleneck features, N x out_channels."""
        return self.forward(x).mean(dim=(2, 3))


def encoder_parts(generator: nn.Module) -> tuple[nn.Module, int]:
    """(the encoder's modules, the bottleneck width) of a supported generator."""
    if isinstance(generator, CoarseFineGenerator):
        coarse = generator.coarse
        return nn.ModuleList([coarse.stem, coarse.down, coarse.blocks]), coarse.feature_channels * 4
    if isinstance(generator, LocalEnhancer):
        generator = generator.global_generator
    if isinstance(generator, UNetGenerator):
        return generator.down, generator.down[-1][-1].out_channels
    if isinstance(generator, GlobalGenerator):
        end = generator.layer_index("block", generator.n_blocks - 1) + 1 if generator.n_blocks else generator.layer_index("up_conv", 0)
        layers = generator.model[:end]
        width = [m.out_channels for m in layers if isinstance(m, nn.Conv2d)][-1]
        return layers, width
    if isinstance(generator, ResnetGenerator):
        n_blocks = sum(1 for m in generator.model if type(m).__name__ == "ResidualBlock")
        end = 4 + 3 * generator.n_downsampling + n_blocks
        layers = generator.model[:end]
        width = [m.out_channels for m in layers if isinstance(m, nn.Conv2d)][-1]
        return layers, width
    input_channels(generator)  # raises the ConfigError naming the supported families
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------- segmentation
class GeneratorSegmenter(nn.Module):
    """The whole generator with its output layer replaced by a ``num_classes``-channel logit head.

    reference_spec 4.9: "the full G with a 1-channel sigmoid head replacing the final conv". The tanh is
    dropped (the loss takes logits); the new head has the replaced conv's kernel and padding and starts
    from N(0, 0.02) like the generators' own layers. For Fundus2Video the output is the first frame's
    channel group replaced, i.e. the 3-frame output conv becomes a K-class conv.
    """

    def __init__(self, generator: nn.Module, num_classes: int = 1):
        super().__init__()
        self.generator = generator
        self.channels = input_channels(generator)
        self.encoder = GeneratorEncoder(generator)
        owner, name = _output_layer(generator)
        old = getattr(owner, name)
        new = type(old)(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding) if isinstance(old, nn.Conv2d) \
            else nn.ConvTranspose2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding)
        nn.init.normal_(new.weight, 0.0, 0.02)
        nn.init.zeros_(new.bias)
        setattr(owner, name, new)
        tanh_owner, tanh_name = _final_tanh(generator)
        setattr(tanh_owner, tanh_name, nn.Identity())
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = adapt_input(x, self.channels)
        g = self.generator
        if isinstance(g, CoarseFineGenerator):
            _, feature = g.coarse(lanczos_halve(x))
            return g.fine(x, feature)
        return g(x)  # Fundus2Video's forward applies its attention boost

    def encoder_parameters(self):
        return self.encoder.layers.parameters()


def _output_layer(generator: nn.Module) -> tuple[nn.Module, str]:
    if isinstance(generator, CoarseFineGenerator):
        return generator.fine.head, "1"
    if isinstance(generator, LocalEnhancer):
        return generator.upsample[-1], str(len(generator.upsample[-1]) - 2)
    if isinstance(generator, UNetGenerator):
        return generator.up[0], "1"
    if isinstance(generator, (GlobalGenerator, ResnetGenerator)):
        if isinstance(generator, GlobalGenerator) and not generator.output_head:
            raise ConfigError("a GlobalGenerator without output_head has no output layer to replace")
        return generator.model, str(len(generator.model) - 2)
    input_channels(generator)
    raise AssertionError("unreachable")


def _final_tanh(generator: nn.Module) -> tuple[nn.Module, str]:
    owner, name = _output_layer(generator)
    index = int(name) + 1
    if not isinstance(owner[index], nn.Tanh):
        raise ConfigError(f"{type(generator).__name__} does not end in a tanh after its output conv; cannot place a logit head")
    return owner, str(index)


# --------------------------------------------------------------------------------------------- timm (ImageNet)
IMAGENET_HELP = (
    "Give the ImageNet weights explicitly: backbone.imagenet.weights=/path/to/<model>.safetensors (or .pth/.bin, a "
    "timm/torchvision state dict for backbone.imagenet.model), backbone.imagenet.weights=download (timm fetches them "
    "from the Hugging Face hub; needs the internet), or drop imagenet from backbone.inits. `random` is for tests only."
)


def _timm_state(path: Path) -> dict:
    if not path.is_file():
        raise WeightsError(f"backbone.imagenet.weights={path}: no such file. {IMAGENET_HELP}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return state


def timm_model(name: str, weights: str | None, features_only: bool = False) -> nn.Module:
    """A timm model with an explicit weights source: a local file, ``download`` or ``random`` (tests)."""
    import timm

    if weights in (None, "", "null"):
        raise WeightsError(f"backbone.imagenet.weights is not set for the ImageNet baseline {name}. {IMAGENET_HELP}")
    kwargs = {"features_only": True} if features_only else {"num_classes": 0, "global_pool": ""}
    if weights == "download":
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 - network, hub or name errors
            raise WeightsError(f"timm could not download ImageNet weights for {name} ({exc.__class__.__name__}: {exc}). {IMAGENET_HELP}") from None
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except Exception as exc:  # noqa: BLE001 - unknown model name
        raise ConfigError(f"backbone.imagenet.model={name!r} is not a timm model ({exc}); e.g. resnet18, resnet50, convnext_tiny") from None
    if weights == "random":
        log.warning("ImageNet baseline %s has RANDOM weights (backbone.imagenet.weights=random): use only for tests", name)
        return model
    state = _timm_state(Path(weights).expanduser())
    if features_only:  # FeatureListNet keeps the classifier's module names minus the head
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head", "classifier."))}
        missing, unexpected = model.load_state_dict(state, strict=False)
    else:
        missing, unexpected = model.load_state_dict(state, strict=False)
        unexpected = [k for k in unexpected if not k.startswith(("fc.", "head", "classifier."))]
    if missing or unexpected:
        raise WeightsError(
            f"backbone.imagenet.weights={weights} does not fit timm's {name} (missing {list(missing)[:3]}, unexpected "
            f"{list(unexpected)[:3]}); give the state dict of that model. {IMAGENET_HELP}"
        )
    return model


class ImageNetInput(nn.Module):
    """[-1, 1] images (grey replicated) -> ImageNet-normalised RGB, the input timm networks were trained on."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return ((x + 1.0) * 0.5 - self.mean) / self.std


class TimmEncoder(nn.Module):
    """A timm backbone's last feature map (``forward``) and its global average (``pooled``)."""

    def __init__(self, name: str, weights: str | None):
        super().__init__()
        self.normalise = ImageNetInput()
        self.layers = timm_model(name, weights)
        self.out_channels = self.layers.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers.forward_features(self.normalise(x))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).mean(dim=(2, 3))


class TimmSegmenter(nn.Module):
    """ImageNet encoder (timm ``features_only``) with a light FPN-style decoder and a K-class logit head.

    Baseline only: every feature level goes through a 1x1 conv to ``width`` channels, is upsampled to the
    finest level and summed; a 3x3 conv-ReLU and a 1x1 head follow, then bilinear upsampling to the input.
    """

    def __init__(self, name: str, weights: str | None, num_classes: int = 1, width: int = 32):
        super().__init__()
        self.normalise = ImageNetInput()
        self.encoder = timm_model(name, weights, features_only=True)
        channels = self.encoder.feature_info.channels()
        self.lateral = nn.ModuleList([nn.Conv2d(c, width, 1) for c in channels])
        self.head = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, num_classes, 1))
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        features = self.encoder(self.normalise(x))
        top = features[0].shape[-2:]
        fused = sum(F.interpolate(lat(f), size=top, mode="bilinear", align_corners=False) for lat, f in zip(self.lateral, features))
        return F.interpolate(self.head(fused), size=size, mode="bilinear", align_corners=False)

    def encoder_parameters(self):
        return self.encoder.parameters()


# --------------------------------------------------------------------------------------------- factory
INITS = ("pretrained", "random", "imagenet")


class BackboneSource:
    """Where a downstream network's weights come from, for each initialisation of the study.

    Args:
        checkpoint: a fundus2ffa training checkpoint (the pretrained generator); needed for ``pretrained``
            and, without ``generator``, for ``random`` (its architecture).
        generator: a generator config (``_target_`` + arguments) for ``random`` without a checkpoint.
        imagenet: {model: a timm name, weights: file | download | random}; needed for ``imagenet``.
    """

    def __init__(self, checkpoint: str | None = None, generator: dict | None = None, imagenet: dict | None = None):
        self.checkpoint = checkpoint
        self.generator = dict(generator) if generator else None
        self.imagenet = dict(imagenet or {})
        self._trained: tuple[nn.Module, dict] | None = None

    def _pretrained(self) -> tuple[nn.Module, dict]:
        if not self.checkpoint:
            raise WeightsError(
                "backbone.checkpoint is not set but backbone.inits has pretrained: point it to a trained run's "
                "checkpoints/last.ckpt, or set backbone.inits=[random] with backbone.generator=<config>"
            )
        if self._trained is None:
            self._trained = load_generator(self.checkpoint)
        return self._trained

    def generator_for(self, init: str) -> nn.Module:
        """A fresh copy of the generator for one run: trained weights or a new random initialisation."""
        if init == "pretrained":
            return copy.deepcopy(self._pretrained()[0])
        if init == "random":
            config = self.generator or (self._pretrained()[1] if self.checkpoint else None)
            if config is None:
                raise ConfigError("backbone.inits has random but neither backbone.checkpoint nor backbone.generator describes the architecture")
            return build_generator(config)
        raise ConfigError(f"backbone init {init!r} has no generator; one of {'|'.join(INITS)}")

    def _imagenet(self) -> tuple[str, str | None]:
        return str(self.imagenet.get("model") or "resnet18"), self.imagenet.get("weights")

    def encoder(self, init: str) -> nn.Module:
        if init not in INITS:
            raise ConfigError(f"backbone.inits: unknown init {init!r}; use {'|'.join(INITS)}")
        if init == "imagenet":
            return TimmEncoder(*self._imagenet())
        return GeneratorEncoder(self.generator_for(init))

    def segmenter(self, init: str, num_classes: int) -> nn.Module:
        if init not in INITS:
            raise ConfigError(f"backbone.inits: unknown init {init!r}; use {'|'.join(INITS)}")
        if init == "imagenet":
            name, weights = self._imagenet()
            return TimmSegmenter(name, weights, num_classes)
        return GeneratorSegmenter(self.generator_for(init), num_classes)

    def check(self, inits) -> None:
        """Fail before any training when a requested init lacks its weights."""
        for init in inits:
            if init not in INITS:
                raise ConfigError(f"backbone.inits: unknown init {init!r}; use {'|'.join(INITS)}")
            if init == "pretrained" or (init == "random" and not self.generator):
                self._pretrained()
            if init == "imagenet":
                name, weights = self._imagenet()
                if weights in (None, "", "null"):
                    raise WeightsError(f"backbone.inits has imagenet but backbone.imagenet.weights is not set. {IMAGENET_HELP}")
                if weights not in ("download", "random") and not Path(str(weights)).expanduser().is_file():
                    raise WeightsError(f"backbone.imagenet.weights={weights}: no such file. {IMAGENET_HELP}")
