"""The report shows the trivial baselines of metrics.json and flags model columns that do not beat them."""

import json

import yaml

from fundus2ffa.report import main


def _run(folder, column, test, baselines):
    folder.mkdir(parents=True)
    payload = {"test": test, "val": test, "model": "fundus2ffa.models.PairedGAN", "baselines": baselines}
    (folder / "metrics.json").write_text(json.dumps(payload))
    (folder / "config_resolved.yaml").write_text(yaml.safe_dump({"seed": 0, "report": {"column": column}}))


def test_baselines_are_columns_and_losers_are_flagged(tmp_path):
    baselines = {
        "constant": {"psnr": 24.4, "ssim": 0.50, "vessel_dice": 0.0, "count": 3.0},
        "linear": {"psnr": 19.9, "ssim": 0.54, "vessel_dice": 0.20, "count": 3.0},
        "fit": {"train_ffa_mean": -0.5, "linear_weights_rgb_bias": [0.1, 0.2, 0.3, 0.0]},
    }
    _run(tmp_path / "a", "grey_field", {"psnr": 14.2, "ssim": 0.30, "vessel_dice": 0.05, "count": 3.0}, baselines)
    _run(tmp_path / "b", "good", {"psnr": 26.0, "ssim": 0.60, "vessel_dice": 0.40, "count": 3.0}, baselines)
    text = main([str(tmp_path)])
    lines = text.splitlines()
    psnr_row = next(line for line in lines if line.startswith("| psnr |"))
    assert "14.20 (!)" in psnr_row and "26.00 |" in psnr_row
    constant_row = next(line for line in lines if line.startswith("| psnr (baseline: constant) |"))
    assert constant_row.count("24.40") == 2
    assert any(line.startswith("| ssim (baseline: linear) |") and "0.5400" in line for line in lines)
    assert "grey_field does not beat the trivial baselines on psnr (14.20 <= 24.40)" in text
    assert "grey_field does not beat the trivial baselines on vessel_dice" in text
    assert "good does not beat" not in text


def test_realism_columns_are_lower_is_better_with_the_real_test_ffa_row(tmp_path):
    """Issue 22: FID/KID rows get the baseline rows too, a model is flagged when it is not BELOW the best
    baseline, and a row gives the real test FFA's own value (a perfect generator's FID at this N)."""
    baselines = {"blur": {"psnr": 22.0, "fid_frames": 300.0}, "structure": {"psnr": 15.0, "fid_frames": 250.0}}
    realism = {"references": {"frames": {"count": 6, "source": "6 frames"}}, "real_test_ffa": {"fid_frames": 120.0}}
    for name, fid in (("sharp", 200.0), ("blurry", 280.0)):
        folder = tmp_path / name
        _run(folder, name, {"psnr": 23.0, "fid_frames": fid}, baselines)
        payload = json.loads((folder / "metrics.json").read_text())
        (folder / "metrics.json").write_text(json.dumps({**payload, "realism": realism}))
    text = main([str(tmp_path)])
    lines = text.splitlines()
    assert any(line.startswith("| fid_frames (baseline: structure) |") and "250.00" in line for line in lines)
    assert any(line.startswith("| fid_frames (real test FFA) |") and line.count("120.00") == 2 for line in lines)
    assert "blurry does not beat the trivial baselines on fid_frames (280.00 >= 250.00)" in text
    assert "sharp does not beat the trivial baselines on fid_frames" not in text
