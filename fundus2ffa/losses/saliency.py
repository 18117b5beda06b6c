"""Local saliency loss of Li et al. (MIDL 2020), reference_spec section 2.4: gamma * L_sal with gamma = 1.

``L_sal = mean((sal(I_F) - sal(G(I_S)))^2)``: the mean squared difference between the saliency maps
(:func:`fundus2ffa.priors.saliency.saliency_map`, ``a * (Gaussian_7x7 - Median_51x51)``) of the real
and the generated FFA. It asks the generator for the bright local structures the diagnosis rests on
(vessels, optic disc, leakage), which a pixel loss averages away. The real map is a target (computed
without gradient); the generated map carries the gradient through the Gaussian term and, with
``median_gradient="selected"`` (the spec default), through the median to the element each window
selects. ``median_gradient="detach"`` treats the background as a constant: no backward median pass
(about 60 % of the cost), but the gradient then reaches only the Gaussian term and optimising the loss
stalls (tests/losses/test_saliency_loss.py), so it is an option, not the default.

The ablation "without L_sal" of the paper's table is ``loss.saliency.weight=0`` (the term is skipped).
"""

import torch
import torch.nn.functional as F

from fundus2ffa.errors import ConfigError
from fundus2ffa.losses.base import LossInputs, LossTerm
from fundus2ffa.priors.saliency import MEDIAN_GRADIENTS, saliency_map


class SaliencyLoss(LossTerm):
    """MSE between the local saliency maps of the generated and the real FFA.

    Args:
        weight: gamma (1 in the paper).
        contrast: the contrast factor ``a`` of the map (not given in the paper; 1). The loss scales with a^2.
        clamp_negative: keep only structures brighter than their background (off: the paper's map).
        normalise: divide each map by its largest absolute value (off: the paper's map).
        median_gradient: selected (gradient routed to the selected median element; spec default) | detach.
        median_size, gaussian_size, gaussian_sigma: filter sizes (51, 7, OpenCV's GaussianBlur kernel for sigma 0 when null).
            They are in pixels of the images the loss sees; the paper's are for 512 px patches.
        levels: quantisation of the median (256: exact on 8-bit images, half a level off otherwise).
        value_range: the range of the model's images ([-1, 1]); the map is in these units.
    """

    def __init__(
        self,
        weight: float = 1.0,
        contrast: float = 1.0,
        clamp_negative: bool = False,
        normalise: bool = False,
        median_gradient: str = "selected",
        median_size: int = 51,
        gaussian_size: int = 7,
        gaussian_sigma: float | None = None,
        levels: int = 256,
        value_range: tuple[float, float] | list[float] = (-1.0, 1.0),
    ):
        super().__init__(weight)
        if median_gradient not in MEDIAN_GRADIENTS:
            raise ConfigError(
                f"loss.saliency.median_gradient must be one of {'|'.join(MEDIAN_GRADIENTS)}, got {median_gradient!r}"
            )
        for key, size in (("median_size", median_size), ("gaussian_size", gaussian_size)):
            if int(size) < 1 or int(size) % 2 == 0:
                raise ConfigError(f"loss.saliency.{key} must be a positive odd window size, got {size}")
        if len(value_range) != 2 or not float(value_range[1]) > float(value_range[0]):
            raise ConfigError(f"loss.saliency.value_range must be [low, high] with high > low, got {list(value_range)}")
        self.options = dict(
            contrast=float(contrast),
            median_size=int(median_size),
            gaussian_size=int(gaussian_size),
            gaussian_sigma=None if gaussian_sigma is None else float(gaussian_sigma),
            value_range=(float(value_range[0]), float(value_range[1])),
            levels=int(levels),
            clamp_negative=bool(clamp_negative),
            normalise=bool(normalise),
        )
        self.median_gradient = median_gradient

    def saliency(self, image: torch.Tensor, median_gradient: str | None = None) -> torch.Tensor:
        """The saliency map of ``image`` (N x C x H x W in ``value_range``) with this loss's settings."""
        return saliency_map(image, median_gradient=median_gradient or self.median_gradient, **self.options)

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        # Full precision: the filters and the level quantisation are not meant for bf16/fp16.
        with torch.autocast(device_type=inputs.fake.device.type, enabled=False):
            with torch.no_grad():
                target = self.saliency(inputs.real.float(), "detach")
            prediction = self.saliency(inputs.fake.float())
            return F.mse_loss(prediction, target)
