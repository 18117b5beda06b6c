"""Structure-agreement metrics and the trivial baselines (issue 11 item 4)."""

import math

import numpy as np
import pytest
import torch

from conftest import compose_run
from fundus2ffa.data.synthetic.retina import synthesize_eye
from fundus2ffa.metrics.baselines import fit_baselines, predict_baseline, score_baselines
from fundus2ffa.metrics.image import image_quality
from fundus2ffa.metrics.structure import structure_agreement

pytestmark = pytest.mark.usefixtures("one_thread")


def _ffa(seed: int, size: int = 128) -> torch.Tensor:
    eye = synthesize_eye(seed, size, abnormal=True)
    return torch.from_numpy(eye.late.astype(np.float32) / 127.5 - 1.0)[None, None]


def test_structure_dice_is_one_for_identical_and_falls_with_misalignment():
    real = _ffa(3)
    same = structure_agreement(real, real.clone())
    assert same["vessel_dice"].item() == 1.0 and same["leakage_dice"].item() == 1.0
    previous = {"vessel_dice": 1.0, "leakage_dice": 1.0}
    for shift in (2, 6):
        moved = torch.roll(real, shifts=(shift, shift), dims=(2, 3))
        scores = structure_agreement(moved, real)
        for key in previous:
            assert scores[key].item() < previous[key]  # strictly falls as the shift grows
            previous[key] = scores[key].item()
    assert previous["vessel_dice"] < 0.5
    flat = torch.full_like(real, real.mean().item())
    assert structure_agreement(flat, real)["vessel_dice"].item() == 0.0  # a flat image has no vessels


def test_valid_mask_excludes_pixels_from_quality_scores():
    real = _ffa(4, 64)
    fake = real + 0.05 * torch.randn_like(real)
    valid = torch.zeros_like(real)
    valid[..., 8:56, 8:56] = 1
    spoiled = fake.clone()
    spoiled[valid == 0] = -real[valid == 0]  # garbage outside the valid region
    a = image_quality(fake, real, valid=valid)
    b = image_quality(spoiled, real, valid=valid)
    assert a["psnr"].item() == pytest.approx(b["psnr"].item())
    # PSNR inside valid equals an independent computation on the crop
    f, r = ((fake + 1) / 2).clamp(0, 1), ((real + 1) / 2).clamp(0, 1)
    f, r = torch.round(f * 255) / 255, torch.round(r * 255) / 255
    mse = ((f - r) ** 2)[..., 8:56, 8:56].mean().item()
    assert a["psnr"].item() == pytest.approx(10 * math.log10(1 / mse), abs=1e-3)


def test_baselines_are_fitted_on_train_and_scored_on_test(tmp_path):
    cfg = compose_run(["debug=smoke", "data.reader.num_pairs=6", "data.image_size=64"], tmp_path)
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    fitted = fit_baselines(datamodule)
    # independent reference: numpy least squares over every training pixel
    train = datamodule.datasets["train"]
    xs, ys = [], []
    from fundus2ffa.data.dataset import FFADataset

    dataset = FFADataset(
        train.reader, train.records, datamodule.eval_transform, datamodule.preprocess, train=False,
        kind=datamodule.kind, km=datamodule.km, cache=False,
    )
    for item in (dataset[i] for i in range(len(dataset))):
        xs.append(np.concatenate([item["cf"].reshape(3, -1).numpy(), np.ones((1, item["cf"][0].numel()))]).T)
        ys.append(item["ffa"].reshape(-1).numpy())
    x, y = np.concatenate(xs).astype(np.float64), np.concatenate(ys).astype(np.float64)
    assert fitted["mean"] == pytest.approx(y.mean(), abs=1e-6)
    assert np.allclose(fitted["weights"], np.linalg.lstsq(x, y, rcond=None)[0], atol=1e-5)

    scores = score_baselines(datamodule, {"quantize": True})
    test_set = datamodule.datasets["test"]
    test_items = [test_set[i] for i in range(len(test_set))]
    assert scores["constant"]["count"] == len(test_items)
    # the constant baseline's PSNR, computed independently
    expected = []
    for item in test_items:
        constant = predict_baseline("constant", fitted, item["cf"][None])
        expected.append(image_quality(constant, item["ffa"][None])["psnr"].item())
    assert scores["constant"]["psnr"] == pytest.approx(np.mean(expected), abs=1e-4)
    for name in ("constant", "linear"):
        assert {"psnr", "ssim", "vessel_dice", "leakage_dice"} <= set(scores[name])
    # the synthetic CF predicts its FFA better than a constant does
    assert scores["linear"]["psnr"] > scores["constant"]["psnr"]


def _synthetic_datamodule(tmp_path, size=128, pairs=8):
    from hydra.utils import instantiate

    cfg = compose_run(["debug=smoke", f"data.reader.num_pairs={pairs}", f"data.image_size={size}"], tmp_path)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    return datamodule


def test_blur_baseline_is_the_linear_map_blurred_to_its_best_training_psnr(tmp_path):
    """Issue 22: the blur baseline's sigma is the one of BLUR_SIGMAS with the best mean training PSNR
    (checked here against every sigma), and blurring removes detail the linear map has."""
    from fundus2ffa.metrics.baselines import BLUR_SIGMAS, training_split_at_eval

    datamodule = _synthetic_datamodule(tmp_path, size=64, pairs=6)
    fitted = fit_baselines(datamodule)
    items = [training_split_at_eval(datamodule)[i] for i in range(len(datamodule.datasets["train"]))]

    def train_psnr(sigma):
        trial = {**fitted, "blur_sigma": sigma / 256}
        return np.mean([image_quality(predict_baseline("blur", trial, it["cf"][None]), it["ffa"][None])["psnr"].item() for it in items])

    psnrs = {sigma: train_psnr(sigma) for sigma in BLUR_SIGMAS}
    assert fitted["blur_sigma"] * 256 == max(psnrs, key=psnrs.get)
    cf = items[0]["cf"][None]
    linear = predict_baseline("linear", fitted, cf)
    assert torch.equal(predict_baseline("blur", {**fitted, "blur_sigma": 0.0}, cf), linear)
    blurred = predict_baseline("blur", {**fitted, "blur_sigma": 16 / 256}, cf)  # 4 px at 64 px
    detail = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean().item()  # noqa: E731
    assert blurred.shape == linear.shape and detail(blurred) < 0.5 * detail(linear)


def test_structure_baseline_renders_the_cf_vessels_bright_and_finds_more_vessel_tree(tmp_path):
    """Issue 22: the CF's black top-hat rendered as bright vessels on a dark ground scores a higher vessel
    Dice than the constant and linear predictors on the synthetic retina, and its vessels are bright."""
    from fundus2ffa.metrics.baselines import tophat

    datamodule = _synthetic_datamodule(tmp_path)
    scores = score_baselines(datamodule, {"quantize": True})
    assert scores["structure"]["vessel_dice"] > max(scores["linear"]["vessel_dice"], scores["constant"]["vessel_dice"])
    assert scores["fit"]["structure_slope_offset"][0] > 0 and scores["fit"]["structure_tophat_px"] >= 3
    item = datamodule.datasets["test"][0]
    fitted = fit_baselines(datamodule)
    rendered = predict_baseline("structure", fitted, item["cf"][None])[0, 0]
    vessels = tophat(item["cf"][None], fitted["structure"]["diameter"])[0, 0] > 0.1
    assert rendered[vessels].mean() > rendered[~vessels].mean() + 0.1
