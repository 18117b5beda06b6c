"""``upsample: transpose | resize_conv`` of the U-Net, ResNet and pix2pixHD generators (issue 11 item 5)."""

import pytest
import torch

from conftest import compose_run
from fundus2ffa.nets.generators.pix2pixhd import GlobalGenerator, LocalEnhancer
from fundus2ffa.nets.generators.resnet import ResnetGenerator
from fundus2ffa.nets.generators.unet import UNetGenerator

pytestmark = pytest.mark.usefixtures("one_thread")

GENERATORS = {
    "unet": (UNetGenerator, {"num_downs": 6, "ngf": 8}),
    "resnet": (ResnetGenerator, {"ngf": 8, "n_blocks": 2}),
    "pix2pixhd_global": (GlobalGenerator, {"ngf": 4, "n_downsampling": 3, "n_blocks": 2}),
    "pix2pixhd_local": (LocalEnhancer, {"ngf": 4, "n_downsampling_global": 2, "n_blocks_global": 1, "n_blocks_local": 1}),
}


def checkerboard_energy(y: torch.Tensor) -> float:
    """Magnitude of the output at the three Nyquist frequencies (period-2 rows, columns, checkerboard)."""
    y = y[0, 0] - y[0, 0].mean()
    rows = torch.ones_like(y)
    rows[1::2] = -1
    cols = torch.ones_like(y)
    cols[:, 1::2] = -1
    return float(sum((y * m).mean().abs() for m in (rows, cols, rows * cols)))


@pytest.mark.parametrize("name", list(GENERATORS))
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_resize_conv_keeps_shape_and_removes_the_checkerboard(name, interpolation):
    cls, kwargs = GENERATORS[name]
    x = torch.full((1, 3, 64, 64), 0.3)  # a constant input: any period-2 pattern comes from the layers
    energy = {}
    for kind in ("transpose", "resize_conv"):
        torch.manual_seed(0)
        net = cls(upsample=kind, upsample_interpolation=interpolation, **kwargs).eval()
        with torch.no_grad():
            y = net(x)
        assert y.shape == (1, 1, 64, 64)
        energy[kind] = checkerboard_energy(y)
    assert energy["transpose"] > 0
    assert energy["resize_conv"] < 0.25 * energy["transpose"]


def test_paper_default_stays_transpose():
    for generator in ("unet_256", "resnet_9blocks", "li_resnet", "pix2pixhd_global", "pix2pixhd_local"):
        cfg = compose_run([f"generator={generator}"])
        assert cfg.generator.upsample == "transpose"
    with pytest.raises(ValueError, match="generator.upsample"):
        UNetGenerator(num_downs=6, ngf=4, upsample="pixelshuffle")
