"""Registration (issue 11 item 1-2): known transforms are recovered, failures are reported and not
written, and the output trains with data=paired_folder.

Real FFA frames are not read here (tests must not depend on ../shared); the synthetic retina stands in,
and the real-image accuracy is measured by ``python -m fundus2ffa.registration.bench`` (README table).
"""

import csv
import json
import logging

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import FFA_FRAMES, UWF, compose_run
from fundus2ffa.writers import write_png
from fundus2ffa.data.readers.folder import PairedFolder
from fundus2ffa.data.synthetic.retina import synthesize_eye
from fundus2ffa.errors import ConfigError
from fundus2ffa.register import main as register_main
from fundus2ffa.registration import RegistrationOptions, estimate_transform
from fundus2ffa.registration.bench import corner_error, intensity_change, random_similarity

SIZE = 256


def _case(seed: int, fixed_kind: str):
    eye = synthesize_eye(seed, SIZE)
    rng = np.random.default_rng(seed)
    truth = random_similarity(rng, SIZE, SIZE)
    moving = intensity_change(rng, cv2.warpPerspective(eye.frames[1], truth, (SIZE, SIZE)))
    fixed = eye.cf if fixed_kind == "cf" else eye.frames[1]
    return fixed, moving, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_known_similarity_cf_to_ffa(seed):
    fixed, moving, truth = _case(seed, "cf")
    estimate = estimate_transform(fixed, moving, "cf", "ffa", RegistrationOptions())
    assert estimate.ok, estimate.reason
    # rotation <= 20 deg, scale 0.8-1.25, shift <= 15 %: recovered to within 2 px at 256 px
    assert corner_error(estimate.matrix, truth, SIZE, SIZE) < 2.0
    assert estimate.inliers >= 12 and estimate.residual_px < 2.0


def test_recovers_known_similarities_on_real_ffa_frames():
    """Issue 11 item 2(a) on the six real 512 px FFA frames shipped with the tests: known random
    similarities (rotation <= 20 deg, scale 0.8-1.25, shift <= 15 %) plus an intensity change. Every
    accepted estimate is within 2 px (corner error), and a frame that is not registered is refused
    with its reason, never accepted wrong. Measured (seeds 0 and 1): 11 of 12 accepted, median 0.17 px,
    worst accepted 0.94 px; the low-contrast normal frame under seed 0's transform is refused
    (10 inliers < 12; its best RANSAC fit is 196 px off)."""
    rng = np.random.default_rng(0)
    errors, refused = [], []
    for path in sorted(FFA_FRAMES.rglob("*.jpg")):
        frame = np.asarray(Image.open(path).convert("L"))
        height, width = frame.shape
        truth = random_similarity(rng, height, width)
        moving = intensity_change(rng, cv2.warpPerspective(frame, truth, (width, height)))
        estimate = estimate_transform(frame, moving, "ffa", "ffa", RegistrationOptions())
        if not estimate.ok:
            assert estimate.reason, path.name
            refused.append(path.name)
            continue
        errors.append(corner_error(estimate.matrix, truth, height, width))
    assert len(errors) + len(refused) == 6 and len(errors) >= 5, refused
    assert max(errors) < 2.0 and np.median(errors) < 1.0, errors


@pytest.mark.parametrize("model", ["affine", "homography"])
def test_same_modality_other_models(model):
    fixed, moving, truth = _case(3, "ffa")
    estimate = estimate_transform(fixed, moving, "ffa", "ffa", RegistrationOptions(model=model))
    assert estimate.ok, estimate.reason
    assert corner_error(estimate.matrix, truth, SIZE, SIZE) < 2.0


def test_implausible_scale_is_refused():
    eye = synthesize_eye(4, SIZE)
    zoom = np.array([[1.6, 0, -0.3 * SIZE], [0, 1.6, -0.3 * SIZE], [0, 0, 1]])
    moving = cv2.warpPerspective(eye.frames[1], zoom, (SIZE, SIZE))
    options = RegistrationOptions(scale_range=(0.8, 1.25))
    estimate = estimate_transform(eye.cf, moving, "cf", "ffa", options)
    assert not estimate.ok and "implausible scale" in estimate.reason and "--scale-range" in estimate.reason


def test_bad_option_names_the_flag():
    with pytest.raises(ConfigError, match="--model"):
        RegistrationOptions(model="rigidish").check()


def _raw_pairs(root, seeds=(10, 11, 12, 13)):
    """CF/FFA folders: displaced synthetic pairs, one video (two frames) and one pair without vessels."""
    cf_dir, ffa_dir = root / "cf", root / "ffa"
    truths = {}
    for seed in seeds:
        eye = synthesize_eye(seed, SIZE)
        rng = np.random.default_rng(seed)
        truth = random_similarity(rng, SIZE, SIZE)
        truths[f"eye{seed}"] = truth
        write_png(cf_dir / f"eye{seed}.png", eye.cf)
        write_png(ffa_dir / f"eye{seed}.png", cv2.warpPerspective(eye.frames[1], truth, (SIZE, SIZE)))
    video = synthesize_eye(20, SIZE)
    write_png(cf_dir / "video.png", video.cf)
    for index in (1, 2):
        write_png(ffa_dir / "video" / f"frame{index}.png", video.frames[index])
    write_png(cf_dir / "blank.png", synthesize_eye(21, SIZE).cf)
    write_png(ffa_dir / "blank.png", np.full((SIZE, SIZE), 90, np.uint8))  # no vessels: must fail
    return cf_dir, ffa_dir, truths


def test_register_cli_writes_pairs_reports_failures_and_trains(tmp_path, caplog):
    cf_dir, ffa_dir, truths = _raw_pairs(tmp_path / "raw")
    out = tmp_path / "registered"
    write_png(out / "ffa" / "blank.png", np.zeros((8, 8), np.uint8))  # stale output of an earlier run
    status = register_main([str(cf_dir), str(ffa_dir), str(out), "--workers", "2", "--no-progress", "--overwrite"])
    assert status == 0

    rows = {row["id"]: row for row in csv.DictReader((out / "registration.csv").open())}
    assert rows["blank"]["status"] == "failed" and "too few" in rows["blank"]["reason"]
    assert "not kept as given: the FFA shows no vessels" in rows["blank"]["reason"]
    for sub in ("cf", "ffa", "mask"):
        assert not (out / sub / "blank.png").exists()  # failed: no pair written, stale file removed
    assert np.asarray(Image.open(out / "qc" / "blank.png")).ndim == 3  # ... but its QC, to check it
    assert not list(out.rglob("*.part"))
    for pair_id, truth in truths.items():
        row = rows[pair_id]
        assert row["status"] == "ok", row["reason"]
        assert corner_error(np.array(json.loads(row["matrix"])), truth, SIZE, SIZE) < 2.0
        assert float(row["inlier_ratio"]) > 0 and float(row["residual_px"]) < 2.0
        mask = np.asarray(Image.open(out / "mask" / f"{pair_id}.png"))
        warped = np.asarray(Image.open(out / "ffa" / f"{pair_id}.png"))
        assert mask.shape == warped.shape == (SIZE, SIZE) and set(np.unique(mask)) <= {0, 255}
        assert warped[mask == 0].mean() < warped[mask > 0].mean()  # outside the overlap: padding
        assert np.asarray(Image.open(out / "qc" / f"{pair_id}.png")).ndim == 3
    # the video: every frame registered to the reference frame and with it to the CF; its reference frame
    # is drawn on the CF's grid, so no estimate beats the pair as given: kept as given (identity)
    assert rows["video"]["status"] == "identity" and rows["video/frame2"]["status"] == "ok"
    assert sorted(p.name for p in (out / "video" / "video").iterdir()) == ["frame1.png", "frame2.png"]

    # the output is a paired_folder with valid masks ...
    records = PairedFolder(root=out).records()
    assert {r.id for r in records} == set(truths) | {"video"}
    assert all(dict(r.masks).get("valid") is not None for r in records)
    # ... that trains (tiny), with the mask in the batches and the baselines in metrics.json
    cfg = compose_run(
        [
            "debug=smoke", "data=paired_folder", f"data.reader.root={out}", "data.image_size=64",
            "data.train_transform.load_size=72", "data.split.train=0.5", "data.split.val=0.25",
            "data.split.test=0.25", "generator=unet_256", "generator.num_downs=6",
        ],
        tmp_path / "run",
    )
    from fundus2ffa.run import run

    with caplog.at_level(logging.WARNING):
        results = run(cfg)
    assert "holds only" in caplog.text  # 5 pairs: the val and test splits hold fewer than 3
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"vessel_dice", "leakage_dice"} <= set(metrics["test"])
    assert {"constant", "linear"} <= set(metrics["baselines"])
    assert np.isfinite(results["test"]["psnr"])


def _eye_manifest(path, root=UWF, phase=1):
    """A manifest of the seven UWF fixture eyes (SLO, early FA), roughly aligned as published."""
    eyes = [("train", n) for n in (1, 2, 3, 4)] + [("test", n) for n in (7, 8, 10)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "cf", "ffa", "split"])
        for split, n in eyes:
            writer.writerow([f"eye{n}", root / split / f"{n}.png", root / split / f"{n}.{phase}.png", split])
    return path


def test_default_keeps_roughly_aligned_uwf_pairs_as_a_training_set(tmp_path):
    """Issue 22 item 3: with the defaults, no roughly aligned UWF eye fails (global keypoints are too few on
    SLO/FA vessel maps, so the correlation prior is tried; where no estimate beats the pair as given it
    is kept as given, status identity); every pair is in pairs.csv and has a QC image; identity rows
    describe the identity (no inliers, no residual) and their FFA is written unwarped."""
    manifest = _eye_manifest(tmp_path / "eyes.csv")
    out = tmp_path / "registered"
    assert register_main(["--manifest", str(manifest), str(out), "--no-progress"]) == 0
    rows = {row["id"]: row for row in csv.DictReader((out / "registration.csv").open())}
    assert len(rows) == 7 and {r["status"] for r in rows.values()} <= {"ok", "identity"}, rows
    listed = {row["id"]: row for row in csv.DictReader((out / "pairs.csv").open())}
    assert set(listed) == set(rows) and all(listed[i]["status"] == rows[i]["status"] for i in rows)
    identity = [r for r in rows.values() if r["status"] == "identity"]
    assert identity, "the fixture eyes are too small for keypoints: some must be kept as given"
    for row in identity:
        assert np.allclose(json.loads(row["matrix"]), np.eye(3)), row["matrix"]
        assert row["inliers"] == row["residual_px"] == row["agreement_after"] == "" and row["level"] == "identity"
        assert row["reason"].startswith("kept as given")
        n = row["id"][3:]
        split = "train" if int(n) <= 4 else "test"
        given = np.asarray(Image.open(UWF / split / f"{n}.1.png").convert("L"))
        assert np.array_equal(np.asarray(Image.open(out / "ffa" / f"{row['id']}.png")), given)
    for pair_id in rows:
        assert np.asarray(Image.open(out / "qc" / f"{pair_id}.png")).ndim == 3
    # the registered folder is a training set: paired_folder reads every pair with its split
    records = PairedFolder(manifest=out / "pairs.csv").records()
    assert len(records) == 7 and {r.split for r in records} == {"train", "test"}


def test_refused_and_failed_pairs_get_a_qc_image(tmp_path):
    """A pair no estimate beats, with --no-identity, fails: nothing but its QC is written, and the QC shows
    the pair as given and, below it, the refused estimate (two panels); the message's "check the pair in
    qc/" can be followed."""
    manifest = _eye_manifest(tmp_path / "eyes.csv")
    out = tmp_path / "registered"
    status = register_main(["--manifest", str(manifest), str(out), "--no-progress", "--no-identity"])
    rows = {row["id"]: row for row in csv.DictReader((out / "registration.csv").open())}
    failed = [r for r in rows.values() if r["status"] == "failed"]
    assert failed and all("not kept as given: --no-identity" in r["reason"] for r in failed)
    assert status == (0 if len(failed) < len(rows) else 1)
    listed = {row["id"] for row in csv.DictReader((out / "pairs.csv").open())}
    for row in failed:
        assert row["id"] not in listed
        assert not (out / "ffa" / f"{row['id']}.png").exists() and not (out / "mask" / f"{row['id']}.png").exists()
        qc = np.asarray(Image.open(out / "qc" / f"{row['id']}.png"))
        single = np.asarray(Image.open(out / "qc" / f"{row['id']}.png")).shape[1] // 2  # panel: two images side by side
        panels = 2 if row["matrix"] else 1
        # each panel is one image high at the panel's scale (170 x 213 images, side by side: 426 px wide)
        assert qc.ndim == 3 and abs(qc.shape[0] - panels * round(170 * single / 213)) <= panels, (qc.shape, panels)


def test_a_collapsed_fit_is_refused_and_described_as_it_is(monkeypatch):
    """Issue 22: OpenCV once returned an all-zero similarity with every one of 1475 matches flagged as an
    inlier, and the row said 1475 inliers, zero residual. Inliers are now recounted for the matrix
    returned, matches are one-to-one, and the reason names the degenerate matrix."""
    import fundus2ffa.registration.estimate as estimate_module

    def collapsed(src, dst, **kwargs):
        return np.zeros((2, 3)), np.ones((len(src), 1), np.uint8)

    monkeypatch.setattr(estimate_module.cv2, "estimateAffinePartial2D", collapsed)
    fixed, moving, _ = _case(0, "ffa")
    estimate = estimate_transform(fixed, moving, "ffa", "ffa", RegistrationOptions(init="none"))
    assert not estimate.ok and "degenerate transform" in estimate.reason and estimate.scale == 0.0
    assert estimate.matrix is not None and not estimate.matrix[:2, :2].any()
    assert estimate.inliers <= 1 < estimate.matches  # the zero matrix maps every point to one place


def test_matches_are_one_to_one():
    from fundus2ffa.registration.estimate import _ratio_matches

    rng = np.random.default_rng(0)
    fixed = rng.normal(size=(20, 8)).astype(np.float32)
    moving = np.repeat(fixed[:1], 5, axis=0) + rng.normal(scale=1e-3, size=(5, 8)).astype(np.float32)  # all like fixed 0
    moving = np.vstack([moving, fixed[1:4]])
    pairs = _ratio_matches(moving, fixed, cv2.NORM_L2, 0.95)
    assert len({f for _, f in pairs}) == len(pairs) and len({m for m, _ in pairs}) == len(pairs)
    assert sum(f == 0 for _, f in pairs) == 1 and {f for _, f in pairs} >= {1, 2, 3}
