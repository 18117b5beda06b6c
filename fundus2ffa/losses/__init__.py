"""Named, weighted loss terms with one call shape (see ``fundus2ffa.losses.base``)."""

from fundus2ffa.losses.adversarial import AdversarialLoss
from fundus2ffa.losses.base import LossInputs, LossTerm
from fundus2ffa.losses.pixel import L1, MSE

__all__ = ["AdversarialLoss", "L1", "LossInputs", "LossTerm", "MSE"]
