"""The ultra-widefield view of the synthetic retina (issue 22, optional part): Optos-like geometry with
eyelids and eyelashes, SLO pseudo-colour, domain randomisation; and that it trains and registers."""

import json

import numpy as np
import pytest

from conftest import compose_run
from fundus2ffa.data.synthetic.uwf import UWFStyle, draw_style, synthesize_uwf_eye

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
    import cv2

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
    a, b = synthesize_uwf_eye(7, 64), synthesize_uwf_eye(7, 64)
    assert np.array_equal(a.cf, b.cf) and np.array_equal(a.frames, b.frames) and a.style == b.style
    assert not np.array_equal(synthesize_uwf_eye(8, 64).cf, a.cf)


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
