"""Trivial video predictors beside every video evaluation (issue 22 item 1), through the real run on the
shipped ultra-widefield fixtures read as videos (data=uwf_video: real SLO / FA phases)."""

import json

import torch
from hydra.utils import instantiate

from conftest import UWF, compose_run
from fundus2ffa.metrics.baselines import training_split_at_eval
from fundus2ffa.metrics.video_baselines import fit_video_baselines, predict_video_baseline
from fundus2ffa.run import run

VIDEO_UWF = ["data=uwf_video", f"data.reader.root={UWF}", "data.image_size=32"]


def test_a_video_run_scores_the_constant_and_linear_baselines_on_its_test_videos(tmp_path):
    cfg = compose_run(["debug=smoke", "model=fundus2video", "pretrained.vgg19=random", *VIDEO_UWF,
                       "trainer.limit_test_batches=null"], tmp_path / "run")
    run(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for name in ("constant", "linear"):
        scores = metrics["baselines"][name]
        assert {"psnr", "ssim", "psnr_fov", "ssim_fov", "psnr_compat", "ssim_compat"} <= set(scores), name
        assert scores["count"] == metrics["test"]["count"]  # the model's own test videos
    assert len(metrics["baselines"]["fit"]["train_frame_means"]) >= 2


def test_the_fit_is_the_training_frames_per_frame_index(tmp_path):
    """constant: frame t's training mean; linear: least squares of frame t on the CF, so on the training
    videos its squared error is no larger than the constant's."""
    cfg = compose_run(["debug=smoke", "model=fundus2video", "pretrained.vgg19=random", *VIDEO_UWF], tmp_path)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    fitted = fit_video_baselines(datamodule)
    train = training_split_at_eval(datamodule)
    items = [train[i] for i in range(len(train))]
    for t, mean in enumerate(fitted["means"]):
        frames = [item["frames"][t].mean(0) for item in items if item["frames"].shape[0] > t]
        assert abs(float(torch.cat([f.flatten() for f in frames]).double().mean()) - mean) < 1e-6
    errors = {"constant": 0.0, "linear": 0.0}  # summed over the training pixels: least squares (clamping only helps)
    for item in items:
        real = item["frames"].mean(1, keepdim=True)[None]
        for name in errors:
            errors[name] += float((predict_video_baseline(name, fitted, item["cf"][None], real.shape[1]) - real).double().square().sum())
    assert errors["linear"] <= errors["constant"], errors
    longer = predict_video_baseline("constant", fitted, items[0]["cf"][None], len(fitted["means"]) + 3)
    assert torch.allclose(longer[0, -1], torch.full_like(longer[0, -1], fitted["means"][-1]))
