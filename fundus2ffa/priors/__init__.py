"""Pure tensor/array functions used by datasets, losses and notebooks alike: field-of-view mask,
local saliency map (Li et al. 2020), knowledge mask (Zhang et al. 2024)."""

from fundus2ffa.priors.fov import fov_mask

__all__ = ["fov_mask"]
