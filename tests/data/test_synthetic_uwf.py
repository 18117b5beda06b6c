"""The ultra-widefield view of the synthetic retina (issue 22, optional part): Optos-like geometry with
eyelids and eyelashes, SLO pseudo-colour, peripheral vessels, laser scars, domain randomisation; and
that it trains and registers."""

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest

from conftest import compose_run
from fundus2ffa.data.synthetic import uwf
from fundus2ffa.data.synthetic.uwf import UWF_MASK_NAMES, UWFStyle, draw_style, synthesize_uwf_eye

pytestmark = pytest.mark.usefixtures("one_thread")


def _bbox_aspect(mask: np.ndarray) -> float:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return (cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1)


def test_uwf_geometry_wide_field_eyelids_and_lashes():
    eye = synthesize_uwf_eye(3, 128)
    assert eye.cf.shape == (128, 160, 3) and eye.frames.shape == (3, 128, 160)
    field = eye.masks["fov"] | eye.masks["eyelid"] | eye.masks["eyelash"]
    assert _bbox_aspect(field) > 1.15  # an ellipse as wide as the image, not the fundus circle
    assert not field[0, 0] and not field[-1, -1] and eye.cf[0, 0].max() == 0  # black outside the field
    lid, lash = eye.masks["eyelid"] > 0, eye.masks["eyelash"] > 0
    assert lid[: 128 // 2].any() and lid[128 // 2 :].any() and not lid[64, 80]  # upper and lower lids, open centre
    assert eye.style.lashes > 0 and lash.any()
    visible = eye.masks["fov"] > 0
    assert not (visible & (lid | lash)).any()
    # lashes block the lasers and the fluorescence: dark in the SLO green and in every FA frame
    assert eye.cf[lash, 1].mean() < 0.5 * eye.cf[visible, 1].mean()
    for frame in eye.frames:
        assert frame[lash].mean() < 0.5 * frame[visible].mean()


def test_slo_pseudo_colour_has_no_blue_and_vessels_in_green():
    eye = synthesize_uwf_eye(5, 256, randomise=False)
    assert eye.style == UWFStyle() and eye.cf[..., 2].max() == 0
    vessel = eye.masks["vessel"] > 0
    near = cv2.dilate(vessel.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0  # the vessels' surroundings
    background = near & ~vessel & (eye.masks["fov"] > 0) & (eye.masks["optic_disc"] == 0)
    green, red = eye.cf[..., 1].astype(float), eye.cf[..., 0].astype(float)
    green_contrast = 1 - green[vessel].mean() / green[background].mean()
    red_contrast = 1 - red[vessel].mean() / red[background].mean()
    assert green_contrast > 0.15 and green_contrast > red_contrast  # retinal vessels: the green laser
    # the venous frame draws the vessels bright, and the ground truth lies on them
    assert eye.frames[1][vessel].mean() > eye.frames[1][background].mean() + 30


def test_domain_randomisation_is_per_seed_and_reproducible():
    styles = [draw_style(seed) for seed in range(6)]
    assert len({round(s.green_level) for s in styles}) >= 5 and len({s.lashes for s in styles}) >= 4
    assert all(0.55 <= s.pole_scale <= 0.78 and 0.7 <= s.gamma <= 1.4 for s in styles)
    assert len({s.periphery_vessels for s in styles}) >= 4
    assert len({round(s.periphery_tortuosity, 3) for s in styles}) >= 5
    a, b = synthesize_uwf_eye(7, 64), synthesize_uwf_eye(7, 64)
    assert np.array_equal(a.cf, b.cf) and np.array_equal(a.frames, b.frames) and a.style == b.style
    assert not np.array_equal(synthesize_uwf_eye(8, 64).cf, a.cf)
    # an eye with laser scars and peripheral vessels: every array byte-identical, every mask named
    seed = next(s for s in range(50) if draw_style(s).laser)
    a, b = synthesize_uwf_eye(seed, 128), synthesize_uwf_eye(seed, 128)
    assert tuple(a.masks) == UWF_MASK_NAMES and a.masks["laser"].any()
    assert np.array_equal(a.cf, b.cf) and np.array_equal(a.frames, b.frames)
    assert all(np.array_equal(a.masks[name], b.masks[name]) for name in UWF_MASK_NAMES)


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _pole_distance(eye, size: int) -> tuple[np.ndarray, float]:
    """(H x W distance in px from the centre of the drawn 45-degree eye, that eye's side in px)."""
    style, (height, width) = eye.style, eye.cf.shape[:2]
    side = max(16, round(style.pole_scale * size))
    cx = (width - side) / 2 + style.pole_shift[0] * width + side / 2
    cy = (height - side) / 2 + style.pole_shift[1] * height + side / 2
    yy, xx = np.mgrid[0:height, 0:width]
    return np.hypot(xx - cx, yy - cy), side


def test_peripheral_vessels_continue_across_the_field_in_every_modality():
    """Real UWF angiograms show the vessel tree out to the field edge: the periphery beyond the drawn
    45-degree eye has vessels, in the masks, bright in the FA as the frame's phase says, dark in the SLO
    green."""
    eye = synthesize_uwf_eye(5, 256, randomise=False)
    distance, side = _pole_distance(eye, 256)
    beyond = distance > 1.05 * side / 2  # outside the drawn eye's field of view (radius 0.95 of side / 2)
    vessel, artery, vein = (eye.masks[name] > 0 for name in ("vessel", "artery", "vein"))
    assert np.array_equal(vessel, artery | vein)
    peripheral = vessel & beyond
    assert peripheral.sum() > 150
    height, width = eye.cf.shape[:2]
    yy, xx = np.nonzero(peripheral)
    axes = eye.style.field_axes
    ellipse = ((xx - width / 2) / (axes[0] * width / 2)) ** 2 + ((yy - height / 2) / (axes[1] * height / 2)) ** 2
    assert ellipse.max() > 0.6  # out into the far periphery, not only a fringe round the pole

    visible = eye.masks["fov"] > 0
    near = (cv2.dilate(peripheral.astype(np.uint8), _disk(3)) > 0) & visible & beyond
    near &= ~(cv2.dilate(vessel.astype(np.uint8), _disk(1)) > 0)  # the vessels' surroundings
    venous = eye.frames[eye.phases.index("venous")]
    assert venous[peripheral].mean() > venous[near].mean() + 15  # filled: bright on the grey background
    # the arterial frame: arteries filled, veins not yet, in the periphery as at the pole
    arterial = eye.frames[eye.phases.index("arterial")]
    assert arterial[artery & beyond].mean() > arterial[vein & beyond].mean() + 20
    assert arterial[artery & ~beyond].mean() > arterial[vein & ~beyond].mean() + 20
    green, red = eye.cf[..., 1].astype(float), eye.cf[..., 0].astype(float)
    green_contrast = 1 - green[peripheral].mean() / green[near].mean()
    assert green_contrast > 0.15 and green_contrast > 1 - red[peripheral].mean() / red[near].mean()

    for seed in range(4):  # randomised eyes: every one has them
        eye = synthesize_uwf_eye(seed, 256)
        distance, side = _pole_distance(eye, 256)
        assert ((eye.masks["vessel"] > 0) & (distance > 1.05 * side / 2)).sum() > 50


def _draw_with_style(monkeypatch, style: UWFStyle, seed: int = 5, size: int = 256):
    monkeypatch.setattr(uwf, "draw_style", lambda seed, randomise=True: style)
    return synthesize_uwf_eye(seed, size)


def test_laser_scars_are_dark_spots_in_the_periphery_under_vessels_and_lids(monkeypatch):
    """Pan-retinal photocoagulation: with the style's laser on, round spots off the posterior pole, dark
    in the SLO green and in every FA frame with a bright (window defect) rim that stains more late; the
    vessels stay drawn over them and the eyelids and lashes over everything."""
    with_laser = _draw_with_style(monkeypatch, replace(UWFStyle(), laser=True))
    without = _draw_with_style(monkeypatch, UWFStyle())
    laser = with_laser.masks["laser"] > 0
    assert laser.sum() > 500 and not without.masks["laser"].any()
    masks = with_laser.masks
    assert not (laser & ((masks["eyelid"] > 0) | (masks["eyelash"] > 0) | (masks["vessel"] > 0))).any()
    assert not (laser & (masks["fov"] == 0)).any() and not (laser & (masks["lesion"] > 0)).any()
    assert all(np.array_equal(masks[name], without.masks[name]) for name in ("vessel", "artery", "vein", "fov"))
    # occluded: the lids and lashes are the same pixels with and without scars
    occluded = (masks["eyelid"] > 0) | (masks["eyelash"] > 0)
    assert np.array_equal(with_laser.cf[occluded], without.cf[occluded])
    assert all(np.array_equal(a[occluded], b[occluded]) for a, b in zip(with_laser.frames, without.frames))
    # the posterior pole is spared
    unit = _pole_distance(with_laser, 256)[1] / 2
    fovea_y, fovea_x = np.argwhere(masks["macula"] > 0).mean(0)
    rows, columns = np.nonzero(laser)
    style = with_laser.style
    assert np.hypot(columns - fovea_x, rows - fovea_y).min() > (style.laser_spared - 2 * style.laser_radius) * unit

    centres = cv2.erode(laser.astype(np.uint8), _disk(1)) > 0
    plain = (masks["fov"] > 0) & (masks["vessel"] == 0)
    rims = (cv2.dilate(laser.astype(np.uint8), _disk(2)) > 0) & ~laser & plain
    around = (cv2.dilate(laser.astype(np.uint8), _disk(7)) > 0) & plain
    around &= ~(cv2.dilate(laser.astype(np.uint8), _disk(4)) > 0)  # the fundus between the scars
    assert with_laser.cf[centres, 1].mean() < 0.8 * with_laser.cf[around, 1].mean()  # pigmented: dark in green
    rim_gains = []
    for scarred, clean in zip(with_laser.frames, without.frames):
        assert scarred[centres].mean() < 0.8 * scarred[around].mean()  # hypofluorescent centres
        assert scarred[centres].mean() < 0.8 * clean[centres].mean()
        rim_gains.append(scarred[rims].mean() / clean[rims].mean())
    assert min(rim_gains) > 1.05 and rim_gains[-1] > rim_gains[1]  # window defect, more staining late

    styles = [draw_style(seed) for seed in range(300)]
    assert 0.3 < np.mean([s.laser for s in styles]) < 0.5  # about 40 % of the randomised eyes
    lasered = [s for s in styles if s.laser]
    assert len({round(s.laser_radius, 4) for s in lasered}) > 20
    assert len({round(s.laser_pigment, 3) for s in lasered}) > 20
    assert any(s.laser_fill < 1 for s in lasered) and any(s.laser_fill == 1 for s in lasered)  # patches and full
    assert not UWFStyle().laser


def test_uwf_synthetic_pairs_train_and_register_as_given(tmp_path):
    """data.reader.geometry=uwf through a real (smoke) training run; the pair as drawn (aligned) is kept by
    python -m fundus2ffa.register (registered or kept as given, never failed)."""
    from fundus2ffa.register import main as register_main
    from fundus2ffa.run import run
    from fundus2ffa.writers import write_png

    cfg = compose_run(["debug=smoke", "data.reader.num_pairs=6", "data.reader.geometry=uwf", "data.image_size=64",
                       "generator.num_downs=6"], tmp_path / "run")
    results = run(cfg)
    assert np.isfinite(results["test"]["psnr"]) and "realism" not in json.loads((tmp_path / "run" / "metrics.json").read_text())

    for seed in (11, 12):
        eye = synthesize_uwf_eye(seed, 256)
        write_png(tmp_path / "raw" / "cf" / f"eye{seed}.png", eye.cf)
        write_png(tmp_path / "raw" / "ffa" / f"eye{seed}.png", eye.frames[1])
    out = tmp_path / "registered"
    assert register_main([str(tmp_path / "raw" / "cf"), str(tmp_path / "raw" / "ffa"), str(out), "--no-progress"]) == 0
    rows = (out / "pairs.csv").read_text().splitlines()
    assert len(rows) == 3  # header + both pairs usable
