"""Ultra-widefield (UWF) views of the synthetic retina: Optos-like geometry and SLO pseudo-colour.

The real UWF eyes of ../shared/data (issue 22) look nothing like the 45-degree synthetic fundus: a wide
elliptical field with the posterior pole small in its centre, the retinal vessel tree running on across
the whole field to its edge, upper and lower eyelids and eyelashes across the top and bottom of the
field, in several eyes the scars of pan-retinal laser photocoagulation in the periphery, and a
scanning-laser pseudo-colour image (a red and a green laser channel, no blue) instead of a colour
photograph. :func:`synthesize_uwf_eye` draws such a view of the same synthetic eye, for the CF (SLO) and
every FFA frame alike, with its parameters randomised per seed (domain randomisation: what a
synthetic-to-real pretraining needs so that a network does not learn one rendering):

* geometry: the synthetic eye (:func:`~fundus2ffa.data.synthetic.retina.synthesize_eye`, its disc,
  macula, vessel tree and lesions) drawn at ``pole_scale`` of the image height, shifted by
  ``pole_shift``, inside an elliptical field (``field_axes`` of the half width and half height); the
  periphery between the drawn eye and the field edge is fundus background (the eye's own rim colour,
  smoothly textured, darker towards the edge), blended in over a soft seam;
* peripheral vessels: a real UWF angiogram shows bright thin branching vessels everywhere, so a network
  pretrained on a vessel-free periphery learns to paint it flat. Every vessel of the eye's tree that
  leaves the drawn eye is continued outwards, and ``periphery_vessels`` more arise at its rim (branches
  the pole's edge hides); they fan out radially from the posterior pole (curvature noise
  ``periphery_tortuosity``; pulled away from the disc instead, those of the temporal side would all run
  parallel),
  branch every ``periphery_branching`` or so and thin by ``periphery_taper`` a unit of length until they
  reach the field edge or vanish. They are drawn with the 45-degree eye's rules, relative to the
  periphery background: in the CF its artery and vein colours (so in the SLO dark in green, faint in
  red), in the FFA its vessel levels of the frame's time (arteries fill before veins, laminar flow,
  washout; :func:`~fundus2ffa.data.synthetic.retina._ffa_time_course`) as a ratio to the flush;
* laser scars (``laser``, about 40 % of the randomised eyes): small round spots on a jittered hexagonal
  lattice (the burns of pan-retinal photocoagulation) in the mid and far periphery, sparing
  ``laser_spared`` around the fovea and the disc, the whole periphery or patches of it
  (``laser_fill``). SLO: dark pigmented centres (``laser_pigment``), a lighter rim (``laser_rim``);
  FFA: hypofluorescent centres (``laser_block``, the pigment blocks the choroid) with a hyperfluorescent
  rim (window defect, ``laser_window`` of the local fluorescence, staining a little more late). They
  lie under the retinal vessels, which stay drawn over them;
* occlusion: an upper and a lower eyelid (skin texture, moderately bright in the SLO, dark in the FA;
  lid margins ``upper_lid``, ``lower_lid`` of the height at the centre, curved) and ``lashes`` dark
  eyelashes, curved strokes from the lid margins into the field, dark in every modality (they block
  both lasers and the fluorescence): they cover the fundus, its vessels and scars;
* SLO pseudo-colour: green = the fundus green channel (retinal vessels dark), red = the red channel
  with its fine detail halved (the choroid, vessels faint), blue 0; per image a red and a green level,
  a gamma, a leak of red into green, a defocus blur and pixel noise (``UWFStyle``); each channel is
  scaled to a drawn mean level inside the drawn eye (Optos images are green-dominant, a colour
  photograph red-dominant).

Masks: the eye's masks placed in the view (zero in the periphery and where eyelids or lashes cover
them), with the peripheral vessels added to ``vessel``, ``artery`` and ``vein`` (the same rule as the
eye's: drawn at least half a pixel wide); ``fov`` the visible field (the ellipse minus eyelids and
lashes); ``eyelid`` and ``eyelash``; ``laser`` the visible scar centres (not under vessels, not in
``lesion``; burns under a pixel in radius are drawn faint and left out, as the thinnest vessels are).
The same (seed, size, options) give byte-identical arrays.
"""

from dataclasses import asdict, dataclass
from math import atan2, cos, hypot, pi, sin, sqrt
from typing import Sequence

import cv2
import numpy as np

from fundus2ffa.data.synthetic.retina import (
    _ARTERY_RGB,
    _MIN_WIDTH,
    _SCALE,
    _SHIFT,
    _VEIN_RGB,
    FOV_RADIUS,
    MASK_NAMES,
    SyntheticEye,
    _blend,
    _coverage,
    _draw_blobs,
    _draw_vessels,
    _ffa_time_course,
    _Grid,
    _layout,
    _Vessel,
    _wrap,
    synthesize_eye,
)

UWF_MASK_NAMES = (*MASK_NAMES, "eyelid", "eyelash", "laser")
ASPECT = 1.25  # width / height of the Optos UWF images of ../shared/data (853 x 682)
_STYLE_STREAM = 0x55_57_46  # "UWF": the style's random stream, independent of the eye's
_VESSEL_STREAM, _LASER_STREAM = 3, 4  # sub-streams of the peripheral vessels and the laser scars

# Peripheral vessels, in the drawn eye's normalised units (half its side = 1, origin at its centre).
_PERIPHERY_STEP = 0.03
_PERIPHERY_MAX_DEPTH = 3
_SEAM_START = 0.85  # continuations are drawn from this radius, across the seam where the drawn eye fades
_LASER_RIM = 1.4  # outer radius of a scar's rim, in spot radii
_LASER_MASK_PX = 1.0  # burns of a smaller radius (px) are drawn faint and left out of the laser mask


@dataclass(frozen=True)
class UWFStyle:
    """The randomised parameters of one UWF view (:func:`draw_style`); fractions are of the image size,
    lengths of the periphery and the scars in the drawn eye's units (half its side = 1)."""

    pole_scale: float = 0.66
    pole_shift: tuple[float, float] = (0.0, 0.0)
    field_axes: tuple[float, float] = (0.97, 0.95)
    upper_lid: float = 0.14
    lower_lid: float = 0.08
    lid_curve: float = 0.6
    lashes: int = 18
    red_level: float = 110.0
    green_level: float = 140.0
    gamma: float = 1.0
    red_into_green: float = 0.08
    blur_px: float = 0.0
    noise: float = 3.0
    lid_slo: tuple[float, float] = (120.0, 150.0)
    lid_ffa: float = 35.0
    periphery_vessels: int = 16  # vessels arising at the drawn eye's rim, besides the tree's continuations
    periphery_calibre: float = 0.01  # their largest width at the rim
    periphery_taper: float = 0.25  # fraction of its width a peripheral vessel loses per unit of length
    periphery_tortuosity: float = 0.05  # curvature noise per step (the 45-degree tree: 0.05)
    periphery_branching: float = 0.22  # mean length between branches
    laser: bool = False  # pan-retinal photocoagulation scars
    laser_radius: float = 0.035  # spot radius
    laser_spacing: float = 4.5  # lattice spacing in spot radii
    laser_fill: float = 1.0  # fraction of the periphery treated (below 1: in patches)
    laser_spared: float = 0.85  # untreated radius around the fovea (the posterior pole)
    laser_pigment: float = 0.45  # SLO darkening of the spot centres
    laser_rim: float = 0.15  # SLO lightening of the spot rims
    laser_block: float = 0.55  # FFA darkening of the spot centres
    laser_window: float = 0.5  # FFA brightening of the spot rims (window defect), of the local level


def draw_style(seed: int, randomise: bool = True) -> UWFStyle:
    """The view's parameters for ``seed`` (the defaults when not ``randomise``)."""
    if not randomise:
        return UWFStyle()
    rng = np.random.default_rng([int(seed), _STYLE_STREAM])
    u = rng.uniform
    return UWFStyle(  # keyword order = draw order: new parameters are drawn last, so the old keep their values
        pole_scale=float(u(0.55, 0.78)),
        pole_shift=(float(u(-0.05, 0.05)), float(u(-0.04, 0.04))),
        field_axes=(float(u(0.92, 0.99)), float(u(0.88, 0.98))),
        upper_lid=float(u(0.04, 0.35)),
        lower_lid=float(u(0.02, 0.25)),
        lid_curve=float(u(0.3, 0.9)),
        lashes=int(rng.integers(0, 41)),
        red_level=float(u(70.0, 160.0)),
        green_level=float(u(90.0, 190.0)),
        gamma=float(np.exp(u(np.log(0.7), np.log(1.4)))),
        red_into_green=float(u(0.0, 0.2)),
        blur_px=float(u(0.0, 1.2)),
        noise=float(u(0.0, 8.0)),
        lid_slo=(float(u(80.0, 170.0)), float(u(100.0, 200.0))),
        lid_ffa=float(u(10.0, 70.0)),
        periphery_vessels=int(rng.integers(6, 37)),
        periphery_calibre=float(u(0.008, 0.013)),
        periphery_taper=float(u(0.1, 0.4)),
        periphery_tortuosity=float(u(0.02, 0.07)),
        periphery_branching=float(u(0.12, 0.3)),
        laser=bool(rng.random() < 0.4),
        laser_radius=float(u(0.025, 0.045)),
        laser_spacing=float(u(3.2, 5.5)),
        laser_fill=float(rng.choice([1.0, u(0.3, 0.8)])),
        laser_spared=float(u(0.7, 1.1)),
        laser_pigment=float(u(0.25, 0.6)),
        laser_rim=float(u(0.0, 0.3)),
        laser_block=float(u(0.35, 0.75)),
        laser_window=float(u(0.25, 0.9)),
    )


@dataclass
class UWFEye(SyntheticEye):
    """A :class:`SyntheticEye` seen ultra-widefield: ``cf`` is the SLO pseudo-colour image; ``style``
    the parameters it was drawn with."""

    style: UWFStyle = UWFStyle()


class _ViewGrid(_Grid):
    """Pixel <-> normalised coordinates of the whole UWF image in the drawn eye's units (half its side =
    1, origin at its centre): the grid retina's drawing helpers draw the periphery on."""

    def __init__(self, shape: tuple[int, int], side: int, top: int, left: int):
        super().__init__(side)
        self._shape = shape
        self.origin = np.array([left + self.unit - 0.5, top + self.unit - 0.5])  # pixel of (0, 0)

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def to_fixed(self, points: np.ndarray) -> np.ndarray:
        pixels = np.asarray(points, np.float64) * self.unit + self.origin
        return np.round(pixels * _SCALE).astype(np.int32)


@dataclass(frozen=True)
class _Field:
    """The elliptical field of view in normalised coordinates."""

    center: tuple[float, float]
    axes: tuple[float, float]

    def level(self, x, y):
        """< 1 inside the field, 1 on its edge (scalars or arrays)."""
        return ((x - self.center[0]) / self.axes[0]) ** 2 + ((y - self.center[1]) / self.axes[1]) ** 2


def _smooth_texture(rng: np.random.Generator, shape: tuple[int, int], cells: int = 8) -> np.ndarray:
    """Zero-mean smooth texture in about [-1, 1] (a coarse random grid upsampled bicubically)."""
    coarse = rng.normal(0.0, 0.5, (cells, max(2, round(cells * shape[1] / shape[0])))).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _place(array: np.ndarray, shape: tuple[int, int], top: int, left: int) -> np.ndarray:
    """``array`` (h x w [x c]) pasted at (top, left) into zeros of ``shape`` (clipped at the borders)."""
    out = np.zeros((*shape, *array.shape[2:]), array.dtype)
    h, w = array.shape[:2]
    y0, x0, y1, x1 = max(0, top), max(0, left), min(shape[0], top + h), min(shape[1], left + w)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = array[y0 - top : y1 - top, x0 - left : x1 - left]
    return out


def _lids(style: UWFStyle, height: int, width: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(eyelid mask, lid margin polylines (upper, lower) in px) of the style."""
    x = np.arange(width, dtype=np.float32)
    across = (x - width / 2) / (width / 2)  # -1 .. 1
    upper = height * (style.upper_lid - style.lid_curve * style.upper_lid * across**2 * 0.8)
    lower = height * (1.0 - style.lower_lid + style.lid_curve * style.lower_lid * across**2 * 0.8)
    rows = np.arange(height, dtype=np.float32)[:, None]
    lid = (rows < upper[None, :]) | (rows > lower[None, :])
    margins = [np.stack([x, upper], 1), np.stack([x, lower], 1)]
    return lid, margins


def _lashes(rng: np.random.Generator, style: UWFStyle, margins: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """uint8 {0,1} mask of curved eyelashes growing from the lid margins into the field."""
    canvas = np.zeros((height, width), np.uint8)
    thickness = max(1, round(2 * height / 256))
    for index in range(style.lashes):
        upper = index % 4 != 3  # three in four from the upper lid
        margin = margins[0] if upper else margins[1]
        x0 = rng.uniform(0.15, 0.85) * width
        y0 = float(np.interp(x0, margin[:, 0], margin[:, 1]))
        length = rng.uniform(0.06, 0.16) * height
        direction = 1.0 if upper else -1.0
        sweep = rng.uniform(-0.5, 0.5) * length
        t = np.linspace(0.0, 1.0, 12)[:, None]
        start, end = np.array([x0, y0]), np.array([x0 + sweep, y0 + direction * length])
        bend = (start + end) / 2 + np.array([rng.uniform(-0.3, 0.3) * length, 0.0])
        curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end  # quadratic Bezier
        cv2.polylines(canvas, [np.round(curve).astype(np.int32)], False, 1, thickness, cv2.LINE_AA)
    return (canvas > 0).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# The periphery's layout: vessels and laser scars in normalised coordinates.


def _periphery_starts(rng: np.random.Generator, tree: list[_Vessel], style: UWFStyle) -> list[tuple]:
    """Where peripheral vessels begin: (kind, points, widths, heading) of every tree vessel that leaves the
    drawn eye (its part from :data:`_SEAM_START` on, to be continued) and of ``periphery_vessels`` new
    ones arising at the rim, heading outwards."""
    starts = []
    for vessel in tree:
        radii = np.hypot(vessel.points[:, 0], vessel.points[:, 1])
        if radii[-1] <= FOV_RADIUS or len(radii) < 2:
            continue  # ended inside the eye (too thin, or at the fovea)
        first = int(np.argmax(radii > _SEAM_START))
        (x0, y0), (x1, y1) = vessel.points[-2], vessel.points[-1]
        heading = atan2(y1 - y0, x1 - x0)
        starts.append((vessel.kind, vessel.points[first:].tolist(), vessel.widths[first:].tolist(), heading))
    for _ in range(style.periphery_vessels):
        angle = rng.uniform(-pi, pi)
        x, y = (FOV_RADIUS - 0.05) * cos(angle), (FOV_RADIUS - 0.05) * sin(angle)
        heading = angle + rng.uniform(-0.5, 0.5)
        kind = "artery" if rng.random() < 0.5 else "vein"
        starts.append((kind, [(x, y)], [style.periphery_calibre * rng.uniform(0.6, 1.0)], heading))
    return starts


def _grow_periphery(rng: np.random.Generator, tree: list[_Vessel], style: UWFStyle, field: _Field) -> list[_Vessel]:
    """The vessel tree continued across the periphery (module notes): steered random walks from
    :func:`_periphery_starts` with a weak pull radially outwards, branching and thinning, until the
    field edge, the minimum width, or a turn back into the drawn eye."""
    shrink = (1.0 - style.periphery_taper) ** _PERIPHERY_STEP
    max_steps = int(6.0 / _PERIPHERY_STEP)
    stack = [(*start, 0) for start in _periphery_starts(rng, tree, style)]
    vessels = []
    while stack:
        kind, points, widths, heading, depth = stack.pop()
        (x, y), width = points[-1], widths[-1]
        noise = rng.standard_normal(max_steps)
        next_branch = style.periphery_branching * rng.uniform(0.3, 1.2)
        side = 1.0 if rng.random() < 0.5 else -1.0
        curvature, travelled = 0.0, 0.0
        for step in range(max_steps):
            curvature = 0.8 * curvature + style.periphery_tortuosity * noise[step]
            heading += 0.1 * _wrap(atan2(y, x) - heading) + curvature
            x += _PERIPHERY_STEP * cos(heading)
            y += _PERIPHERY_STEP * sin(heading)
            travelled += _PERIPHERY_STEP
            width *= shrink
            points.append((x, y))
            widths.append(width)
            if field.level(x, y) > 1.02 or width < _MIN_WIDTH or hypot(x, y) < _SEAM_START - 0.05:
                break
            if travelled >= next_branch and depth < _PERIPHERY_MAX_DEPTH and width > 1.6 * _MIN_WIDTH:
                child_width = width * rng.uniform(0.6, 0.85)
                stack.append((kind, [(x, y)], [child_width], heading + side * rng.uniform(0.4, 1.0), depth + 1))
                width *= 0.95
                side = -side
                next_branch = travelled + style.periphery_branching * rng.uniform(0.5, 1.5)
        vessels.append(_Vessel(kind, np.asarray(points, np.float64), np.asarray(widths, np.float64)))
    return vessels


def _laser_spots(rng: np.random.Generator, style: UWFStyle, macula: tuple[float, float], disc: tuple[float, float],
                 field: _Field) -> np.ndarray:
    """N x 4 (x, y, radius, strength) of the laser scars: a jittered hexagonal lattice over the field,
    off the posterior pole and the disc, the whole periphery or patches of it (``laser_fill``)."""
    if not style.laser:
        return np.zeros((0, 4))
    spacing = style.laser_radius * style.laser_spacing
    (cx, cy), (ax, ay) = field.center, field.axes
    rows = np.arange(cy - ay, cy + ay, spacing * sqrt(3) / 2)
    columns = np.arange(cx - ax - spacing, cx + ax + spacing, spacing)
    ys = np.repeat(rows, len(columns))
    xs = np.tile(columns, len(rows)) + np.repeat(np.arange(len(rows)) % 2, len(columns)) * spacing / 2
    xs = xs + rng.normal(0.0, 0.12 * spacing, xs.shape)
    ys = ys + rng.normal(0.0, 0.12 * spacing, ys.shape)
    patches = _smooth_texture(rng, (48, round(48 * ax / ay)), cells=4)  # over the field's bounding box
    rows_at = np.clip(((ys - cy + ay) / (2 * ay) * patches.shape[0]).astype(int), 0, patches.shape[0] - 1)
    columns_at = np.clip(((xs - cx + ax) / (2 * ax) * patches.shape[1]).astype(int), 0, patches.shape[1] - 1)
    treated = patches[rows_at, columns_at] >= np.quantile(patches, 1.0 - style.laser_fill)
    keep = (
        (field.level(xs, ys) < 0.97)
        & (np.hypot(xs - macula[0], ys - macula[1]) > style.laser_spared)
        & (np.hypot(xs - disc[0], ys - disc[1]) > 0.35)
        & treated
        & (rng.random(xs.shape) > 0.08)  # a few skipped burns
    )
    radii = style.laser_radius * rng.uniform(0.8, 1.2, xs.shape)
    strength = rng.uniform(0.6, 1.0, xs.shape)  # each burn pigments differently
    return np.stack([xs, ys, radii, strength], 1)[keep]


# --------------------------------------------------------------------------------------------------
# Rendering the periphery: coverages on the view grid, then the SLO and the FFA layers.


@dataclass
class _PeripheryCoverage:
    """What is drawn over the widened eye, as soft coverages (H x W float32, 0 .. 1) and masks (bool)."""

    artery: np.ndarray
    vein: np.ndarray
    vein_edge: np.ndarray  # the veins' walls, for laminar flow (vessels at least 2.5 px wide)
    scar: np.ndarray  # laser scar centres, times each burn's strength, zero under the vessels
    scar_rim: np.ndarray
    artery_mask: np.ndarray
    vein_mask: np.ndarray
    scar_mask: np.ndarray  # scar centres at least :data:`_LASER_MASK_PX` in radius (under vessels included)


def _draw_scars(grid: _ViewGrid, spots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """uint8 canvases of the scars: (centre coverage, rim-disc coverage, per-burn strength, centre coverage
    of the burns at least :data:`_LASER_MASK_PX` in radius). A smaller burn is drawn (at least half a pixel)
    with its strength scaled by its area, so that the small views do not fill with dark dots; like a
    vessel narrower than half a pixel it is not in the mask."""
    centres = _draw_blobs(grid, [tuple(spot[:3]) for spot in spots])
    rims = _draw_blobs(grid, [(x, y, _LASER_RIM * radius) for x, y, radius, _ in spots])
    resolved = _draw_blobs(grid, [tuple(spot[:3]) for spot in spots if spot[2] * grid.unit >= _LASER_MASK_PX])
    strength = np.zeros(grid.shape, np.uint8)
    for x, y, radius, value in spots:
        area = min(1.0, (radius * grid.unit / _LASER_MASK_PX) ** 2)
        center = tuple(int(v) for v in grid.to_fixed([x, y]))
        cv2.circle(strength, center, grid.length(_LASER_RIM * radius), int(round(255 * value * area)), -1, cv2.LINE_8,
                   _SHIFT)
    return centres, rims, strength, resolved


def _periphery_coverage(grid: _ViewGrid, vessels: list[_Vessel], spots: np.ndarray,
                        eye_vessel: np.ndarray) -> _PeripheryCoverage:
    """Coverages of the peripheral vessels and the laser scars (scars only where no vessel lies over
    them: the eye's placed ``eye_vessel`` mask or a peripheral vessel)."""
    soft = max(0.5, 0.004 * grid.unit)  # as the 45-degree eye
    artery_canvas = _draw_vessels(grid, vessels, "artery")
    vein_canvas = _draw_vessels(grid, vessels, "vein")
    artery, vein = _coverage(artery_canvas, soft), _coverage(vein_canvas, soft)
    vein_edge = np.clip(vein - _coverage(_draw_vessels(grid, vessels, "vein", core=True), soft), 0.0, 1.0)
    centres, rims, strength, resolved = _draw_scars(grid, spots)
    spot = _coverage(centres, soft)
    under_vessels = np.clip(_coverage(eye_vessel * np.uint8(255), soft) + artery + vein, 0.0, 1.0)
    weight = (strength * np.float32(1.0 / 255.0)) * (1.0 - under_vessels)  # each burn's strength, off the vessels
    return _PeripheryCoverage(
        artery=artery,
        vein=vein,
        vein_edge=vein_edge,
        scar=spot * weight,
        scar_rim=np.clip(_coverage(rims, soft) - spot, 0.0, 1.0) * weight,
        artery_mask=artery_canvas >= 128,
        vein_mask=vein_canvas >= 128,
        scar_mask=resolved >= 128,
    )


def _periphery_on_fundus(fundus: np.ndarray, background: np.ndarray, cover: _PeripheryCoverage, style: UWFStyle,
                         fundus_rgb: np.ndarray) -> None:
    """Laser scars and peripheral vessels on the widened colour fundus (H x W x 3, in place), from which
    the SLO is made: scars darken (pigment) with a lighter rim; vessels take the eye's artery and vein
    colours relative to its fundus colour, over the local ``background``."""
    fundus *= (1.0 - style.laser_pigment * cover.scar)[..., None]
    fundus *= (1.0 + style.laser_rim * cover.scar_rim)[..., None]
    _blend(fundus, background * (_VEIN_RGB / fundus_rgb), cover.vein)
    _blend(fundus, background * (_ARTERY_RGB / fundus_rgb), cover.artery)


def _periphery_on_ffa(frame: np.ndarray, background: np.ndarray, cover: _PeripheryCoverage, style: UWFStyle,
                      flush_level: float, time_s: float) -> None:
    """Laser scars and peripheral vessels on one widened FFA frame (H x W, in place): scar centres
    block, their rims transmit (window defect) and stain a little late; vessels at the eye's vessel
    levels of ``time_s`` as a ratio to its flush, over the local ``background``."""
    course = _ffa_time_course(flush_level, time_s)
    frame *= 1.0 - style.laser_block * cover.scar
    frame *= 1.0 + style.laser_window * (1.0 + 0.5 * course.staining) * cover.scar_rim
    artery, vein = background * (course.artery / course.flush), background * (course.vein / course.flush)
    _blend(frame, vein, cover.vein)
    _blend(frame, artery, course.laminar * cover.vein_edge)
    _blend(frame, artery, cover.artery)


def synthesize_uwf_eye(
    seed: int,
    size: int = 256,
    width: int | None = None,
    times: Sequence[float] | None = None,
    abnormal: bool | None = None,
    laterality: str | None = None,
    randomise: bool = True,
) -> UWFEye:
    """Draw the ultra-widefield view of the synthetic eye ``seed`` (module notes).

    Args:
        size: image height; ``width`` defaults to ``round(1.25 * size)`` (the Optos aspect).
        times, abnormal, laterality: as :func:`~fundus2ffa.data.synthetic.retina.synthesize_eye`.
        randomise: draw the view's parameters from the seed (domain randomisation); False: the fixed
            :class:`UWFStyle` defaults.
    """
    height = int(size)
    width = int(width if width is not None else round(ASPECT * height))
    if min(height, width) < 32:
        raise ValueError(f"UWF image size {height}x{width} is too small (at least 32 pixels a side)")
    style = draw_style(seed, randomise)
    side = max(16, round(style.pole_scale * height))
    eye = synthesize_eye(seed, side, times=times, abnormal=abnormal, laterality=laterality)
    layout, _ = _layout(int(seed), eye.category == "abnormal", eye.laterality)  # the eye's tree, disc, macula
    rng = np.random.default_rng([int(seed), _STYLE_STREAM, 1])
    shape = (height, width)
    top = round((height - side) / 2 + style.pole_shift[1] * height)
    left = round((width - side) / 2 + style.pole_shift[0] * width)
    grid = _ViewGrid(shape, side, top, left)

    # the field: an ellipse; the drawn eye blends into fundus background over a soft seam
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ell = ((xx - width / 2) / (style.field_axes[0] * width / 2)) ** 2 + ((yy - height / 2) / (style.field_axes[1] * height / 2)) ** 2
    field = ell <= 1.0
    field_shape = _Field(
        center=((width / 2 - grid.origin[0]) / grid.unit, (height / 2 - grid.origin[1]) / grid.unit),
        axes=(style.field_axes[0] * width / 2 / grid.unit, style.field_axes[1] * height / 2 / grid.unit),
    )
    eye_fov = _place(eye.masks["fov"], shape, top, left)
    seam = max(1.0, 0.02 * side)
    inner = cv2.erode(eye_fov, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)), iterations=max(1, round(seam)))
    weight = cv2.GaussianBlur(inner.astype(np.float32), (0, 0), seam)[..., None]
    falloff = np.clip(1.0 - 0.35 * ell, 0.3, 1.0)[..., None]
    texture = (1.0 + 0.08 * _smooth_texture(rng, shape))[..., None]
    ring = (eye_fov > 0) & (np.hypot(xx - (left + side / 2), yy - (top + side / 2)) > 0.75 * side / 2)  # the eye's rim

    def widen(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The drawn eye (H x W [x C] uint8) placed in the field, its periphery filled with background;
        and that background (H x W x C float32)."""
        placed = _place(image, shape, top, left).astype(np.float32)
        placed = placed if placed.ndim == 3 else placed[..., None]
        rim = np.median(placed[ring], axis=0) if ring.any() else placed.reshape(-1, placed.shape[-1]).mean(0)
        background = rim[None, None, :] * falloff * texture
        out = placed * weight + background * (1.0 - weight)
        return out * field[..., None], background

    lid, margins = _lids(style, height, width)
    lid &= field
    lashes = _lashes(rng, style, margins, height, width).astype(bool) & field & ~lid
    skin = 1.0 + 0.25 * _smooth_texture(rng, shape, cells=24)

    # the periphery: vessels continuing the tree and laser scars
    peripheral = _grow_periphery(np.random.default_rng([int(seed), _STYLE_STREAM, _VESSEL_STREAM]), layout.vessels,
                                 style, field_shape)
    spots = _laser_spots(np.random.default_rng([int(seed), _STYLE_STREAM, _LASER_STREAM]), style, layout.macula,
                         layout.disc, field_shape)
    eye_vessel = _place(eye.masks["vessel"], shape, top, left)
    cover = _periphery_coverage(grid, peripheral, spots, eye_vessel)

    # SLO pseudo-colour from the widened fundus: green = retina (vessels dark), red = choroid
    fundus, background = widen(eye.cf)
    _periphery_on_fundus(fundus, background, cover, style, layout.fundus_rgb)
    red, green = fundus[..., 0], fundus[..., 1]
    red = 0.5 * red + 0.5 * cv2.GaussianBlur(red, (0, 0), max(1.0, 0.01 * height))
    inside = field & (eye_fov > 0)
    green = green + style.red_into_green * red
    green = green * style.green_level / max(1.0, float(green[inside].mean()))  # Optos: a bright green channel
    red = red * style.red_level / max(1.0, float(red[inside].mean()))
    slo = np.stack([red, green, np.zeros_like(red)], -1)
    slo[lid] = np.stack([style.lid_slo[0] * skin, style.lid_slo[1] * skin, np.zeros_like(skin)], -1)[lid]
    slo[lashes] = 12.0
    slo = 255.0 * np.clip(slo / 255.0, 0.0, 1.0) ** style.gamma

    def finish(image: np.ndarray, stream: int) -> np.ndarray:
        if style.blur_px > 0.05:
            image = cv2.GaussianBlur(image, (0, 0), style.blur_px * height / 256)
        noise = np.random.default_rng([int(seed), _STYLE_STREAM, 2, stream]).normal(0.0, style.noise, image.shape)
        image = image + noise.astype(np.float32)
        visible = field if image.ndim == 2 else field[..., None]
        return np.clip(np.round(image * visible), 0, 255).astype(np.uint8)

    slo = finish(slo.astype(np.float32), 0)
    slo[..., 2] = 0  # pseudo-colour: no blue laser
    frames = []
    for index, (frame, time_s) in enumerate(zip(eye.frames, eye.times)):
        widened, background = widen(frame)
        ffa, background = widened[..., 0], background[..., 0]
        _periphery_on_ffa(ffa, background, cover, style, layout.flush_level, float(time_s))
        ffa[lid] = (style.lid_ffa * skin)[lid]
        ffa[lashes] = 4.0
        frames.append(finish(ffa.astype(np.float32), index + 1))

    occluded = lid | lashes
    visible = field & ~occluded
    masks = {name: (_place(eye.masks[name], shape, top, left).astype(bool) & ~occluded) for name in MASK_NAMES}
    masks["artery"] |= cover.artery_mask & visible
    masks["vein"] |= cover.vein_mask & visible
    masks["vessel"] = masks["artery"] | masks["vein"]
    masks["fov"] = visible
    masks["eyelid"], masks["eyelash"] = lid, lashes
    masks["laser"] = cover.scar_mask & visible & ~masks["vessel"]
    masks = {name: mask.astype(np.uint8) for name, mask in masks.items()}
    leakage = np.stack([(_place(f, shape, top, left).astype(bool) & ~occluded).astype(np.uint8) for f in eye.leakage_frames])
    return UWFEye(
        cf=slo, frames=np.stack(frames), times=eye.times, phases=eye.phases, masks=masks, category=eye.category,
        seed=eye.seed, leakage_frames=leakage, laterality=eye.laterality, style=style,
    )


def style_record(eye: UWFEye) -> dict:
    """The view's parameters as a plain dict (for manifests and reports)."""
    return asdict(eye.style)
