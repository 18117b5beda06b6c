"""The results page and the per-image test outputs behind it (the browser test is tests/test_browser.py)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fundus2ffa.callbacks.samples import GRID_TITLES, grid_rows, title_band, titled_grid
from fundus2ffa.callbacks.test_outputs import ERROR_FULL_SCALE, TestOutputs, error_map
from fundus2ffa.errors import DataError
from fundus2ffa.results_page import item_stem, result_files, summary_rows, write_results_page


def _run_folder(tmp_path: Path, rows: list[dict], metrics: dict) -> Path:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    with (run / "test_per_image.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "config_resolved.yaml").write_text("model:\n  _target_: fundus2ffa.models.PairedGAN\n")
    return run


def test_item_stems_are_safe_and_distinct():
    ids = ["abnormal/3", "abnormal_3", "../../etc/passwd", "a b<c>"]
    stems = [item_stem(i) for i in ids]
    assert len(set(stems)) == len(ids)
    assert all("/" not in s and "<" not in s and not s.startswith(".") for s in stems)


def test_error_map_matches_an_independent_computation():
    real = torch.full((1, 4, 4), -1.0)
    fake = real.clone()
    fake[0, 0, 0] = 1.0                      # 255 grey levels off: saturates the map
    fake[0, 1, 1] = -1.0 + 2 * 32 / 255.0    # 32 levels off
    image = error_map(fake, real)
    assert image.shape == (4, 4, 3) and image.dtype == np.uint8
    import cv2

    levels = np.zeros((4, 4), np.float64)
    levels[0, 0], levels[1, 1] = 255, 32
    expected = cv2.applyColorMap(np.round(np.clip(levels / (ERROR_FULL_SCALE * 255), 0, 1) * 255).astype(np.uint8),
                                 cv2.COLORMAP_INFERNO)[..., ::-1]
    np.testing.assert_array_equal(image, expected)
    assert image[2, 2].sum() < image[1, 1].sum() < image[0, 0].sum()  # zero error darkest


def test_test_outputs_write_every_image_and_the_page_references_them(tmp_path):
    results = tmp_path / "run" / "results"
    callback = TestOutputs(str(results))
    cf = torch.rand(2, 3, 8, 8) * 2 - 1
    ffa = torch.rand(2, 1, 8, 8) * 2 - 1
    batch = {"cf": cf, "ffa": ffa, "id": ["abnormal/1", "normal/1"]}
    callback.on_test_batch_end(None, None, {"fake": -ffa}, batch, 0)
    for item_id in batch["id"]:
        for kind in ("cf", "real", "fake", "error"):
            assert result_files(results, item_id)[kind].is_file()
    real = np.asarray(Image.open(result_files(results, "normal/1")["real"]))
    np.testing.assert_array_equal(real, torch.round((ffa[1, 0] + 1) * 127.5).to(torch.uint8).numpy())

    rows = [{"id": "abnormal/1", "category": "abnormal", "psnr": "12.5", "ssim": "0.4"},
            {"id": "normal/1", "category": "normal", "psnr": "20.25", "ssim": "0.7"}]
    metrics = {"test": {"psnr": 16.375, "ssim": 0.55}, "val": {"psnr": 15.0},
               "baselines": {"identity": {"test": {"psnr": 9.5}}, "mean_ffa": {"psnr": 11.0}}}
    run = _run_folder(tmp_path, rows, metrics)
    page = write_results_page(run).read_text()
    for item_id in batch["id"]:
        for kind in ("cf", "real", "fake", "error"):
            assert f'src="{result_files(results, item_id)[kind].relative_to(results).as_posix()}"' in page
    assert "base64" not in page                                   # referenced, not inlined
    assert 'data-v="20.25"' in page and "baseline identity (test)" in page and "baseline mean_ffa" in page
    assert "fundus2ffa.models.PairedGAN" in page                   # the configuration


def test_video_rows_show_the_player_and_the_strip(tmp_path):
    results = tmp_path / "run" / "results"
    callback = TestOutputs(str(results), fps=2)
    frames = torch.rand(1, 3, 1, 8, 8) * 2 - 1
    batch = {"cf": torch.rand(1, 3, 8, 8) * 2 - 1, "frames": frames, "id": ["P0000_OD"]}
    callback.on_test_batch_end(None, None, {"fake": frames.clone()}, batch, 0)
    files = result_files(results, "P0000_OD")
    strip = np.asarray(Image.open(files["strip"]))
    assert strip.shape == (16, 8 * 4, 3)       # real over generated, CF + 3 frames
    assert files["video"].stat().st_size > 0
    run = _run_folder(tmp_path, [{"id": "P0000_OD", "category": "normal", "psnr": "30"}], {"test": {"psnr": 30.0}})
    page = write_results_page(run).read_text()
    assert '<video src="videos/' in page and "frames: real (top)" in page


def test_summary_rows_and_missing_run_folder(tmp_path):
    rows = summary_rows({"val": {"psnr": 1.0}, "test": {"psnr": 2.0}, "baselines": {"b": {"val": {"psnr": 0.5}}}})
    assert [label for label, _ in rows] == ["this run (val)", "this run (test)", "baseline b (val)"]
    with pytest.raises(DataError, match="does not exist"):
        write_results_page(tmp_path / "nope")


def test_sample_grid_has_titled_columns():
    band = title_band(GRID_TITLES, 64)
    assert band.shape[1] == 192 and band.shape[0] >= 12
    for column in range(3):  # some dark text pixels in every column
        assert (band[:, column * 64:(column + 1) * 64] < 128).any()
    cf, real, fake = torch.zeros(2, 3, 64, 64), torch.zeros(2, 1, 64, 64), torch.zeros(2, 1, 64, 64)
    grid = titled_grid(cf, real, fake)
    np.testing.assert_array_equal(grid[band.shape[0]:], grid_rows(cf, real, fake))
