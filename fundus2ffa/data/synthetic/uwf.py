"""Ultra-widefield (UWF) views of the synthetic retina: Optos-like geometry and SLO pseudo-colour.

The real UWF eyes of ../shared/data (issue 22) look nothing like the 45-degree synthetic fundus: a wide
elliptical field with the posterior pole small in its centre, upper and lower eyelids and eyelashes
across the top and bottom of the field, and a scanning-laser pseudo-colour image (a red and a green
laser channel, no blue) instead of a colour photograph. :func:`synthesize_uwf_eye` draws such a view of
the same synthetic eye, for the CF (SLO) and every FFA frame alike, with its parameters randomised per
seed (domain randomisation: what a synthetic-to-real pretraining needs so that a network does not learn
one rendering):

* geometry: the synthetic eye (:func:`~fundus2ffa.data.synthetic.retina.synthesize_eye`, its disc,
  macula, vessel tree and lesions) drawn at ``pole_scale`` of the image height, shifted by
  ``pole_shift``, inside an elliptical field (``field_axes`` of the half width and half height); the
  periphery between the drawn eye and the field edge is fundus background (the eye's own rim colour,
  smoothly textured, darker towards the edge), blended in over a soft seam. Its vessels are not drawn:
  the vessel ground truth stays exact where it exists;
* occlusion: an upper and a lower eyelid (skin texture, moderately bright in the SLO, dark in the FA;
  lid margins ``upper_lid``, ``lower_lid`` of the height at the centre, curved) and ``lashes`` dark
  eyelashes, curved strokes from the lid margins into the field, dark in every modality (they block
  both lasers and the fluorescence);
* SLO pseudo-colour: green = the fundus green channel (retinal vessels dark), red = the red channel
  with its fine detail halved (the choroid, vessels faint), blue 0; per image a red and a green level,
  a gamma, a leak of red into green, a defocus blur and pixel noise (``UWFStyle``); each channel is
  scaled to a drawn mean level inside the drawn eye (Optos images are green-dominant, a colour
  photograph red-dominant).

Masks: the eye's masks placed in the view (zero in the periphery and where eyelids or lashes cover
them), ``fov`` the visible field (the ellipse minus eyelids and lashes), and ``eyelid`` and ``eyelash``.
The same (seed, size, options) give byte-identical arrays.
"""

from dataclasses import asdict, dataclass
from typing import Sequence

import cv2
import numpy as np

from fundus2ffa.data.synthetic.retina import MASK_NAMES, SyntheticEye, synthesize_eye

UWF_MASK_NAMES = (*MASK_NAMES, "eyelid", "eyelash")
ASPECT = 1.25  # width / height of the Optos UWF images of ../shared/data (853 x 682)
_STYLE_STREAM = 0x55_57_46  # "UWF": the style's random stream, independent of the eye's


@dataclass(frozen=True)
class UWFStyle:
    """The randomised parameters of one UWF view (:func:`draw_style`); fractions are of the image size."""

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


def draw_style(seed: int, randomise: bool = True) -> UWFStyle:
    """The view's parameters for ``seed`` (the defaults when not ``randomise``)."""
    if not randomise:
        return UWFStyle()
    rng = np.random.default_rng([int(seed), _STYLE_STREAM])
    u = rng.uniform
    return UWFStyle(
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
    )


@dataclass
class UWFEye(SyntheticEye):
    """A :class:`SyntheticEye` seen ultra-widefield: ``cf`` is the SLO pseudo-colour image; ``style``
    the parameters it was drawn with."""

    style: UWFStyle = UWFStyle()


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
    rng = np.random.default_rng([int(seed), _STYLE_STREAM, 1])
    shape = (height, width)
    top = round((height - side) / 2 + style.pole_shift[1] * height)
    left = round((width - side) / 2 + style.pole_shift[0] * width)

    # the field: an ellipse; the drawn eye blends into fundus background over a soft seam
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ell = ((xx - width / 2) / (style.field_axes[0] * width / 2)) ** 2 + ((yy - height / 2) / (style.field_axes[1] * height / 2)) ** 2
    field = ell <= 1.0
    eye_fov = _place(eye.masks["fov"], shape, top, left)
    seam = max(1.0, 0.02 * side)
    inner = cv2.erode(eye_fov, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)), iterations=max(1, round(seam)))
    weight = cv2.GaussianBlur(inner.astype(np.float32), (0, 0), seam)[..., None]
    falloff = np.clip(1.0 - 0.35 * ell, 0.3, 1.0)[..., None]
    texture = (1.0 + 0.08 * _smooth_texture(rng, shape))[..., None]
    ring = (eye_fov > 0) & (np.hypot(xx - (left + side / 2), yy - (top + side / 2)) > 0.75 * side / 2)  # the eye's rim

    def widen(image: np.ndarray) -> np.ndarray:
        """The drawn eye (H x W [x C] uint8) placed in the field, its periphery filled with background."""
        placed = _place(image, shape, top, left).astype(np.float32)
        placed = placed if placed.ndim == 3 else placed[..., None]
        rim = np.median(placed[ring], axis=0) if ring.any() else placed.reshape(-1, placed.shape[-1]).mean(0)
        background = rim[None, None, :] * falloff * texture
        out = placed * weight + background * (1.0 - weight)
        return out * field[..., None]

    lid, margins = _lids(style, height, width)
    lid &= field
    lashes = _lashes(rng, style, margins, height, width).astype(bool) & field & ~lid
    skin = 1.0 + 0.25 * _smooth_texture(rng, shape, cells=24)

    # SLO pseudo-colour from the widened fundus: green = retina (vessels dark), red = choroid
    fundus = widen(eye.cf)
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
    for index, frame in enumerate(eye.frames):
        ffa = widen(frame)[..., 0]
        ffa[lid] = (style.lid_ffa * skin)[lid]
        ffa[lashes] = 4.0
        frames.append(finish(ffa.astype(np.float32), index + 1))

    occluded = lid | lashes
    masks = {name: (_place(eye.masks[name], shape, top, left).astype(bool) & ~occluded).astype(np.uint8) for name in MASK_NAMES}
    masks["fov"] = (field & ~occluded).astype(np.uint8)
    masks["eyelid"], masks["eyelash"] = lid.astype(np.uint8), lashes.astype(np.uint8)
    leakage = np.stack([(_place(f, shape, top, left).astype(bool) & ~occluded).astype(np.uint8) for f in eye.leakage_frames])
    return UWFEye(
        cf=slo, frames=np.stack(frames), times=eye.times, phases=eye.phases, masks=masks, category=eye.category,
        seed=eye.seed, leakage_frames=leakage, laterality=eye.laterality, style=style,
    )


def style_record(eye: UWFEye) -> dict:
    """The view's parameters as a plain dict (for manifests and reports)."""
    return asdict(eye.style)
