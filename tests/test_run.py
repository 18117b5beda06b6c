"""End-to-end behaviour of ``python -m fundus2ffa.run``: train, test, predict, resume, sweeps, DDP."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import compose_run
from fundus2ffa.run import run


def test_train_writes_checkpoints_metrics_samples_and_config(smoke_cfg):
    cfg = smoke_cfg()
    results = run(cfg)
    out = Path(cfg.paths.output_dir)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert list((out / "checkpoints").glob("best-epoch_*.ckpt"))
    metrics = json.loads((out / "metrics.json").read_text())
    for stage in ("val", "test"):
        assert {"psnr", "ssim", "psnr_fov", "ssim_fov"} <= set(metrics[stage])
        assert 0 < metrics[stage]["psnr"] < 100 and -1 <= metrics[stage]["ssim"] <= 1
    assert results["test"]["psnr"] == pytest.approx(metrics["test"]["psnr"])
    grids = list((out / "samples").glob("epoch_*.png"))
    assert grids
    grid = np.asarray(Image.open(grids[0]))
    assert grid.shape[1] == 3 * cfg.data.image_size  # CF | real | generated
    assert (out / "config_resolved.yaml").is_file()
    assert (out / "test_per_image.csv").read_text().startswith("id,category,psnr")


def test_test_and_predict_from_checkpoint(smoke_cfg, tmp_path):
    cfg = smoke_cfg()
    run(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"

    test_cfg = compose_run(["debug=smoke", "data.reader.num_pairs=8", "task=test", f"ckpt_path={ckpt}"], tmp_path / "test")
    results = run(test_cfg)
    assert results["test"]["psnr"] > 0

    inputs = tmp_path / "cf_inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    sizes = [(300, 200), (97, 131)]
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(inputs / f"eye{i}.jpg")
    for mode in ("resize", "native"):
        pred_cfg = compose_run(
            ["debug=smoke", "task=predict", f"ckpt_path={ckpt}", f"predict.input_dir={inputs}", f"predict.mode={mode}"],
            tmp_path / f"predict_{mode}",
        )
        written = run(pred_cfg)
        assert len(written) == 2
        for path, (w, h) in zip(sorted(written), sizes):
            image = Image.open(path)
            assert image.size == (w, h) and image.mode == "L"
