"""CycleGAN's cycle-consistency and identity terms (Zhu et al. 2017, eqs. 2 and section 5.2;
reference_spec section 5 and pitfall B5).

Domain A is the colour fundus (CF, 3 channels), domain B the FFA (1 channel, or 3 when the model
replicates it). G_AB translates CF -> FFA, G_BA FFA -> CF. Each term compares images of one domain,
named by its ``domain`` (``a`` or ``b``), so the two directions are separate named, weighted terms
(``cycle_a``, ``cycle_b``, ``identity_a``, ``identity_b`` in conf/loss/cycle.yaml and identity.yaml),
each logged on its own and each removable by one override (``loss.cycle_b.weight=0``):

- cycle_a = |G_BA(G_AB(a)) - a|_1, weight lambda_A (10);  cycle_b = |G_AB(G_BA(b)) - b|_1, weight lambda_B (10).
- identity_a = |G_BA(a) - a|_1, identity_b = |G_AB(b) - b|_1, weight 0.5 * lambda of that domain (5).
  The identity term feeds an image of one domain to the generator of the other, so it exists only
  when both domains have the same number of channels (pitfall B5): CycleGAN then checks the weights.

The call shape is the one every :class:`LossTerm` has, ``forward(inputs)``; CycleGAN hands its terms a
:class:`CycleInputs`, a :class:`LossInputs` that also carries the other direction.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fundus2ffa.losses.base import LossInputs, LossTerm

DOMAINS = ("a", "b")


@dataclass
class CycleInputs(LossInputs):
    """The tensors of one CycleGAN generator step (all N x C x H x W in [-1, 1]).

    As a :class:`LossInputs`: ``cf`` is real A, ``real`` real B, ``fake`` = G_AB(cf) and ``pred_fake``
    D_B(fake), so a paired term (L1 ...) reads the CF -> FFA direction; that is meaningful only when
    ``real`` is the CF's own FFA (CycleGAN with ``unpaired: false``). In addition:

    fake_a: G_BA(real B), the CF generated from the FFA.
    rec_a: G_BA(G_AB(real A)), the reconstructed CF; rec_b: G_AB(G_BA(real B)).
    idt_a: G_BA(real A), idt_b: G_AB(real B); None unless an identity term is active.
    pred_fake_a: D_A(fake_a), the CF discriminator on the generated CF.
    """

    fake_a: torch.Tensor | None = None
    rec_a: torch.Tensor | None = None
    rec_b: torch.Tensor | None = None
    idt_a: torch.Tensor | None = None
    idt_b: torch.Tensor | None = None
    pred_fake_a: list[list[torch.Tensor]] | None = None

    @property
    def real_a(self) -> torch.Tensor:
        return self.cf

    @property
    def real_b(self) -> torch.Tensor:
        return self.real

    @property
    def fake_b(self) -> torch.Tensor:
        return self.fake


class CycleTerm(LossTerm):
    """A term that reads :class:`CycleInputs` (CycleGAN computes the images it needs from ``needs``)."""

    #: which optional images of CycleInputs this term reads
    needs: tuple[str, ...] = ()

    def __init__(self, weight: float = 1.0, domain: str = "a"):
        super().__init__(weight)
        if domain not in DOMAINS:
            raise ValueError(f"{type(self).__name__}.domain must be 'a' (CF) or 'b' (FFA), got {domain!r}")
        self.domain = domain

    def _real(self, inputs: CycleInputs) -> torch.Tensor:
        return inputs.real_a if self.domain == "a" else inputs.real_b


class CycleL1(CycleTerm):
    """Cycle consistency of one domain: |G_BA(G_AB(a)) - a|_1 (domain a) or |G_AB(G_BA(b)) - b|_1 (b)."""

    needs = ("rec",)

    def forward(self, inputs: CycleInputs) -> torch.Tensor:
        rec = inputs.rec_a if self.domain == "a" else inputs.rec_b
        return F.l1_loss(rec, self._real(inputs))


class IdentityL1(CycleTerm):
    """Identity mapping of one domain: |G_BA(a) - a|_1 (domain a) or |G_AB(b) - b|_1 (domain b).

    Needs both domains to have the same channel count (pitfall B5); CycleGAN refuses a non-zero weight
    otherwise.
    """

    needs = ("idt",)

    def forward(self, inputs: CycleInputs) -> torch.Tensor:
        idt = inputs.idt_a if self.domain == "a" else inputs.idt_b
        return F.l1_loss(idt, self._real(inputs))
