"""LPIPS v0.1 AlexNet (metrics/lpips.py; reference_spec 6.1-6.2; issue 10, item 10).

torchvision's ImageNet AlexNet cannot be downloaded here (no model hub), so these tests use a
``random`` trunk with the real v0.1 linear heads of the lpips package: they check the metric's
properties (0 for identical images, rising with noise), that it computes exactly what the lpips package
computes for the same weights (standard and the Fundus2Video code's variant), and the weight errors.
With the ImageNet trunk the numbers are LPIPS; with the random one they are not.
"""

import shutil

import pytest
import torch

from fundus2ffa.errors import WeightsError
from fundus2ffa.metrics.lpips import LPIPS, heads_path
from fundus2ffa.models.gan_module import GANModule

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def metric() -> LPIPS:
    torch.manual_seed(0)
    return LPIPS("random")


def retina_like(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Grey N x 1 x H x W images in [-1, 1] with smooth structure (not white noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) * 2 - 1


def test_identical_images_score_zero_and_noise_raises_the_distance(metric):
    images = retina_like()
    assert torch.equal(metric(images, images), torch.zeros(2))
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(images.shape, generator=g)
    distances = [metric(images, (images + level * noise).clamp(-1, 1)) for level in (0.05, 0.1, 0.2, 0.4)]
    for low, high in zip(distances, distances[1:]):
        assert (high > low).all(), (low, high)
    assert (distances[0] > 0).all()
    # grey is replicated to 3 channels: the same as passing the replicated image
    torch.testing.assert_close(metric(images, images.flip(-1)), metric(images.expand(-1, 3, -1, -1), images.flip(-1).expand(-1, 3, -1, -1)))


def test_matches_the_lpips_package_with_the_same_weights(metric):
    import lpips  # a test dependency (pyproject [test]); the heads come from it too
    reference = {spatial: lpips.LPIPS(pretrained=False, pnet_rand=True, net="alex", spatial=spatial, verbose=False)
                 for spatial in (False, True)}
    trunk = metric.net.features.state_dict()
    for ref in reference.values():
        state = ref.state_dict()
        for key in state:
            if key.startswith("net.slice"):  # net.slice<k>.<torchvision index>.<param>
                _, _, index, param = key.split(".")
                state[key] = trunk[f"{index}.{param}"]
            elif key.startswith("lin"):  # lin<k>.model.1.weight and the same tensor as lins.<k>.model.1.weight
                index = key.split(".")[1] if key.startswith("lins.") else key[3]
                state[key] = metric.heads[int(index)].weight
        ref.load_state_dict(state)
    g = torch.Generator().manual_seed(2)
    x, y = (torch.rand(2, 3, 48, 64, generator=g) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        torch.testing.assert_close(metric(x, y), reference[False](x, y).flatten())
        # the released Fundus2Video helper: normalize=True (x -> 2x - 1) on [-1, 1] data, spatial=True, mean
        torch.testing.assert_close(metric(x, y, compat=True), reference[True](x, y, normalize=True).mean((1, 2, 3)))


def test_weights_must_be_named_and_verified(tmp_path):
    with pytest.raises(WeightsError, match="pretrained.lpips_backbone is not set.*torchvision.*random"):
        LPIPS(None)
    with pytest.raises(WeightsError, match="pretrained.lpips_backbone=.*no such file"):
        LPIPS(str(tmp_path / "alexnet.pth"))
    not_alexnet = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, not_alexnet)
    with pytest.raises(WeightsError, match="not an AlexNet state dict"):
        LPIPS(str(not_alexnet))
    with pytest.raises(WeightsError, match="pretrained.lpips_heads=.*no such file.*pip install"):
        LPIPS("random", str(tmp_path / "alex.pth"))
    tampered = tmp_path / "alex.pth"
    shutil.copy(heads_path("package"), tampered)
    with tampered.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(WeightsError, match="sha256"):
        LPIPS("random", str(tampered))
    # a correct local copy of the heads works like the package's
    good = tmp_path / "copy.pth"
    shutil.copy(heads_path("package"), good)
    assert heads_path(str(good)) == good


class Echo(GANModule):
    """A minimal GAN module whose translation is the CF's first channel (to test the evaluation path)."""

    def __init__(self, metrics: dict):
        super().__init__()
        self.store_hparams()

    def translate(self, cf: torch.Tensor) -> torch.Tensor:
        return cf[:, :1]


def test_model_evaluation_adds_per_image_lpips_and_fails_early_without_weights():
    images = retina_like(4, 32, seed=3)
    module = Echo({"quantize": False, "lpips": True, "lpips_backbone": "random", "lpips_heads": "package"})
    module.setup("fit")
    noisy = (images + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(4))).clamp(-1, 1)
    batch = {"cf": images.expand(-1, 3, -1, -1), "ffa": torch.cat([images[:2], noisy[2:]]), "id": list("abcd")}
    module._eval_step("test", batch)
    rows = {row["id"]: row for row in module._tables["test"].rows}
    assert rows["a"]["lpips"] == 0.0 and rows["b"]["lpips"] == 0.0
    assert rows["c"]["lpips"] > 0 and rows["d"]["lpips"] > 0
    # asked for without a trunk: a WeightsError naming the key, before anything trains
    with pytest.raises(WeightsError, match="pretrained.lpips_backbone is not set"):
        Echo({"lpips": True, "lpips_backbone": None}).setup("fit")
    Echo({"quantize": True}).setup("fit")  # off by default: nothing to load
