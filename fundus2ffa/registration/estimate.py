"""Estimate the transform that maps a moving image (the FFA) onto a fixed one (the CF).

Multimodal CF <-> FFA registration by features on vessel maps (Li et al. 2020 registered their pairs
before training, reference_spec 2.1; Fundus2Video consumed pre-registered frames, 1.2):

1. both images become vessel maps in which vessels are bright (priors/vessels.py: the CF green channel is
   inverted, the FFA used as is; a multiscale Hessian ridge filter removes background, optic disc and
   leakage blobs, which look different in the two modalities), inside their fields of view
   (priors/fov.py);
2. coarse level: the maps at ``coarse_size`` (longer side), keypoints and descriptors (SIFT by default;
   ORB and AKAZE selectable), Lowe's ratio test, RANSAC for the chosen model
   (similarity | affine | homography);
3. fine level (images larger than the coarse level): keypoints at up to ``fine_size``, matched only
   against fixed keypoints within ``guide_radius`` px of where the coarse transform sends them
   (guided matching), RANSAC again with a tighter threshold; the fine estimate replaces the coarse one
   only when it has at least as many inliers as needed;
4. plausibility: enough inliers, a non-degenerate transform (no reflection, anisotropy and shear
   bounded, a convex warped outline) and a scale within ``scale_range``; otherwise the pair fails with
   every reason that applies (the row's matrix, inliers and residual are those of the refused matrix).

Matches are one-to-one (each fixed and each moving keypoint position used once, the closest descriptor
kept): otherwise many moving keypoints matched to one fixed keypoint let RANSAC "fit" a collapsed
all-zero matrix with every match an inlier and zero residual (issue 22: 1475 of 1475 on a UWF pair).

``init: auto`` (the default) tries global keypoints first and, when they fail (too few matches or
inliers, or a degenerate or implausible fit: typical of roughly aligned ultra-widefield pairs whose
vessel maps share few keypoints), the correlation prior (``init: correlation``).

:func:`register_images` then decides what a pair becomes (issue 22): the estimate when it raises the
vessel agreement with the CF above the pair as given (:func:`vessel_agreement`); otherwise the pair as
given (``identity``: the FFA stretched onto the CF grid, no warp) when it can be kept as given (same
aspect ratio within 2 %, an FFA that shows vessels, ``keep_identity``); otherwise it fails.

The detector choice was measured, not assumed: fundus2ffa/registration/bench.py (README table).
"""

from dataclasses import dataclass, field

import cv2
import numpy as np

from fundus2ffa.errors import ConfigError
from fundus2ffa.priors.fov import fov_mask
from fundus2ffa.priors.vessels import vessel_representation

MODELS = ("similarity", "affine", "homography")
DETECTORS = ("sift", "orb")
INITS = ("auto", "none", "correlation")
STATUSES = ("ok", "identity", "failed")
MAX_ASPECT_CHANGE = 0.02  # the pair as given is kept only when both images share an aspect ratio within 2 %
MIN_STRUCTURE = 0.002  # fraction of the FFA field of view its vessel map must cover to be kept as given
INIT_SIZE = 256


@dataclass
class RegistrationOptions:
    """Options of :func:`estimate_transform` (CLI flags of ``python -m fundus2ffa.register``).

    model: similarity | affine | homography (RANSAC model).
    detector: sift | orb | akaze.
    coarse_size / fine_size: longer image side at the coarse and fine levels (0: no fine level).
    ratio: Lowe's ratio test threshold.
    ransac_px: RANSAC reprojection threshold at the coarse level (px of the coarse image); the fine
        level uses the same number of px of the fine image.
    guide_radius: fine-level search radius around the coarse prediction, px of the fine image.
    min_inliers: fewer RANSAC inliers fail the pair.
    min_inlier_ratio: fewer inliers per tentative match fail the pair.
    scale_range: plausible (min, max) scale of the moving image into the fixed frame.
    max_anisotropy: ratio of the two singular values of the linear part (1 for a similarity).
    max_features: keypoints per image and level.
    init: auto (default): none, and correlation when that fails. none: coarse keypoints are matched
        globally (any rotation and shift, a scale in ``scale_range``). correlation: for pairs known to be roughly aligned (e.g. the UWF SLO/FA eyes
        of ../shared/data, off by tens of px and a few percent of scale), the coarse level is instead a
        grid search over scale (``init_scales``) and rotation (``init_angles``, degrees) of the moving
        vessel map at 256 px, each scored by phase correlation (which gives the shift); the fine level
        then matches keypoints within ``guide_radius`` of that estimate. Global matching of
        cross-modal UWF vessel maps drowns in repetitive false matches; the prior avoids it.
    keep_identity: when no estimate beats the pair as given, keep it as given (status identity) rather
        than fail it (:func:`register_images`; CLI ``--no-identity`` turns it off).
    min_agreement_gain: how much an estimate must raise the vessel agreement (:func:`vessel_agreement`,
        a correlation in [-1, 1]) above the pair as given to beat it. Measured: correct estimates raise
        it by 0.05-0.9 (real FFA frames under known transforms, UWF eyes), a wrong correlation-prior
        estimate of a real frame by 0.004.
    """

    model: str = "similarity"
    detector: str = "sift"
    coarse_size: int = 512
    fine_size: int = 1024
    ratio: float = 0.85
    ransac_px: float = 3.0
    guide_radius: float = 12.0
    min_inliers: int = 12
    min_inlier_ratio: float = 0.05
    scale_range: tuple[float, float] = (0.5, 2.0)
    max_anisotropy: float = 1.3
    max_features: int = 4000
    init: str = "auto"
    keep_identity: bool = True
    min_agreement_gain: float = 0.02
    init_scales: tuple[float, float, int] = (0.85, 1.15, 7)
    init_angles: tuple[float, float, float] = (-12.0, 12.0, 3.0)

    def check(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"registration model must be one of {'|'.join(MODELS)} (--model), got {self.model!r}")
        if self.detector not in DETECTORS:
            raise ConfigError(f"detector must be one of {'|'.join(DETECTORS)} (--detector), got {self.detector!r}")
        if self.coarse_size < 64:
            raise ConfigError(f"--coarse-size must be at least 64 px, got {self.coarse_size}")
        if self.init not in INITS:
            raise ConfigError(f"--init must be one of {'|'.join(INITS)}, got {self.init!r}")
        low, high = self.scale_range
        if not 0 < low < 1 < high:
            raise ConfigError(f"--scale-range must satisfy 0 < min < 1 < max, got {self.scale_range}")


@dataclass
class Estimate:
    """Result of :func:`estimate_transform`.

    matrix: 3x3 homogeneous matrix mapping moving (x, y) px to fixed px (full resolution), None on failure.
    ok: whether it passed every check; reason: why not (empty when ok), or a note.
    inliers / matches: RANSAC inliers and tentative matches of the level that gave the matrix.
    residual_px: RMS reprojection error of the inliers, fixed-image px (full resolution).
    level: coarse | fine | correlation | identity.
    status: what :func:`register_images` made of the pair: ok | identity | failed ('' before it decided).
    """

    matrix: np.ndarray | None
    ok: bool
    reason: str = ""
    inliers: int = 0
    matches: int = 0
    residual_px: float = float("nan")
    level: str = ""
    scale: float = float("nan")
    extra: dict = field(default_factory=dict)
    status: str = ""

    @property
    def inlier_ratio(self) -> float:
        return self.inliers / self.matches if self.matches else 0.0


def _detector(name: str, max_features: int):
    if name == "sift":
        return cv2.SIFT_create(nfeatures=max_features, contrastThreshold=0.02), cv2.NORM_L2
    return cv2.ORB_create(nfeatures=max_features, scaleFactor=1.2, nlevels=8, fastThreshold=10), cv2.NORM_HAMMING


def _resized(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Image whose longer side is at most ``size`` (never upsampled) and the factor applied."""
    height, width = image.shape[:2]
    factor = min(1.0, size / max(height, width))
    if factor == 1.0:
        return image, 1.0
    out = cv2.resize(image, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_AREA)
    return out, factor


def prepare(image: np.ndarray, modality: str, size: int) -> tuple[np.ndarray, float]:
    """Vessel map (uint8, vessels bright) of ``image`` at longer side ``size`` and its scale factor."""
    small, factor = _resized(image, size)
    sigmas = (1.0, 2.0, 3.0) if max(small.shape[:2]) <= 640 else (1.5, 3.0, 5.0)
    return vessel_representation(small, modality, sigmas=sigmas, mask=fov_mask(small, dilate=0)), factor


def _features(vessel_map: np.ndarray, detector):
    keypoints, descriptors = detector.detectAndCompute(vessel_map, (vessel_map > 0).astype(np.uint8) * 255)
    points = np.float32([k.pt for k in keypoints]).reshape(-1, 2)
    return points, descriptors


def _fit(src: np.ndarray, dst: np.ndarray, model: str, threshold: float):
    """RANSAC fit of ``model`` mapping src -> dst; (3x3 matrix or None, inlier boolean mask)."""
    if len(src) < (4 if model == "homography" else 3):
        return None, np.zeros(len(src), bool)
    if model == "similarity":
        matrix, inliers = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=threshold, maxIters=5000, confidence=0.999, refineIters=20
        )
    elif model == "affine":
        matrix, inliers = cv2.estimateAffine2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=threshold, maxIters=5000, confidence=0.999, refineIters=20
        )
    else:
        matrix, inliers = cv2.findHomography(src, dst, cv2.RANSAC, threshold, maxIters=5000, confidence=0.999)
    if matrix is None or not np.all(np.isfinite(matrix)):
        return None, np.zeros(len(src), bool)
    if matrix.shape == (2, 3):
        matrix = np.vstack([matrix, [0.0, 0.0, 1.0]])
    matrix = matrix.astype(np.float64)
    # the inliers of the matrix returned, recounted: OpenCV refines the matrix after choosing its inlier
    # mask, and a collapsed (all-zero) fit comes back with every match flagged (issue 22)
    with np.errstate(all="ignore"):
        errors = np.linalg.norm(apply(matrix, src) - np.asarray(dst, np.float64).reshape(-1, 2), axis=1)
    return matrix, np.nan_to_num(errors, nan=np.inf) <= threshold


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map N x 2 points through a 3x3 homogeneous matrix."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    homogeneous = np.hstack([points, np.ones((len(points), 1))]) @ matrix.T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def _rescale(matrix: np.ndarray, moving_factor: float, fixed_factor: float) -> np.ndarray:
    """A matrix between images resized by the factors -> the same map between the full-size images."""
    return np.diag([1 / fixed_factor, 1 / fixed_factor, 1.0]) @ matrix @ np.diag([moving_factor, moving_factor, 1.0])


def _ratio_matches(desc_m, desc_f, norm, ratio, mask=None, pts_m=None, pts_f=None) -> list[tuple[int, int]]:
    """Lowe's ratio test, then one-to-one: each fixed and each moving keypoint position (rounded to
    1 px; SIFT puts several orientations at one position) keeps only its closest match."""
    if desc_m is None or desc_f is None or len(desc_m) < 2 or len(desc_f) < 2:
        return []
    matcher = cv2.BFMatcher(norm)
    knn = matcher.knnMatch(desc_m, desc_f, k=2, mask=mask) if mask is not None else matcher.knnMatch(desc_m, desc_f, k=2)
    candidates = []
    for found in knn:
        if not found:
            continue
        if len(found) == 1 or found[0].distance < ratio * found[1].distance:
            candidates.append((found[0].distance, found[0].queryIdx, found[0].trainIdx))

    def position(points, index):
        return index if points is None else tuple(np.round(points[index]).astype(int))

    pairs, used_m, used_f = [], set(), set()
    for _, query, train in sorted(candidates):
        key_m, key_f = position(pts_m, query), position(pts_f, train)
        if key_m in used_m or key_f in used_f:
            continue
        used_m.add(key_m)
        used_f.add(key_f)
        pairs.append((query, train))
    return sorted(pairs)


def _plausibility(matrix: np.ndarray, moving_shape, options: RegistrationOptions) -> tuple[str, float]:
    """('' or the reason it is implausible, scale)."""
    linear = matrix[:2, :2] / matrix[2, 2]
    det = float(np.linalg.det(linear))
    singular = np.linalg.svd(linear, compute_uv=False)
    scale = float(np.sqrt(max(det, 0.0)))
    if not np.all(np.isfinite(matrix)) or det <= 1e-9:
        return "degenerate transform (reflection or collapse: determinant <= 0)", scale
    if singular[0] / singular[1] > options.max_anisotropy:
        return (
            f"degenerate transform (anisotropy {singular[0] / singular[1]:.2f} > {options.max_anisotropy}; "
            "raise --max-anisotropy if the modalities really differ in aspect)",
            scale,
        )
    low, high = options.scale_range
    if not low <= scale <= high:
        return f"implausible scale {scale:.3f} outside --scale-range {low}..{high}", scale
    height, width = moving_shape[:2]
    corners = apply(matrix, [[0, 0], [width, 0], [width, height], [0, height]])
    if not cv2.isContourConvex(corners.astype(np.float32).reshape(-1, 1, 2)):
        return "degenerate transform (the warped image outline is not convex)", scale
    return "", scale


def _residual(matrix, src, dst) -> float:
    if len(src) == 0:
        return float("nan")
    return float(np.sqrt(np.mean(np.sum((apply(matrix, src) - dst) ** 2, axis=1))))


def estimate_transform(
    fixed: np.ndarray,
    moving: np.ndarray,
    fixed_modality: str = "cf",
    moving_modality: str = "ffa",
    options: RegistrationOptions | None = None,
) -> Estimate:
    """Transform (3x3) mapping ``moving`` px onto ``fixed`` px; see the module docstring.

    fixed / moving: uint8 H x W x 3 (CF) or H x W (FFA) images, any sizes. ``init: auto`` returns the
    global keypoint estimate when it passes, else the correlation one (``extra['init']`` says which;
    a failure of both names both reasons).
    """
    options = options or RegistrationOptions()
    options.check()
    if options.init != "auto":
        result = _estimate(fixed, moving, fixed_modality, moving_modality, options, options.init)
        result.extra.setdefault("init", options.init)
        return result
    first = _estimate(fixed, moving, fixed_modality, moving_modality, options, "none")
    first.extra["init"] = "none"
    if first.ok:
        return first
    second = _estimate(fixed, moving, fixed_modality, moving_modality, options, "correlation")
    second.extra.update(init="correlation", keypoints_failed=first.reason)
    if not second.ok:
        second.reason = f"global keypoints: {first.reason}; correlation prior: {second.reason}"
    return second


def _estimate(fixed, moving, fixed_modality, moving_modality, options: RegistrationOptions, init: str) -> Estimate:
    detector, norm = _detector(options.detector, options.max_features)
    if init == "correlation":
        full, response = _correlation_init(fixed, moving, fixed_modality, moving_modality, options)
        result = _fine_level(fixed, moving, fixed_modality, moving_modality, full, detector, norm, options)
        if result is None:
            return Estimate(
                full, False, f"no keypoint support near the correlation estimate (phase correlation {response:.3f})",
                level="correlation", scale=_plausibility(full, moving.shape, options)[1],
            )
    else:
        result = _coarse_level(fixed, moving, fixed_modality, moving_modality, detector, norm, options)
        if result.matrix is None:
            return result
        big = max(max(fixed.shape[:2]), max(moving.shape[:2]))
        if options.fine_size and big > options.coarse_size and result.inliers >= options.min_inliers:
            fine = _fine_level(fixed, moving, fixed_modality, moving_modality, result.matrix, detector, norm, options)
            if fine is not None:
                result = fine

    # every check that fails is named; matrix, inliers, residual and scale stay those of this matrix
    reasons = []
    if result.inliers < options.min_inliers:
        reasons.append(f"too few inliers ({result.inliers} < --min-inliers {options.min_inliers})")
    elif result.inlier_ratio < options.min_inlier_ratio:
        reasons.append(f"inlier ratio {result.inlier_ratio:.3f} < --min-inlier-ratio {options.min_inlier_ratio}")
    reason, result.scale = _plausibility(result.matrix, moving.shape, options)
    if reason:
        reasons.append(reason)
    result.ok, result.reason = not reasons, "; ".join(reasons)
    if result.ok and init == "correlation":
        # the prior says the pair is roughly aligned already: a transform that agrees less with the CF's
        # vessels than the unregistered FFA does is wrong, whatever its inliers say
        refuse_if_not_better(result, fixed, moving, fixed_modality, moving_modality, options.min_agreement_gain)
    return result


def refuse_if_not_better(result: Estimate, fixed, moving, fixed_modality, moving_modality, min_gain: float = 0.02) -> Estimate:
    """Refuse an accepted ``result`` whose vessel agreement with the fixed image does not exceed that of
    the pair as given by ``min_agreement_gain`` (``extra``: agreement_before / agreement_after)."""
    if "agreement_after" not in result.extra:
        result.extra.update(
            agreement_before=vessel_agreement(fixed, moving, fixed_modality, moving_modality, None),
            agreement_after=vessel_agreement(fixed, moving, fixed_modality, moving_modality, result.matrix),
        )
    before, after = result.extra["agreement_before"], result.extra["agreement_after"]
    if result.ok and after < before + min_gain:
        result.ok = False
        verb = "lowers" if after <= before else "does not raise (by --min-agreement-gain)"
        result.reason = (f"registration {verb} the vessel agreement with the CF ({after:.3f} after, {before:.3f} as given, "
                         f"gain needed {min_gain})")
    return result


def stretch_matrix(fixed_shape, moving_shape) -> np.ndarray:
    """The pair as given: the moving grid stretched onto the fixed one (the identity for equal sizes)."""
    return np.diag([fixed_shape[1] / moving_shape[1], fixed_shape[0] / moving_shape[0], 1.0])


def identity_problem(fixed: np.ndarray, moving: np.ndarray, moving_modality: str = "ffa") -> str:
    """Why the pair cannot be kept as given ('' when it can): different aspect ratios (not one grid), or a
    moving image without vessels (a blank or wrong file)."""
    (fh, fw), (mh, mw) = fixed.shape[:2], moving.shape[:2]
    change = abs((fw / fh) / (mw / mh) - 1.0)
    if change > MAX_ASPECT_CHANGE:
        return f"the images differ in aspect ratio ({fw}x{fh} vs {mw}x{mh}), so they are not on one grid"
    vessels, _ = prepare(moving, moving_modality, 2 * INIT_SIZE)
    field = fov_mask(_resized(moving, 2 * INIT_SIZE)[0], dilate=0)
    if (vessels > 0).sum() < MIN_STRUCTURE * max(1, int(field.sum())):
        return "the FFA shows no vessels"
    return ""


def register_images(
    fixed: np.ndarray,
    moving: np.ndarray,
    fixed_modality: str = "cf",
    moving_modality: str = "ffa",
    options: RegistrationOptions | None = None,
) -> Estimate:
    """What a pair becomes (issue 22), as an Estimate with ``status``:

    * ``ok``: the estimate (:func:`estimate_transform`) passed its checks and raises the vessel agreement
      with the fixed image above the pair as given;
    * ``identity``: no estimate beats the pair as given, and it can be kept as given
      (:func:`identity_problem`, ``options.keep_identity``): matrix = :func:`stretch_matrix`, no inliers,
      no residual; ``extra['refused']`` describes the estimate that was not used and ``reason`` says why;
    * ``failed``: neither; matrix, inliers, residual and scale are those of the refused estimate (None
      when there was none) and ``reason`` names every cause.
    """
    options = options or RegistrationOptions()
    estimate = estimate_transform(fixed, moving, fixed_modality, moving_modality, options)
    if estimate.ok:
        refuse_if_not_better(estimate, fixed, moving, fixed_modality, moving_modality, options.min_agreement_gain)
    if estimate.ok:
        estimate.status = "ok"
        return estimate
    return keep_as_given(fixed, moving, estimate, options, moving_modality)


def keep_as_given(fixed, moving, estimate: Estimate, options: RegistrationOptions, moving_modality: str = "ffa") -> Estimate:
    """The pair as given (status identity) in place of the refused ``estimate``, or ``estimate`` marked
    failed with the reason it cannot be kept as given (see :func:`register_images`)."""
    problem = identity_problem(fixed, moving, moving_modality) if options.keep_identity else "--no-identity"
    if problem:
        estimate.ok, estimate.status = False, "failed"
        estimate.reason = f"{estimate.reason}; not kept as given: {problem}"
        return estimate
    matrix = stretch_matrix(fixed.shape, moving.shape)
    refused = {
        "matrix": None if estimate.matrix is None else estimate.matrix.tolist(), "inliers": estimate.inliers,
        "matches": estimate.matches, "scale": estimate.scale, "reason": estimate.reason,
    }
    return Estimate(
        matrix, True, f"kept as given: no usable estimate beats it ({estimate.reason})", level="identity",
        scale=float(np.sqrt(abs(np.linalg.det(matrix[:2, :2])))), status="identity",
        extra={**{k: v for k, v in estimate.extra.items() if k.startswith("agreement") or k == "init"}, "refused": refused},
    )


def vessel_agreement(fixed, moving, fixed_modality, moving_modality, matrix) -> float:
    """Normalised cross-correlation of the blurred vessel maps (at ``INIT_SIZE`` * 2 px) inside the common
    field of view, with the moving image mapped by ``matrix`` (None: stretched onto the fixed grid)."""
    fixed_map, fixed_factor = prepare(fixed, fixed_modality, 2 * INIT_SIZE)
    moving_map, moving_factor = prepare(moving, moving_modality, 2 * INIT_SIZE)
    height, width = fixed_map.shape
    if matrix is None:
        warp = np.diag([width / moving_map.shape[1], height / moving_map.shape[0], 1.0])
    else:
        warp = np.diag([fixed_factor, fixed_factor, 1.0]) @ matrix @ np.diag([1 / moving_factor, 1 / moving_factor, 1.0])
    warped = cv2.warpPerspective(moving_map, warp, (width, height)).astype(np.float32)
    inside = cv2.warpPerspective(np.ones_like(moving_map), warp, (width, height)) > 0
    inside &= fov_mask(cv2.resize(fixed, (width, height)) if fixed.shape[:2] != (height, width) else fixed) > 0
    a = cv2.GaussianBlur(fixed_map.astype(np.float32), (0, 0), 2.0)[inside]
    b = cv2.GaussianBlur(warped, (0, 0), 2.0)[inside]
    if a.size < 16 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _coarse_level(fixed, moving, fixed_modality, moving_modality, detector, norm, options) -> Estimate:
    """Global keypoint matching on the vessel maps at ``coarse_size``."""
    fixed_map, fixed_factor = prepare(fixed, fixed_modality, options.coarse_size)
    moving_map, moving_factor = prepare(moving, moving_modality, options.coarse_size)
    pts_f, desc_f = _features(fixed_map, detector)
    pts_m, desc_m = _features(moving_map, detector)
    pairs = _ratio_matches(desc_m, desc_f, norm, options.ratio, pts_m=pts_m, pts_f=pts_f)
    if len(pairs) < options.min_inliers:
        return Estimate(None, False, f"too few matches ({len(pairs)} < --min-inliers {options.min_inliers})", 0, len(pairs), level="coarse")
    src = pts_m[[p[0] for p in pairs]]
    dst = pts_f[[p[1] for p in pairs]]
    coarse, inliers = _fit(src, dst, options.model, options.ransac_px)
    if coarse is None:
        return Estimate(None, False, "RANSAC found no transform", 0, len(pairs), level="coarse")
    return Estimate(
        _rescale(coarse, moving_factor, fixed_factor), True, "", int(inliers.sum()), len(pairs),
        _residual(coarse, src[inliers], dst[inliers]) / fixed_factor, "coarse",
    )


def _correlation_init(fixed, moving, fixed_modality, moving_modality, options) -> tuple[np.ndarray, float]:
    """Grid search over scale and rotation scored by phase correlation of blurred vessel maps at
    :data:`INIT_SIZE` px (the moving map is first stretched onto the fixed grid); (full-size matrix, peak)."""
    fixed_map, fixed_factor = prepare(fixed, fixed_modality, INIT_SIZE)
    moving_map, moving_factor = prepare(moving, moving_modality, INIT_SIZE)
    height, width = fixed_map.shape
    stretch = np.diag([width / moving_map.shape[1], height / moving_map.shape[0], 1.0])
    target = cv2.GaussianBlur(fixed_map.astype(np.float32), (0, 0), 2.0)
    source = cv2.GaussianBlur(
        cv2.warpPerspective(moving_map, stretch, (width, height)).astype(np.float32), (0, 0), 2.0
    )
    window = cv2.createHanningWindow((width, height), cv2.CV_32F)
    best, best_matrix = -1.0, np.eye(3)
    low, high, steps = options.init_scales
    start, stop, step = options.init_angles
    for scale in np.linspace(low, high, int(steps)):
        for angle in np.arange(start, stop + 1e-9, step):
            rotation = cv2.getRotationMatrix2D((width / 2, height / 2), float(angle), float(scale))
            (dx, dy), response = cv2.phaseCorrelate(cv2.warpAffine(source, rotation, (width, height)), target, window)
            if response > best:
                best = response
                best_matrix = np.vstack([rotation, [0.0, 0.0, 1.0]])
                best_matrix[0, 2] += dx
                best_matrix[1, 2] += dy
    return _rescale(best_matrix @ stretch, moving_factor, fixed_factor), float(best)


def _allowed(guess: np.ndarray, pts_m: np.ndarray, pts_f: np.ndarray, radius: float) -> np.ndarray:
    """uint8 matrix moving x fixed: 1 where a fixed keypoint lies within ``radius`` of the predicted position."""
    if len(pts_m) == 0 or len(pts_f) == 0:
        return np.zeros((len(pts_m), len(pts_f)), np.uint8)
    predicted = apply(guess, pts_m)
    distance = np.linalg.norm(predicted[:, None, :] - pts_f[None, :, :], axis=2)
    return (distance <= radius).astype(np.uint8)


def _fine_level(fixed, moving, fixed_modality, moving_modality, full, detector, norm, options) -> Estimate | None:
    """Guided matching at up to ``fine_size`` around the coarse prediction; None when it does not improve."""
    size = options.fine_size or options.coarse_size
    fixed_map, fixed_factor = prepare(fixed, fixed_modality, size)
    moving_map, moving_factor = prepare(moving, moving_modality, size)
    pts_f, desc_f = _features(fixed_map, detector)
    pts_m, desc_m = _features(moving_map, detector)
    if len(pts_f) < 2 or len(pts_m) < 2:
        return None
    # coarse prediction in fine-level px: fine_fixed = S_f * full * S_m^-1 * fine_moving
    guess = np.diag([fixed_factor, fixed_factor, 1.0]) @ full @ np.diag([1 / moving_factor, 1 / moving_factor, 1.0])
    allowed = _allowed(guess, pts_m, pts_f, options.guide_radius)
    pairs = _ratio_matches(desc_m, desc_f, norm, min(0.95, options.ratio + 0.1), mask=allowed, pts_m=pts_m, pts_f=pts_f)
    pairs = [p for p in pairs if allowed[p[0], p[1]]]
    if len(pairs) < options.min_inliers:
        return None
    src = pts_m[[p[0] for p in pairs]]
    dst = pts_f[[p[1] for p in pairs]]
    matrix, inliers = _fit(src, dst, options.model, options.ransac_px)
    if matrix is None or int(inliers.sum()) < options.min_inliers:
        return None
    full_fine = _rescale(matrix, moving_factor, fixed_factor)
    return Estimate(
        full_fine, True, "", int(inliers.sum()), len(pairs),
        _residual(matrix, src[inliers], dst[inliers]) / fixed_factor, "fine",
    )
