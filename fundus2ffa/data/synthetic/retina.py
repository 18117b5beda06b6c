"""Procedural synthetic retina: paired colour fundus (CF) and fluorescein angiography (FFA) over time.

The project's embedded default dataset and test fixture. One eye is drawn from a seed:

* a circular field of view (black outside), an optic disc (bright, yellowish in CF, staining late in
  FFA), a macula (darker in both) and a vessel tree of arteries and veins that leave the disc, the
  temporal arcades curving around the macula, widths decreasing along every branch;
* in "abnormal" eyes, lesions with their angiographic behaviour: microaneurysms (red dots in CF,
  hyperfluorescent dots in FFA), haemorrhages (dark red blots in CF that block fluorescence: dark in
  every frame), hard exudates (yellow in CF, slightly hypofluorescent) and leakage sites (a faint
  yellowish-grey oedema haze with nearby exudates and microaneurysms in CF; in FFA a blob that grows
  and brightens over time, the sign the late frames of Li et al. (reference_spec section 2.1) and the
  Fundus2Video knowledge mask (section 4.2) are about);
* FFA frames at any times after injection: arteries fill first (veins dark or with laminar flow at
  their edges), then veins; late frames show faded vessels and choroidal flush, leakage grown and
  brightened, and a brighter disc (staining).

The mapping CF -> FFA is meant to be learnable: every structure seen in the FFA has a local colour
correlate in the CF (vessel darkness and hue tell arteries from veins; the leakage haze has the shape
of the late leakage). Mild seeded illumination, texture and pixel noise keep it from being trivial.

Geometry is drawn in normalised coordinates (origin at the image centre, unit = half the shorter image
side, field of view radius :data:`FOV_RADIUS`) from size-independent random streams, so one seed
depicts the same eye at any size; only pixel noise depends on the size. The same (seed, size, options)
give byte-identical arrays. The eye is drawn on the centred square of the shorter side and padded with
black to non-square sizes (such as the 720x576 of Isfahan MISP).

Which mask is "where the late frame is much brighter than the early frame": ``masks["leakage"]``
(leakage adds at least :data:`LEAKAGE_LEVEL` = 60 grey levels to the last frame there, while early
frames have little leakage and the background fades by only ~15 levels). With the default times the
Fundus2Video knowledge mask ``|late - first| > 45`` (section 4.2) covers about 90 % of it; the
knowledge mask also holds the filled vessels of the first frame, which fade by the late one.
``masks["macula"]`` is the darker foveal region (radius 0.12), ``masks["optic_disc"]`` the disc rim.
"""

from dataclasses import dataclass, field
from math import atan2, cos, exp, hypot, pi, sin
from typing import Sequence

import cv2
import numpy as np

PHASES = ("arterial", "venous", "late")
ARTERIAL_END_S = 25.0
"""Frames earlier than this (seconds after injection) are arterial: veins have not filled yet."""
VENOUS_END_S = 120.0
"""Frames from :data:`ARTERIAL_END_S` up to this are venous; later ones are late (recirculation, leakage)."""
DEFAULT_TIMES = (15.0, 45.0, 300.0)
"""One frame per phase: arterial, venous and late (5 min, as the late frames of Li et al., section 2.1)."""

FOV_RADIUS = 0.95
LEAKAGE_LEVEL = 60.0
"""Grey levels a leakage site adds to an FFA frame where its leakage mask is 1."""
MASK_NAMES = (
    "fov", "vessel", "artery", "vein", "optic_disc", "macula",
    "microaneurysm", "haemorrhage", "exudate", "leakage", "lesion",
)

# Vessel tree (normalised units).
_STEP = 0.02
_MIN_WIDTH = 0.0035
_MAX_DEPTH = 4
_FOVEAL_AVASCULAR_RADIUS = 0.07
_MACULA_RADIUS = 0.12
_SHIFT = 4  # OpenCV drawing with 4 fractional bits: sub-pixel positions and radii
_SCALE = float(1 << _SHIFT)

# Colours (RGB, before illumination) of the CF.
_ARTERY_RGB = np.array([178.0, 52.0, 36.0], np.float32)
_VEIN_RGB = np.array([118.0, 24.0, 26.0], np.float32)
_DISC_RGB = np.array([246.0, 214.0, 148.0], np.float32)
_CUP_RGB = np.array([252.0, 236.0, 196.0], np.float32)
_MICROANEURYSM_RGB = np.array([140.0, 20.0, 18.0], np.float32)
_HAEMORRHAGE_RGB = np.array([125.0, 22.0, 16.0], np.float32)
_EXUDATE_RGB = np.array([238.0, 214.0, 96.0], np.float32)
_OEDEMA_RGB = np.array([214.0, 184.0, 136.0], np.float32)


def phase_of(time_s: float) -> str:
    """Phase label of a frame taken ``time_s`` seconds after injection.

    arterial: t < 25 s (arteries filled, veins not yet); venous: 25 s <= t < 120 s (arteries and veins
    filled); late: t >= 120 s (vessels and choroidal flush fading, leakage and disc staining growing).
    """
    if time_s < ARTERIAL_END_S:
        return "arterial"
    if time_s < VENOUS_END_S:
        return "venous"
    return "late"


def eye_seed(seed: int, index: int) -> int:
    """Seed of the ``index``-th eye of a dataset drawn with ``seed``: distinct for every (seed, index)."""
    return seed * 100003 + index


@dataclass
class SyntheticEye:
    """One synthetic eye: its CF, FFA frames at ``times`` and ground-truth masks.

    masks: name -> H x W uint8 {0,1} for :data:`MASK_NAMES`. ``leakage`` is the leakage at the last frame
    (where that frame is at least :data:`LEAKAGE_LEVEL` grey levels brighter because of leakage), and
    ``lesion`` the union of microaneurysm, haemorrhage, exudate and that leakage. Vessels narrower than
    half a pixel are drawn but not in the vessel masks.
    leakage_frames: T x H x W uint8 {0,1}, the leakage mask of every frame (it grows over time);
    ``leakage_frames[-1]`` equals ``masks["leakage"]``.
    laterality: "OD" (right eye, disc on the right of the image) or "OS".
    """

    cf: np.ndarray
    frames: np.ndarray
    times: np.ndarray
    phases: list[str]
    masks: dict[str, np.ndarray]
    category: str
    seed: int
    leakage_frames: np.ndarray
    laterality: str = "OD"

    @property
    def late(self) -> np.ndarray:
        """The last frame (H x W uint8), the default target of still-image models."""
        return self.frames[-1]


# --------------------------------------------------------------------------------------------------
# Layout: the eye in normalised coordinates, independent of the image size.


@dataclass
class _Vessel:
    kind: str  # "artery" | "vein"
    points: np.ndarray  # N x 2 (x, y), normalised
    widths: np.ndarray  # N, normalised


@dataclass
class _LeakageSite:
    center: tuple[float, float]
    early_sigma: float  # spread at injection
    late_sigma: float  # spread approached late
    peak: float  # grey levels added at the centre when fully developed


@dataclass
class _Layout:
    laterality: str
    macula: tuple[float, float]
    disc: tuple[float, float]
    disc_radii: tuple[float, float]
    vessels: list[_Vessel]
    fundus_rgb: np.ndarray
    flush_level: float
    pigment_grid: np.ndarray  # low-resolution fields, upsampled to the image
    illumination_grid: np.ndarray
    ffa_texture_grid: np.ndarray
    leakage_shape_grid: np.ndarray
    microaneurysms: list[tuple[float, float, float]] = field(default_factory=list)  # x, y, radius
    haemorrhages: list[list[tuple[float, float, float, float, float]]] = field(default_factory=list)  # ellipses
    exudates: list[tuple[float, float, float]] = field(default_factory=list)
    leakage_sites: list[_LeakageSite] = field(default_factory=list)


def _wrap(angle: float) -> float:
    return (angle + pi) % (2.0 * pi) - pi


def _grow_tree(rng: np.random.Generator, layout: _Layout, trunks: list[tuple]) -> list[_Vessel]:
    """Grow vessels from the disc by steered random walks with branching.

    Each trunk is (kind, heading, width, arcade) with arcade +1/-1 for a temporal arcade that circles
    the macula (sign: direction of travel around it) and 0 for a radial (nasal) trunk. Branches keep
    their initial heading with smooth random curvature and a weak pull away from the disc, so inner
    branches of the arcades run towards the fovea and stop at the foveal avascular zone.
    """
    mx, my = layout.macula
    dx, dy = layout.disc
    vessels = []
    stack = [(kind, dx, dy, heading, width, arcade, 0) for kind, heading, width, arcade in trunks]
    while stack:
        kind, x, y, heading, width, arcade, depth = stack.pop()
        max_steps = 90 if depth == 0 else int(min(70, 40.0 * width / _STEP)) + 4
        noise = rng.standard_normal(max_steps)
        next_branch = rng.uniform(0.06, 0.14) if depth == 0 else rng.uniform(0.05, 0.12)
        side = 1.0 if rng.random() < 0.5 else -1.0
        curvature, travelled = 0.0, 0.0
        points, widths = [(x, y)], [width]
        start_radius = hypot(x - mx, y - my)
        for step in range(max_steps):
            curvature = 0.8 * curvature + 0.05 * noise[step]
            if arcade:
                phi = atan2(y - my, x - mx)
                radius = hypot(x - mx, y - my)
                target = 0.42 + 0.2 * min(1.0, travelled / 1.2)
                tangent = atan2(arcade * cos(phi), -arcade * sin(phi))
                desired = tangent + arcade * 1.2 * (radius - target) / target
                heading += 0.22 * _wrap(desired - heading)
            else:
                outward = atan2(y - dy, x - dx)
                pull = 0.12 if depth == 0 else 0.03
                if hypot(x - dx, y - dy) > 0.05:
                    heading += pull * _wrap(outward - heading)
            heading += curvature
            x += _STEP * cos(heading)
            y += _STEP * sin(heading)
            travelled += _STEP
            width *= 0.994
            points.append((x, y))
            widths.append(width)
            if hypot(x, y) > FOV_RADIUS + 0.02 or width < _MIN_WIDTH:
                break
            if hypot(x - mx, y - my) < _FOVEAL_AVASCULAR_RADIUS and start_radius > _FOVEAL_AVASCULAR_RADIUS:
                break
            if travelled >= next_branch and depth < _MAX_DEPTH and width > 2.2 * _MIN_WIDTH:
                child_width = width * rng.uniform(0.5, 0.75)
                child_heading = heading + side * rng.uniform(0.6, 1.2)
                stack.append((kind, x, y, child_heading, child_width, 0, depth + 1))
                width *= 0.93
                side = -side
                next_branch = travelled + rng.uniform(0.08, 0.2) * (1.0 if depth == 0 else 1.4)
        vessels.append(_Vessel(kind, np.asarray(points, np.float64), np.asarray(widths, np.float64)))
    return vessels


def _layout(seed: int, abnormal: bool | None, laterality: str | None) -> tuple[_Layout, str]:
    """Draw the whole eye (geometry, colours, lesions) in normalised coordinates."""
    category_rng = np.random.default_rng([seed, 0])
    if abnormal is None:
        abnormal = bool(category_rng.random() < 0.5)
    rng = np.random.default_rng([seed, 1])
    right_eye = rng.random() < 0.5  # drawn even when laterality is forced, to keep the stream aligned
    laterality = laterality or ("OD" if right_eye else "OS")
    if laterality not in ("OD", "OS"):
        raise ValueError(f"laterality must be 'OD' or 'OS', got {laterality!r}")
    mirror = 1.0 if laterality == "OD" else -1.0
    rotation = rng.uniform(-0.14, 0.14)
    shift = rng.uniform(-0.05, 0.05, size=2)

    def place(x: float, y: float) -> tuple[float, float]:
        x *= mirror
        return (
            float(x * cos(rotation) - y * sin(rotation) + shift[0]),
            float(x * sin(rotation) + y * cos(rotation) + shift[1]),
        )

    macula = place(-0.2 + rng.uniform(-0.04, 0.04), 0.04 + rng.uniform(-0.03, 0.03))
    disc = place(0.45 + rng.uniform(-0.04, 0.04), -0.03 + rng.uniform(-0.03, 0.03))
    disc_radius = rng.uniform(0.11, 0.14)
    red = rng.uniform(198.0, 214.0)
    layout = _Layout(
        laterality=laterality,
        macula=macula,
        disc=disc,
        disc_radii=(disc_radius, disc_radius * rng.uniform(1.05, 1.15)),
        vessels=[],
        fundus_rgb=np.array([red, red * rng.uniform(0.42, 0.44), red * rng.uniform(0.165, 0.185)], np.float32),
        flush_level=95.0 + 0.6 * (red - 206.0),  # a lighter (less pigmented) fundus shows more choroidal flush
        pigment_grid=rng.standard_normal((40, 40)).astype(np.float32),
        illumination_grid=rng.standard_normal((5, 5)).astype(np.float32),
        ffa_texture_grid=rng.standard_normal((40, 40)).astype(np.float32),
        leakage_shape_grid=rng.standard_normal((24, 24)).astype(np.float32),
    )

    def heading(canonical: float) -> float:
        """A canonical (right-eye) direction after mirroring and rotation."""
        return (pi - canonical if mirror < 0 else canonical) + rotation

    # Superior/inferior x temporal/nasal, arteries and veins side by side. The arcade sign makes the
    # walk circle the macula upwards (superior) or downwards (inferior) whichever side the disc is on.
    trunks = []
    for kind, width, offset in (("vein", 0.022, 0.2), ("artery", 0.017, -0.1)):
        width *= rng.uniform(0.9, 1.1)
        up = -mirror  # travel direction around the macula that starts upwards
        trunks += [
            (kind, heading(-1.75 + offset + rng.uniform(-0.1, 0.1)), width, up),
            (kind, heading(1.75 - offset + rng.uniform(-0.1, 0.1)), width, -up),
            (kind, heading(-0.9 - offset + rng.uniform(-0.2, 0.2)), width * 0.75, 0),
            (kind, heading(0.9 + offset + rng.uniform(-0.2, 0.2)), width * 0.75, 0),
        ]
    layout.vessels = _grow_tree(rng, layout, trunks)
    if abnormal:
        _add_lesions(np.random.default_rng([seed, 2]), layout)
    return layout, "abnormal" if abnormal else "normal"


def _posterior_pole_point(
    rng: np.random.Generator, layout: _Layout, near: float, far: float
) -> tuple[float, float]:
    """A point at distance [near, far] from the fovea, inside the field of view and off the disc."""
    mx, my = layout.macula
    dx, dy = layout.disc
    for _ in range(100):
        angle, radius = rng.uniform(0.0, 2.0 * pi), rng.uniform(near, far)
        x, y = mx + radius * cos(angle), my + radius * sin(angle)
        if hypot(x, y) < FOV_RADIUS - 0.08 and hypot(x - dx, y - dy) > layout.disc_radii[1] + 0.05:
            return x, y
    return mx + near, my


def _add_lesions(rng: np.random.Generator, layout: _Layout) -> None:
    """Leakage sites with a circinate ring of exudates and nearby microaneurysms; scattered
    microaneurysms, exudates and haemorrhages (kept off the leakage sites so blocking and leakage do
    not overlap)."""
    for _ in range(rng.integers(1, 4)):
        cx, cy = _posterior_pole_point(rng, layout, 0.1, 0.5)
        late_sigma = rng.uniform(0.035, 0.075)
        site = _LeakageSite((cx, cy), late_sigma * rng.uniform(0.25, 0.4), late_sigma, rng.uniform(150.0, 185.0))
        layout.leakage_sites.append(site)
        for _ in range(rng.integers(3, 9)):
            angle, radius = rng.uniform(0.0, 2.0 * pi), late_sigma * rng.uniform(2.0, 2.8)
            spot = (cx + radius * cos(angle), cy + radius * sin(angle), rng.uniform(0.006, 0.014))
            layout.exudates.append(spot)
        for _ in range(rng.integers(1, 4)):
            angle, radius = rng.uniform(0.0, 2.0 * pi), late_sigma * rng.uniform(0.8, 2.0)
            dot = (cx + radius * cos(angle), cy + radius * sin(angle), rng.uniform(0.008, 0.013))
            layout.microaneurysms.append(dot)
    for _ in range(rng.integers(3, 12)):
        layout.microaneurysms.append((*_posterior_pole_point(rng, layout, 0.08, 0.6), rng.uniform(0.008, 0.013)))
    for _ in range(rng.integers(0, 6)):
        layout.exudates.append((*_posterior_pole_point(rng, layout, 0.1, 0.55), rng.uniform(0.006, 0.012)))
    for _ in range(rng.integers(2, 6)):
        for _ in range(50):
            cx, cy = _posterior_pole_point(rng, layout, 0.12, 0.7)
            size = rng.uniform(0.018, 0.045)
            if all(
                hypot(cx - site.center[0], cy - site.center[1]) > 3.0 * site.late_sigma + 2.0 * size
                for site in layout.leakage_sites
            ):
                break
        else:
            continue
        blot = []
        for _ in range(rng.integers(1, 4)):
            ox, oy = rng.uniform(-0.6, 0.6, size=2) * size
            axes = size * rng.uniform(0.6, 1.0), size * rng.uniform(0.4, 0.8)
            blot.append((cx + ox, cy + oy, *axes, rng.uniform(0.0, 180.0)))
        layout.haemorrhages.append(blot)


# --------------------------------------------------------------------------------------------------
# Rendering: the layout on a square pixel grid.


class _Grid:
    """Pixel <-> normalised coordinates of the S x S square the eye is drawn on."""

    def __init__(self, side: int):
        self.side = side
        self.unit = side / 2.0
        self.axis = ((np.arange(side, dtype=np.float32) + 0.5) - self.unit) / self.unit  # normalised centres

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the canvases drawn on this grid."""
        return self.side, self.side

    def to_fixed(self, points: np.ndarray) -> np.ndarray:
        """Normalised points -> OpenCV fixed-point pixel coordinates (int32, :data:`_SHIFT` bits)."""
        pixels = np.asarray(points, np.float64) * self.unit + self.unit - 0.5
        return np.round(pixels * _SCALE).astype(np.int32)

    def length(self, value: float) -> int:
        """A normalised length in fixed-point pixels, at least half a pixel."""
        return max(int(_SCALE / 2), int(round(value * self.unit * _SCALE)))

    def upsample(self, grid: np.ndarray) -> np.ndarray:
        """A low-resolution field covering the square, resampled to the pixel grid (size independent)."""
        return cv2.resize(grid, (self.side, self.side), interpolation=cv2.INTER_CUBIC)

    def squared_distance(self, center: tuple[float, float], radii: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
        dx = (self.axis - center[0]) / radii[0]
        dy = (self.axis - center[1]) / radii[1]
        return dy[:, None] ** 2 + dx[None, :] ** 2


def _draw_vessels(grid: _Grid, vessels: list[_Vessel], kind: str, core: bool = False) -> np.ndarray:
    """Vessel coverage (uint8, 255 = fully covered) drawn as anti-aliased polylines.

    Segments are grouped by pixel thickness so that each thickness is one OpenCV call; vessels thinner
    than a pixel are drawn one pixel wide with proportionally lower coverage. ``core``: only the axial
    core (45 % of the width) of vessels at least 2.5 px wide, to leave their edges for laminar flow;
    thinner vessels are drawn whole (no laminar edges).
    """
    canvas = np.zeros(grid.shape, np.uint8)
    runs: dict[tuple[int, int], list[np.ndarray]] = {}
    for vessel in vessels:
        if vessel.kind != kind:
            continue
        pixel_widths = vessel.widths * grid.unit
        if core:
            pixel_widths = np.where(pixel_widths >= 2.5, 0.45 * pixel_widths, pixel_widths)
        thickness = np.maximum(1, np.round(pixel_widths)).astype(int)
        level = np.where(pixel_widths < 1.0, np.minimum(255, np.round(255 * pixel_widths / 32) * 32), 255).astype(int)
        keys = list(zip(thickness[:-1].tolist(), level[:-1].tolist()))
        fixed = grid.to_fixed(vessel.points)
        start = 0
        for i in range(1, len(keys) + 1):
            if i == len(keys) or keys[i] != keys[start]:
                if keys[start][1] > 0:
                    runs.setdefault(keys[start], []).append(fixed[start : i + 1])
                start = i
    for (thickness, level), polylines in runs.items():
        cv2.polylines(canvas, polylines, False, int(level), thickness, cv2.LINE_AA, _SHIFT)
    return canvas


def _draw_blobs(grid: _Grid, circles: list[tuple[float, float, float]]) -> np.ndarray:
    canvas = np.zeros(grid.shape, np.uint8)
    for x, y, radius in circles:
        center = tuple(int(v) for v in grid.to_fixed([x, y]))
        cv2.circle(canvas, center, grid.length(radius), 255, -1, cv2.LINE_AA, _SHIFT)
    return canvas


def _draw_haemorrhages(grid: _Grid, blots: list[list[tuple]]) -> np.ndarray:
    canvas = np.zeros(grid.shape, np.uint8)
    for blot in blots:
        for x, y, major, minor, angle in blot:
            center = tuple(int(v) for v in grid.to_fixed([x, y]))
            axes = (grid.length(major), grid.length(minor))
            cv2.ellipse(canvas, center, axes, float(angle), 0.0, 360.0, 255, -1, cv2.LINE_AA, _SHIFT)
    return canvas


def _coverage(canvas: np.ndarray, sigma_px: float) -> np.ndarray:
    """uint8 coverage -> float32 [0, 1], softened by a Gaussian of ``sigma_px``."""
    return cv2.GaussianBlur(canvas.astype(np.float32) * (1.0 / 255.0), (0, 0), sigma_px)


def _smoothstep(values: np.ndarray) -> np.ndarray:
    values = np.clip(values, 0.0, 1.0)
    return values * values * (3.0 - 2.0 * values)


def _sigmoid(time_s: float, centre: float, width: float) -> float:
    return 1.0 / (1.0 + exp(-(time_s - centre) / width))


def _leakage_growth(time_s: float) -> float:
    """Fraction of its late spread and brightness a leakage site has reached at ``time_s``."""
    return 1.0 - exp(-max(time_s, 0.0) / 120.0)


def _leakage_field(grid: _Grid, layout: _Layout, shape: np.ndarray, time_s: float | None) -> np.ndarray:
    """Grey levels added by leakage at ``time_s``; ``None``: the fully developed shape with peak 1 (the
    CF oedema haze, which has the shape of the late leakage)."""
    total = np.zeros((grid.side, grid.side), np.float32)
    for site in layout.leakage_sites:
        if time_s is None:
            sigma, peak = site.late_sigma, 1.0
        else:
            growth = _leakage_growth(time_s)
            sigma = site.early_sigma + (site.late_sigma - site.early_sigma) * growth
            peak = site.peak * growth
        centre_px = (np.asarray(site.center) * grid.unit + grid.unit - 0.5).astype(np.float64)
        reach = 5.0 * site.late_sigma * grid.unit  # the Gaussian is below 0.5 grey levels beyond
        x0, y0 = (max(0, int(c - reach)) for c in centre_px)
        x1, y1 = (min(grid.side, int(c + reach) + 2) for c in centre_px)
        if x0 >= x1 or y0 >= y1:
            continue
        dx = (grid.axis[x0:x1] - site.center[0]) / sigma
        dy = (grid.axis[y0:y1] - site.center[1]) / sigma
        squared = (dy[:, None] ** 2 + dx[None, :] ** 2) * shape[y0:y1, x0:x1]
        total[y0:y1, x0:x1] += peak * np.exp(-0.5 * squared)
    return total


def synthesize_eye(
    seed: int,
    size: int = 256,
    times: Sequence[float] | None = None,
    abnormal: bool | None = None,
    width: int | None = None,
    laterality: str | None = None,
) -> SyntheticEye:
    """Draw one eye: CF, FFA frames at ``times`` (seconds after injection) and masks.

    Args:
        seed: non-negative; the eye (geometry, colours, lesions, noise) is a pure function of it.
        size: image height; also the width unless ``width`` is given.
        width: image width for non-square images (e.g. size 576, width 720 as Isfahan MISP).
        times: frame times in seconds after injection (sorted: frames come in time order); default
            :data:`DEFAULT_TIMES`, one arterial, one venous and one late frame.
        abnormal: with lesions or not; None lets the seed decide (about half the seeds).
        laterality: "OD" or "OS" to force which eye; None lets the seed decide.
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    height, width = int(size), int(width if width is not None else size)
    if min(height, width) < 16:
        raise ValueError(f"image size {height}x{width} is too small (at least 16 pixels a side)")
    times_s = np.sort(np.asarray(DEFAULT_TIMES if times is None else times, np.float64).reshape(-1))
    if times_s.size == 0 or not np.all(np.isfinite(times_s)) or times_s.min() < 0:
        raise ValueError(f"times must be one or more non-negative seconds after injection, got {times_s.tolist()}")
    layout, category = _layout(seed, abnormal, laterality)
    grid = _Grid(min(height, width))

    # Anatomy and lesion coverages shared by the CF and every FFA frame.
    soft = max(0.5, 0.004 * grid.unit)
    radius_sq = grid.squared_distance((0.0, 0.0))
    fov = _smoothstep((FOV_RADIUS - np.sqrt(radius_sq)) * grid.unit + 0.5)  # anti-aliased edge, 1 px
    macula_sq = grid.squared_distance(layout.macula)
    macula = np.exp(-macula_sq / (2.0 * 0.13**2))
    fovea = np.exp(-macula_sq / (2.0 * 0.035**2))
    disc_distance = np.sqrt(grid.squared_distance(layout.disc, layout.disc_radii))
    disc = _smoothstep((1.0 - disc_distance) / 0.12 + 0.5)
    cup = _smoothstep((0.45 - disc_distance) / 0.2 + 0.5)
    pigment = grid.upsample(layout.pigment_grid)
    illumination = 1.0 + 0.06 * grid.upsample(layout.illumination_grid)
    ffa_texture = grid.upsample(layout.ffa_texture_grid)
    leakage_shape = np.clip(1.0 + 0.35 * grid.upsample(layout.leakage_shape_grid), 0.5, 1.7)

    artery_canvas = _draw_vessels(grid, layout.vessels, "artery")
    vein_canvas = _draw_vessels(grid, layout.vessels, "vein")
    artery = _coverage(artery_canvas, soft)
    vein = _coverage(vein_canvas, soft)
    vein_edge = np.clip(vein - _coverage(_draw_vessels(grid, layout.vessels, "vein", core=True), soft), 0.0, 1.0)
    microaneurysm_canvas = _draw_blobs(grid, layout.microaneurysms)
    exudate_canvas = _draw_blobs(grid, layout.exudates)
    haemorrhage_canvas = _draw_haemorrhages(grid, layout.haemorrhages)
    microaneurysm = _coverage(microaneurysm_canvas, soft)
    exudate = _coverage(exudate_canvas, soft)
    haemorrhage = _coverage(haemorrhage_canvas, 1.5 * soft)
    oedema = _leakage_field(grid, layout, leakage_shape, None)

    cf = _render_cf(layout, seed, grid, fov, radius_sq, macula, fovea, disc, cup, pigment, illumination,
                    artery, vein, microaneurysm, haemorrhage, exudate, oedema)
    frames, leakage_frames = [], []
    for time_s in times_s:
        leakage = _leakage_field(grid, layout, leakage_shape, float(time_s))
        frames.append(_render_ffa(layout, seed, grid, float(time_s), fov, radius_sq, macula, fovea, disc, cup,
                                  pigment, ffa_texture, artery, vein, vein_edge, microaneurysm, haemorrhage,
                                  exudate, leakage))
        leakage_frames.append(((leakage >= LEAKAGE_LEVEL) & (fov >= 0.5)).astype(np.uint8))

    inside = fov >= 0.5
    masks = {
        "fov": inside,
        "vessel": (artery_canvas >= 128) | (vein_canvas >= 128),
        "artery": artery_canvas >= 128,
        "vein": vein_canvas >= 128,
        "optic_disc": disc_distance <= 1.0,
        "macula": macula_sq <= _MACULA_RADIUS**2,
        "microaneurysm": microaneurysm_canvas >= 128,
        "haemorrhage": haemorrhage_canvas >= 128,
        "exudate": exudate_canvas >= 128,
        "leakage": leakage_frames[-1].astype(bool),
    }
    masks["lesion"] = masks["microaneurysm"] | masks["haemorrhage"] | masks["exudate"] | masks["leakage"]
    masks = {name: (mask & inside).astype(np.uint8) for name, mask in masks.items()}

    pad = _padding(height, width)
    return SyntheticEye(
        cf=_pad(cf, pad),
        frames=np.stack([_pad(frame, pad) for frame in frames]),
        times=times_s,
        phases=[phase_of(float(t)) for t in times_s],
        masks={name: _pad(masks[name], pad) for name in MASK_NAMES},
        category=category,
        seed=seed,
        leakage_frames=np.stack([_pad(frame, pad) for frame in leakage_frames]),
        laterality=layout.laterality,
    )


def _padding(height: int, width: int) -> tuple[int, int, int, int]:
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return top, height - side - top, left, width - side - left


def _pad(image: np.ndarray, pad: tuple[int, int, int, int]) -> np.ndarray:
    if not any(pad):
        return np.ascontiguousarray(image)
    return cv2.copyMakeBorder(image, *pad, cv2.BORDER_CONSTANT, value=0)


def _noise(shape: tuple[int, ...], std: float, *stream: int) -> np.ndarray:
    """Uniform pixel noise of standard deviation ``std`` (uniform: five times faster to draw than
    Gaussian), seeded by (eye, size, image) so that a frame does not depend on the others."""
    noise = np.random.default_rng(list(stream)).random(shape, dtype=np.float32)
    noise -= 0.5
    noise *= std * 12.0**0.5
    return noise


def _blend(image: np.ndarray, target, alpha: np.ndarray) -> None:
    """``image += (target - image) * alpha`` in place, only over the bounding box where ``alpha > 0``
    (most layers are small: disc, lesions). ``target``: a scalar, an RGB colour or an H x W array."""
    x, y, w, h = cv2.boundingRect((alpha > 0).view(np.uint8))
    if w == 0:
        return
    region = image[y : y + h, x : x + w]
    weight = alpha[y : y + h, x : x + w]
    if isinstance(target, np.ndarray) and target.shape[:2] == image.shape[:2]:
        target = target[y : y + h, x : x + w]
    region += (target - region) * (weight[..., None] if image.ndim == 3 else weight)


def _render_cf(layout, seed, grid, fov, radius_sq, macula, fovea, disc, cup, pigment, illumination,
               artery, vein, microaneurysm, haemorrhage, exudate, oedema) -> np.ndarray:
    """Colour fundus: orange-red fundus, darker macula, yellowish disc, dark-red vessels and lesions."""
    gain = (1.0 + 0.05 * pigment) * (1.0 - 0.2 * fovea)
    cf = layout.fundus_rgb * gain[..., None]
    cf *= 1.0 - macula[..., None] * np.array([0.25, 0.38, 0.3], np.float32)
    _blend(cf, _DISC_RGB, disc)
    _blend(cf, _CUP_RGB, disc * cup)
    _blend(cf, _OEDEMA_RGB, 0.35 * oedema)
    _blend(cf, _VEIN_RGB, vein)
    _blend(cf, _ARTERY_RGB, artery)
    _blend(cf, _EXUDATE_RGB, exudate)
    _blend(cf, _HAEMORRHAGE_RGB, haemorrhage)
    _blend(cf, _MICROANEURYSM_RGB, microaneurysm)
    cf *= (illumination * (1.0 - 0.3 * radius_sq * radius_sq))[..., None]
    cf += _noise(cf.shape, 2.0, seed, grid.side, 1)
    cf *= fov[..., None]
    return _to_uint8(cf)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    image += 0.5
    return np.clip(image, 0.0, 255.0, out=image).astype(np.uint8)


@dataclass(frozen=True)
class _FFATimeCourse:
    """The grey levels and weights of an angiogram frame at one time (:func:`_ffa_time_course`)."""

    flush: float  # choroidal flush: the background level
    washout: float  # 1 while vessels are filled, falling to 0 as the dye recirculates
    arterial_fill: float  # 0 .. 1
    artery: float  # grey level of the arteries (unfilled: darker than the flush; filled: bright)
    vein: float  # grey level of the veins
    laminar: float  # weight of the laminar flow along the veins' walls (drawn at the arteries' level)
    staining: float  # 0 .. 1, how far late staining (disc, scars) has developed


def _ffa_time_course(flush_level: float, time_s: float) -> _FFATimeCourse:
    """The angiographic time course at ``time_s`` seconds after injection, for an eye of ``flush_level``.

    Choroidal flush from ~10 s, fading by about a quarter late; arteries fill at ~12 s, veins at ~24 s
    (laminar flow along their edges before); filled vessels fade towards the background with a 150 s
    time constant after 40 s; unfilled blood is darker than the flush behind it; staining grows over
    minutes.
    """
    flush = flush_level * _sigmoid(time_s, 10.0, 2.0) * (0.7 + 0.3 * exp(-max(time_s - 30.0, 0.0) / 200.0))
    washout = exp(-max(time_s - 40.0, 0.0) / 150.0)
    filled_level = flush + (215.0 - flush) * washout

    def vessel_level(fill: float) -> float:
        return 0.55 * flush * (1.0 - fill) + filled_level * fill

    arterial_fill = _sigmoid(time_s, 12.0, 1.5)
    venous_fill = _sigmoid(time_s, 24.0, 3.0)
    return _FFATimeCourse(
        flush=flush,
        washout=washout,
        arterial_fill=arterial_fill,
        artery=vessel_level(arterial_fill),
        vein=vessel_level(venous_fill),
        laminar=_sigmoid(time_s, 16.0, 1.5) * (1.0 - venous_fill),
        staining=1.0 - exp(-max(time_s, 0.0) / 200.0),
    )


def _render_ffa(layout, seed, grid, time_s, fov, radius_sq, macula, fovea, disc, cup, pigment, ffa_texture,
                artery, vein, vein_edge, microaneurysm, haemorrhage, exudate, leakage) -> np.ndarray:
    """One angiogram frame: choroidal flush, disc, filling vessels, lesions, leakage, then blocking.

    The flush and vessel levels follow :func:`_ffa_time_course`; disc staining and leakage grow over
    minutes; haemorrhages block, exudates slightly.
    """
    course = _ffa_time_course(layout.flush_level, time_s)
    flush, staining = course.flush, course.staining
    disc_level = course.arterial_fill * (125.0 + 70.0 * staining)

    ffa = flush * (1.0 - 0.5 * macula - 0.25 * fovea) * (1.0 - 0.06 * pigment + 0.03 * ffa_texture)
    _blend(ffa, disc_level * (1.0 + 0.15 * staining * cup), disc)
    _blend(ffa, course.vein, vein)
    _blend(ffa, course.artery, course.laminar * vein_edge)
    _blend(ffa, course.artery, artery)
    _blend(ffa, 205.0 * _sigmoid(time_s, 13.0, 2.0) * (0.75 + 0.25 * course.washout), microaneurysm)
    ffa = (ffa + leakage) * (1.0 - 0.85 * haemorrhage) * (1.0 - 0.12 * exudate)
    ffa *= 1.0 - 0.25 * radius_sq * radius_sq
    ffa += _noise(ffa.shape, 2.5, seed, grid.side, 2, int(round(time_s * 1000)))
    return _to_uint8(ffa * fov)
