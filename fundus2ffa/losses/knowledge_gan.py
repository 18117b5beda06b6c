"""Knowledge-aware adversarial term of Fundus2Video (Zhang et al., MICCAI 2024; reference_spec 4.4, 4.5).

The code applies the discriminator a second time to its 6-channel input concat(CF, window) multiplied
element-wise by the knowledge mask M (broadcast over channels): the generator gets the LSGAN term
``L_GAN^KM`` on D(M * [x, y_hat]) (weight 1 on pix2pixHD's sum over scales), and the discriminator adds
``0.5 (L_real^KM + L_fake^KM)`` to its objective. Which discriminator weights the masked pass uses
(shared with the plain pass, as the code, or a separate copy, as the paper's plural "discriminators"
may mean) is the training procedure's choice (``model.km_disc``); this term only scores its output,
found in ``inputs.extra["pred_fake_km"]``.
"""

from fundus2ffa.losses.adversarial import AdversarialLoss
from fundus2ffa.losses.base import LossInputs


class KnowledgeAwareAdversarial(AdversarialLoss):
    """The adversarial loss on the KM-masked pair; same modes and labels as :class:`AdversarialLoss`.

    The generator term reads ``inputs.extra["pred_fake_km"]`` (the discriminator's output on
    M * concat(CF, fake)); ``discriminator_terms`` serves the discriminator's masked real/fake terms.
    """

    needs_pred_fake = False  # not the plain pass: the model fills extra["pred_fake_km"]

    def forward(self, inputs: LossInputs):
        prediction = inputs.extra.get("pred_fake_km")
        if prediction is None:
            raise ValueError("KnowledgeAwareAdversarial needs the discriminator's output on the KM-masked fake pair in extra['pred_fake_km']")
        return self.loss(prediction, target_real=True, for_discriminator=False)
