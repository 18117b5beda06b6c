"""FVD: the dataset-level Fréchet distance of I3D features and the Fundus2Video per-video variant.

The I3D-based checks run the real Kinetics-400 network on small synthetic angiogram videos at 32 x 32
(the network is fully convolutional up to its global pool, see fundus2ffa.nets.backbones.i3d); the
pipeline logic (prefixes, NaN handling, double mapping, state merging) is checked with a tiny
deterministic feature function whose expected values are derived by hand.
"""

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from fundus2ffa import weights
from fundus2ffa.data.synthetic.retina import synthesize_eye
from fundus2ffa.errors import ConfigError, WeightsError
from fundus2ffa.metrics.fvd import (
    FrechetVideoDistance,
    clip_indices,
    frechet_distance,
    frechet_video_distance,
    fvd_from_features,
    gaussian_statistics,
    i3d_features,
    preprocess_video,
)


@pytest.fixture(scope="session")
def kinetics_i3d():
    weights.fetch("i3d_kinetics400")
    from fundus2ffa.nets.backbones.i3d_convert import load_i3d

    return load_i3d()


def angiogram_videos(count: int, size: int, frames: int = 12, seed: int = 0) -> torch.Tensor:
    """N x T x 1 x H x W synthetic FFA videos in [-1, 1] (arterial to late phase)."""
    videos = [synthesize_eye(seed + i, size=size, times=np.linspace(8.0, 300.0, frames)).frames for i in range(count)]
    return torch.from_numpy(np.stack(videos)).float().div(127.5).sub(1.0).unsqueeze(2)


class MeanDetector(nn.Module):
    """Features = per-channel mean of the clip: hand-computable stand-in for the I3D."""

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return clips.mean(dim=(2, 3, 4))


class PooledDetector(nn.Module):
    """24-d features (2x2x2 average pool of 3 channels): enough dimensions for a covariance."""

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool3d(clips, 2).flatten(1)


def test_fvd_is_zero_for_a_set_against_itself_and_grows_with_noise(kinetics_i3d):
    real = angiogram_videos(6, 32)
    metric = FrechetVideoDistance(detector=kinetics_i3d, size=32)
    metric.update(real, real)
    with pytest.warns(UserWarning, match="below 256 videos"):
        self_distance = metric.compute().item()
    real_features = torch.cat(metric.real_features)
    assert real_features.shape == (6, 400)
    scale = real_features.double().var(0).sum().item()  # tr(S_real)
    assert abs(self_distance) < 1e-9 * scale  # measured ~1e-12 relative (sample-space nuclear norm)

    noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(0))
    distances = [fvd_from_features(real_features, i3d_features((real + sigma * noise).clamp(-1, 1), kinetics_i3d, size=32)).item()
                 for sigma in (0.05, 0.15, 0.45)]
    assert 0.01 * scale < distances[0] < distances[1] < distances[2]


def test_frechet_distance_matches_the_scipy_sqrtm_formula():
    generator = torch.Generator().manual_seed(1)
    for n, dim, rel in ((300, 20, 1e-10), (8, 50, 1e-5)):  # full-rank and singular covariances
        a = torch.randn(n, dim, generator=generator, dtype=torch.float64) * torch.linspace(0.1, 3.0, dim, dtype=torch.float64)
        b = 1.3 * a[: n - 1] + 0.2 + 0.5 * torch.randn(n - 1, dim, generator=generator, dtype=torch.float64)
        mu1, s1 = a.mean(0).numpy(), np.cov(a.numpy(), rowvar=False)
        mu2, s2 = b.mean(0).numpy(), np.cov(b.numpy(), rowvar=False)
        expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
        assert fvd_from_features(a, b).item() == pytest.approx(expected, rel=rel)
        assert frechet_distance(*gaussian_statistics(a), *gaussian_statistics(b)).item() == pytest.approx(expected, rel=rel)


def test_per_video_compat_is_the_nanmean_over_prefixes_of_squared_feature_distances():
    rng = np.random.default_rng(0)
    lengths = (12, 11, 9)  # the 9-frame video has no prefix of 10 frames: NaN, left out
    real_levels = [rng.uniform(-1, 1, t) for t in lengths]
    fake_levels = [rng.uniform(-1, 1, t) for t in lengths]
    as_video = lambda levels: torch.tensor(levels, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 8, 8)
    real = [as_video(v) for v in real_levels]
    fake = [as_video(v) for v in fake_levels]

    def expected(double_map: bool) -> float:
        factor = 2.0 if double_map else 1.0  # x -> 2x - 1 scales feature differences by 2
        scores = []
        for r, f in zip(real_levels, fake_levels):
            if len(r) < 10:
                continue
            per_prefix = [3 * (factor * (r[:L].mean() - f[:L].mean())) ** 2 for L in range(10, len(r) + 1)]
            scores.append(np.mean(per_prefix))
        return float(np.mean(scores))

    metric = FrechetVideoDistance(mode="per_video_compat", detector=MeanDetector(), size=8)
    metric.update(real[:2], fake[:2])
    metric.update(real[2:], fake[2:])
    with pytest.warns(UserWarning, match="1 of 3 videos have fewer than 10 frames"):
        value = metric.compute().item()
    assert value == pytest.approx(expected(double_map=True), rel=1e-6)

    plain = FrechetVideoDistance(mode="per_video_compat", detector=MeanDetector(), size=8, double_map=False)
    plain.update(real[:2], fake[:2])
    assert plain.compute().item() == pytest.approx(expected(double_map=False), rel=1e-6)
    assert value == pytest.approx(4 * plain.compute().item(), rel=1e-6)

    with pytest.raises(ValueError, match="differ in length"):
        metric.update([real[0]], [fake[1]])


def test_clips_have_a_fixed_length_and_frames_are_grey_to_rgb_resized_and_centre_cropped():
    assert clip_indices(12, 16).tolist()[0] == 0 and clip_indices(12, 16).tolist()[-1] == 11
    assert sorted(set(clip_indices(12, 16).tolist())) == list(range(12))  # every frame kept, some twice
    assert torch.all(clip_indices(40, 16).diff() > 0)
    assert clip_indices(5, 9, "first").tolist() == [0, 1, 2, 3, 4, 4, 4, 4, 4]
    with pytest.raises(ConfigError, match="clip_sampling"):
        clip_indices(5, 9, "middle")

    # a 16 x 32 grey video: the left and right quarters differ, the centre half is 0.5
    video = torch.full((4, 1, 16, 32), 0.5)
    video[..., :8], video[..., 24:] = -1.0, 1.0
    clip = preprocess_video(video, size=8)
    assert clip.shape == (3, 4, 8, 8)
    assert torch.allclose(clip, torch.full_like(clip, 0.5))
    assert torch.allclose(preprocess_video(video, size=8, double_map=True), torch.zeros_like(clip))


def test_metric_states_merge_like_a_single_process_and_hold_no_network_weights():
    generator = torch.Generator().manual_seed(2)
    real = torch.rand(8, 10, 3, 12, 12, generator=generator) * 2 - 1
    fake = (real + 0.3 * torch.randn(real.shape, generator=generator)).clamp(-1, 1)
    whole = FrechetVideoDistance(detector=PooledDetector(), size=12, clip_length=10, min_videos=2)
    whole.update(real, fake)
    first = FrechetVideoDistance(detector=PooledDetector(), size=12, clip_length=10, min_videos=2)
    second = FrechetVideoDistance(detector=PooledDetector(), size=12, clip_length=10, min_videos=2)
    first.update(real[:3], list(fake[:5]))  # batches need not pair up in dataset mode
    second.update(real[3:], list(fake[5:]))
    first.merge_state(second)
    assert first.compute().item() == pytest.approx(whole.compute().item(), rel=1e-9)
    assert whole.compute().item() > 0
    functional = frechet_video_distance(real, fake, detector=PooledDetector(), size=12, clip_length=10, min_videos=2)
    assert functional.item() == pytest.approx(whole.compute().item(), rel=1e-12)

    i3d_free = FrechetVideoDistance(detector=nn.Conv3d(3, 4, 1), size=12, clip_length=10)
    assert not any("weight" in key for key in i3d_free.state_dict())


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_too_few_videos_warn_or_give_nan():
    metric = FrechetVideoDistance(detector=PooledDetector(), size=12, clip_length=10)
    with pytest.warns(UserWarning, match="got 0 real, 0 fake"):
        assert torch.isnan(metric.compute())
    metric.reset()
    metric.update(torch.zeros(1, 10, 1, 12, 12), torch.zeros(1, 10, 1, 12, 12))
    with pytest.warns(UserWarning, match="at least 2 real and 2 fake videos"):
        assert torch.isnan(metric.compute())


def test_bad_configuration_and_missing_weights_fail_with_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="fvd_mode='per_video'"):
        FrechetVideoDistance(mode="per_video", detector=MeanDetector())
    with pytest.raises(ConfigError, match="clip_length=8"):
        FrechetVideoDistance(clip_length=8, detector=MeanDetector())
    monkeypatch.setenv("FUNDUS2FFA_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match="python -m fundus2ffa.weights fetch i3d_kinetics400") as missing:
        FrechetVideoDistance()
    assert "metrics.fvd.weights=/path/to/i3d-kinetics-400.ckpt" in str(missing.value)
