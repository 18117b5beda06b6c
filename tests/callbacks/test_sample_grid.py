"""The sample grids of a run whose evaluation images differ in size (aspect-kept fields of view): a real
fit and test write them instead of failing at the end of training (it crashed stacking 256x317 and
256x345 synthetic UWF test images after a whole pretraining run)."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import compose_run
from fundus2ffa.data.synthetic import synthesize_eye
from fundus2ffa.run import run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_run_with_evaluation_images_of_several_sizes_writes_its_grids(tmp_path):
    root = tmp_path / "pairs"
    for i, width in enumerate((40, 48, 56, 44, 52, 60, 40, 64)):
        eye = synthesize_eye(i, size=40, width=width)
        (root / "cf").mkdir(parents=True, exist_ok=True)
        (root / "ffa").mkdir(exist_ok=True)
        Image.fromarray(eye.cf).save(root / "cf" / f"eye{i}.png")
        Image.fromarray(eye.late).save(root / "ffa" / f"eye{i}.png")
    out = tmp_path / "run"
    run(compose_run(["debug=smoke", "data=paired_folder", f"data.reader.root={root}", "data.image_size=32",
                     "data.preprocess.resize=shorter_side", "data.preprocess.multiple=4", "data.preprocess.fov_crop=false",
                     "data.train_transform.load_size=36", "data.num_workers=0", "data.split={train: 0.5, val: 0.25, test: 0.25}",
                     "generator=resnet_9blocks", "generator.ngf=4", "generator.n_blocks=1", "discriminator.ndf=4",
                     "trainer.limit_val_batches=null", "trainer.limit_test_batches=null", "callbacks.samples.num_samples=4"], out))
    fakes = sorted((out / "results" / "images").glob("*_fake.png"))
    assert len({Image.open(p).size for p in fakes}) == len(fakes) == 2  # two test eyes of different sizes
    assert json.loads((out / "metrics.json").read_text())["test"]["count"] == 2
    grid = np.asarray(Image.open(out / "samples" / "test.png"))
    assert grid.shape[1] in {3 * Image.open(p).size[0] for p in fakes} and grid.shape[0] > 2 * 32  # both rows, one size
    assert list((out / "samples").glob("epoch_*.png"))
