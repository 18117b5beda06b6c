"""``python -m fundus2ffa.transfer``'s study through the composed Hydra config: each task end to end."""

import csv

import pytest
from hydra import compose, initialize_config_dir

from fundus2ffa.config import config_dir, register_resolvers
from fundus2ffa.errors import ConfigError, DataError, WeightsError
from fundus2ffa.transfer.study import run_study

TINY = ["trainer.accelerator=cpu", "backbone.inits=[pretrained,random]", "downstream.seeds=[0]", "downstream.data.image_size=32"]


def _run(tmp_path, checkpoint, overrides):
    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("transfer", overrides=[*TINY, f"backbone.checkpoint={checkpoint}", f"paths.output_dir={tmp_path}", *overrides])
    rows = run_study(cfg)
    with (tmp_path / "results.csv").open() as handle:
        written = list(csv.DictReader(handle))  # the union of the rows' columns (baselines add their fitted values)
    assert written == [{k: str(row.get(k, "")) for k in written[0]} for row in rows]
    return rows, (tmp_path / "table.md").read_text()


@pytest.mark.parametrize("downstream, extra, metric", [
    ("synthetic_vessels", ["downstream.shots=[1,all]", "downstream.data.num_eyes=6", "downstream.train.steps=2"], "dice"),
    ("synthetic_lesions", ["downstream.shots=[1]", "downstream.data.num_eyes=12", "downstream.train.steps=2",
                           "downstream.modes=[linear_probe,finetune]"], "balanced_accuracy"),
    ("synthetic_retrieval", ["downstream.data.num_eyes=5"], "recall@1"),
])
def test_each_task_end_to_end(tmp_path, video_checkpoint, downstream, extra, metric):
    rows, table = _run(tmp_path, video_checkpoint[0], [f"downstream={downstream}", *extra])
    baseline = {"dice": "baseline: tophat threshold", "balanced_accuracy": "baseline: majority class", "recall@1": "baseline: chance"}[metric]
    assert {row["init"] for row in rows} == {"pretrained", "random", baseline}
    assert all(0.0 <= row[metric] <= 1.0 for row in rows)
    assert "| pretrained |" in table and "| random |" in table and f"| {baseline} |" in table and metric in table
    # the baseline is scored on the same test set as the nets, for every mode (and k) of the table
    nets = {(r["mode"], r["k"], r["n_test"]) for r in rows if not r["init"].startswith("baseline")}
    assert nets == {(r["mode"], r["k"], r["n_test"]) for r in rows if r["init"] == baseline}


def test_missing_imagenet_weights_fail_before_training(tmp_path, global_checkpoint):
    with pytest.raises(WeightsError, match="backbone.imagenet.weights"):
        _run(tmp_path, global_checkpoint[0], ["downstream=synthetic_retrieval", "backbone.inits=[pretrained,imagenet]"])
    assert not (tmp_path / "results.csv").exists()


def test_a_missing_data_root_names_the_key(tmp_path, global_checkpoint):
    with pytest.raises(ConfigError, match="downstream.data.root"):
        _run(tmp_path, global_checkpoint[0], ["downstream=vessel_segmentation"])


def test_the_command_line_counts_its_fits_and_says_lightnings_lines_once(tmp_path, video_checkpoint):
    """The real command with stdout piped: a line per fit (i/n and its scores) instead of one dict per fit, and
    Lightning's accelerator lines once for the whole study, its tips never (issue 23 items 4 and 8)."""
    import os
    import re
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "study"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "fundus2ffa.transfer", *TINY, "downstream=synthetic_vessels", "downstream.shots=[1,all]",
         "downstream.data.num_eyes=6", "downstream.train.steps=2", f"backbone.checkpoint={video_checkpoint[0]}",
         f"hydra.run.dir={out}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    with (out / "results.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if not r["init"].startswith("baseline")]  # baselines are no fits
    fits = re.findall(r"transfer \S+: (\d+)/(\d+) fits \((\w+) (\w+) k=(\w+) seed=(\d+): dice ([0-9.e-]+)", console)
    assert [(int(i), int(n)) for i, n, *_ in fits] == [(i + 1, len(rows)) for i in range(len(rows))]
    for (_, _, init, mode, k, seed, dice), row in zip(fits, rows):
        assert (init, mode, k, seed) == (row["init"], row["mode"], row["k"], row["seed"])
        assert float(dice) == pytest.approx(float(row["dice"]), rel=1e-3)
    assert "{'study'" not in console  # no dict per fit
    assert console.count("GPU available") <= 1 and "Tip" not in console
    assert (out / "transfer.log").read_text().count("fits (") == len(rows)


def test_official_drive_split_and_fov_null_through_the_config(tmp_path, global_checkpoint):
    """downstream=vessel_segmentation on a small DRIVE tree (training/ and test/ made here): the nets and
    the top-hat baseline train on training/ and are scored on test/ (test_fraction unused), and
    downstream.data.fov=null is honoured (every pixel scored, although the preset has FOV masks)."""
    import numpy as np
    from PIL import Image

    from fundus2ffa.data.synthetic.retina import synthesize_eye

    root = tmp_path / "DRIVE"
    for folder, numbers, word in (("training", range(21, 24), "training"), ("test", range(1, 3), "test")):
        for n in numbers:
            eye = synthesize_eye(900 + n, size=64)
            for sub, name, array in (("images", f"{n:02d}_{word}.tif", eye.cf),
                                     ("1st_manual", f"{n:02d}_manual1.gif", eye.masks["vessel"].astype(np.uint8) * 255)):
                (root / folder / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / folder / sub / name)
    overrides = ["downstream=vessel_segmentation", f"downstream.data.root={root}", "downstream.data.fov=null",
                 "downstream.shots=[1,all]", "downstream.train.steps=2", "downstream.modes=[finetune]"]
    rows, table = _run(tmp_path / "study", global_checkpoint[0], overrides)
    assert {r["n_test"] for r in rows} == {2} and {r["n_train"] for r in rows if r["k"] == "all"} == {3}
    assert {r["init"] for r in rows} == {"pretrained", "random", "baseline: tophat threshold"}
    assert "| baseline: tophat threshold |" in table and "test n = 2" in table
    with pytest.raises(DataError, match="fov=null"):  # without fov=null the preset's (missing) FOV masks are required
        _run(tmp_path / "again", global_checkpoint[0], overrides[:2] + overrides[3:])
