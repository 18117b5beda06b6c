"""CycleGAN's cycle and identity terms read the right images of CycleInputs."""

import pytest
import torch

from fundus2ffa.losses.cycle import CycleInputs, CycleL1, IdentityL1


def test_terms_compare_each_domain_with_its_reconstruction():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 1, 8, 8, generator=g)
    rec_a, rec_b = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 1, 8, 8, generator=g)
    idt_a, idt_b = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 1, 8, 8, generator=g)
    inputs = CycleInputs(cf=a, real=b, fake=torch.zeros_like(b), rec_a=rec_a, rec_b=rec_b, idt_a=idt_a, idt_b=idt_b)
    assert inputs.real_a is a and inputs.real_b is b
    torch.testing.assert_close(CycleL1(10.0, "a")(inputs), (rec_a - a).abs().mean())
    torch.testing.assert_close(CycleL1(10.0, "b")(inputs), (rec_b - b).abs().mean())
    torch.testing.assert_close(IdentityL1(5.0, "a")(inputs), (idt_a - a).abs().mean())
    torch.testing.assert_close(IdentityL1(5.0, "b")(inputs), (idt_b - b).abs().mean())
    assert CycleL1(10.0, "a").weight == 10.0 and IdentityL1(0.0, "b").active is False


def test_unknown_domain_fails():
    with pytest.raises(ValueError, match="domain must be 'a' \\(CF\\) or 'b' \\(FFA\\)"):
        CycleL1(10.0, "c")
