"""Fréchet Inception Distance and Kernel Inception Distance of image sets (reference_spec 3.6 and 6.2).

- FID (Heusel et al. 2017): ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)) of Gaussians fitted to
  Inception pool3 features (unbiased covariances). Fundus2Angio reports FID on 56 test crops; with so few
  samples FID is strongly biased upwards (its expectation depends on N), so compare FIDs only at equal N
  and report KID beside it.
- KID (Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel
  k(x, y) = (x.y / d + 1)^3, averaged over ``subsets`` random subsets of ``subset_size`` samples drawn
  without replacement from each set. The subset size is min(subset_size, N_real, N_fake) (spec 6.2:
  min(50, N)), never larger than the sets; KID is unbiased, so it is comparable across N.

Features come from :class:`fundus2ffa.metrics.inception.InceptionFeatures` on uint8 images (FFA
replicated to three channels). The pure functions take feature matrices; :class:`FID` and :class:`KID`
are torchmetrics Metrics that take images (gathered across DDP ranks by torchmetrics' "cat" states).
All statistics are computed in float64.
"""

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from fundus2ffa.metrics.convert import to_uint8
from fundus2ffa.metrics.full_precision import full_precision


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """FID between two N x D feature matrices (float64 scalar), unbiased (N - 1) covariances.

    With centred features A (n x D) and B (m x D), S_r = A'A / (n-1) and S_f = B'B / (m-1), and the
    non-zero eigenvalues of S_r S_f are those of (A B')(A B')' / ((n-1)(m-1)), so
    Tr((S_r S_f)^(1/2)) is the nuclear norm of A B' / sqrt((n-1)(m-1)): an SVD of an n x m matrix,
    exact and stable for the rank-deficient covariances of fewer samples than dimensions (and far
    cheaper than D x D matrix square roots when n, m < D = 2048). For larger sets it is computed in
    feature space as Tr((S_r^(1/2) S_f S_r^(1/2))^(1/2)), through symmetric PSD matrices only.
    """
    n, m = real.shape[0], fake.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"FID needs at least 2 samples per set, got {n} real and {m} fake")
    x, y = real.double(), fake.double()
    mu_r, mu_f = x.mean(0), y.mean(0)
    a, b = x - mu_r, y - mu_f
    trace_r, trace_f = a.square().sum() / (n - 1), b.square().sum() / (m - 1)
    if max(n, m) <= x.shape[1]:
        trace_sqrt = torch.linalg.matrix_norm(a @ b.T, ord="nuc") / ((n - 1) * (m - 1)) ** 0.5
    else:
        cov_r, cov_f = a.T @ a / (n - 1), b.T @ b / (m - 1)
        root_r = _sqrtm_psd(cov_r)
        middle = root_r @ cov_f @ root_r
        trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return (mu_r - mu_f).square().sum() + trace_r + trace_f - 2 * trace_sqrt


def kid_subset_size(n_real: int, n_fake: int, subset_size: int = 50) -> int:
    """min(subset_size, N_real, N_fake): the subset size KID actually uses (spec 6.2)."""
    return int(min(subset_size, n_real, n_fake))


def kernel_inception_distance(
    real: torch.Tensor,
    fake: torch.Tensor,
    subsets: int = 100,
    subset_size: int = 50,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KID (mean, std over subsets) between two N x D feature matrices, float64.

    Each subset draws m = min(subset_size, N_real, N_fake) rows of each set without replacement
    (a seeded generator: the same sets give the same value) and takes the unbiased MMD^2
    (diagonals of k(x, x) and k(y, y) excluded). std is the population std over subsets.
    """
    m = kid_subset_size(real.shape[0], fake.shape[0], subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {real.shape[0]} real and {fake.shape[0]} fake")
    x_all, y_all = real.double().cpu(), fake.double().cpu()
    gamma = 1.0 / x_all.shape[1] if gamma is None else float(gamma)
    generator = torch.Generator().manual_seed(int(seed))
    idx_x = torch.stack([torch.randperm(x_all.shape[0], generator=generator)[:m] for _ in range(subsets)])
    idx_y = torch.stack([torch.randperm(y_all.shape[0], generator=generator)[:m] for _ in range(subsets)])
    x, y = x_all[idx_x], y_all[idx_y]  # S x m x D

    def kernel(a, b):
        return (gamma * a @ b.transpose(1, 2) + coef) ** degree

    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    off_diag = m * (m - 1)
    mmd = (
        (k_xx.sum((1, 2)) - k_xx.diagonal(dim1=1, dim2=2).sum(1)) / off_diag
        + (k_yy.sum((1, 2)) - k_yy.diagonal(dim1=1, dim2=2).sum(1)) / off_diag
        - 2 * k_xy.mean((1, 2))
    )
    return mmd.mean(), mmd.std(unbiased=False)


class _FeatureSetMetric(Metric):
    """Accumulates Inception features of a real and a fake image set.

    ``update(images, real)``: uint8 images pass through; floating images are taken in the model range
    [-1, 1] and quantised with ``to_uint8`` (spec 6.2: uint8 semantics).
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(self, feature_extractor: nn.Module | None = None, **kwargs):
        super().__init__(**kwargs)
        if feature_extractor is None:
            from fundus2ffa.metrics.inception import InceptionFeatures

            feature_extractor = InceptionFeatures()
        self.feature_extractor = feature_extractor
        self.add_state("real_features", default=[], dist_reduce_fx="cat")
        self.add_state("fake_features", default=[], dist_reduce_fx="cat")

    @full_precision
    def update(self, images: torch.Tensor, real: bool) -> None:
        if images.dtype != torch.uint8:
            images = to_uint8(images)
        features = self.feature_extractor(images).double()
        (self.real_features if real else self.fake_features).append(features)

    def _sets(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.real_features or not self.fake_features:
            raise RuntimeError(f"{type(self).__name__} needs images of both sets: call update(real=True) and update(real=False)")
        return dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features)


class FID(_FeatureSetMetric):
    """Fréchet Inception Distance as a torchmetrics Metric (see :func:`frechet_distance`)."""

    def compute(self) -> torch.Tensor:
        return frechet_distance(*self._sets())


class KID(_FeatureSetMetric):
    """Kernel Inception Distance as a torchmetrics Metric; ``compute`` returns (mean, std).

    subset_size is capped at the set sizes (min(subset_size, N_real, N_fake)), unlike torchmetrics'
    KernelInceptionDistance, which refuses sets smaller than its subset size.
    """

    def __init__(
        self, feature_extractor: nn.Module | None = None, subsets: int = 100, subset_size: int = 50, seed: int = 0, **kwargs
    ):
        super().__init__(feature_extractor, **kwargs)
        self.subsets, self.subset_size, self.seed = int(subsets), int(subset_size), int(seed)

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        return kernel_inception_distance(*self._sets(), subsets=self.subsets, subset_size=self.subset_size, seed=self.seed)
