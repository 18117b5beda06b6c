"""``python -m fundus2ffa.data.synthetic export --layout ... OUT``: the exports the READMEs start from."""

import subprocess
import sys

import numpy as np
from PIL import Image

from conftest import REPO
from fundus2ffa.data.synthetic.__main__ import main


def test_cli_exports_paired_folder_and_refuses_a_non_empty_folder(tmp_path):
    out = tmp_path / "pairs"
    done = subprocess.run([sys.executable, "-m", "fundus2ffa.data.synthetic", "export", "--layout", "paired_folder",
                           str(out), "--count", "2", "--size", "32"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"data.reader.root={out}" in done.stdout  # says how to train on it
    cf = np.asarray(Image.open(out / "cf" / "eye000.png"))
    ffa = np.asarray(Image.open(out / "ffa" / "eye000.png"))
    assert cf.shape == (32, 32, 3) and ffa.shape == (32, 32)
    assert sorted(p.name for p in (out / "cf").iterdir()) == ["eye000.png", "eye001.png"]
    again = subprocess.run([sys.executable, "-m", "fundus2ffa.data.synthetic", "export", "--layout", "isfahan", str(out)],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "not an empty folder" in again.stderr and str(out) in again.stderr


def test_isfahan_and_video_csv_layouts_are_read_by_their_readers(tmp_path):
    from fundus2ffa.data.readers.isfahan import IsfahanMISP

    assert main(["export", "--layout", "isfahan", str(tmp_path / "isf"), "--count", "4", "--size", "48", "--width", "60"]) == 0
    assert {p.name for p in (tmp_path / "isf").iterdir()} == {"ABNORMAL", "NORMAL", "alignment.csv"}
    assert len(IsfahanMISP(root=str(tmp_path / "isf")).records()) == 4
    assert main(["export", "--layout", "video_csv", str(tmp_path / "f2v"), "--count", "2", "--size", "32"]) == 0
    header = (tmp_path / "f2v" / "data.csv").read_text().splitlines()[0]
    assert header.startswith("pid_eye,orgid,Phase,level_1,fa_rigid,co_rigid")


def test_uwf_venous_export_is_the_readers_drawing(tmp_path):
    """``--geometry uwf --frame venous``: the in-memory reader's pairs on disk (what a synthetic-to-real
    pretraining trains on with data=paired_folder, like the real eyes)."""
    from fundus2ffa.data.readers.synthetic import SyntheticPairs

    out = tmp_path / "uwf"
    assert main(["export", "--layout", "paired_folder", str(out), "--count", "2", "--size", "32", "--geometry", "uwf",
                 "--frame", "venous", "--seed", "3"]) == 0
    reader = SyntheticPairs(num_pairs=2, image_size=32, seed=3, frame="venous", geometry="uwf", cache=False)
    for i, record in enumerate(reader.records()):
        sample = reader.load(record)
        np.testing.assert_array_equal(np.asarray(Image.open(out / "cf" / f"eye{i:03d}.png")), sample.cf)
        np.testing.assert_array_equal(np.asarray(Image.open(out / "ffa" / f"eye{i:03d}.png")), sample.frames[0])
    assert sample.cf.shape == (32, 40, 3)
    assert main(["export", "--layout", "isfahan", str(tmp_path / "isf"), "--geometry", "uwf"]) == 2
