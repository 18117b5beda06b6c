"""experiment=kamran2020: the three columns compose as documented, and a run reports FID/KID that the
report command puts beside the paper's numbers."""

import json

import pytest

import fundus2ffa.weights
from conftest import cli, compose_run
from fundus2ffa import report

VARIANTS = {
    "fundus2angio": ("fundus2ffa.models.coarse_fine_gan.CoarseFineGAN", "CoarseFineGenerator"),
    "pix2pixhd": ("fundus2ffa.models.PairedGAN", "GlobalGenerator"),
    "pix2pix": ("fundus2ffa.models.PairedGAN", "UNetGenerator"),
}
SMOKE_DATA = ["data.reader.train_ids=[abnormal/1,abnormal/3,normal/2]", "data.reader.num_test=2",
              "data.image_size=128", "data.num_workers=0", "data.train_repeats=2"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variants_compose_with_their_model_the_paper_data_and_fid(variant):
    cfg = compose_run([f"experiment=kamran2020/{variant}", "data.reader.root=/data/isfahan"])
    model, generator = VARIANTS[variant]
    assert cfg.model._target_ == model and cfg.generator._target_.endswith(generator)
    assert cfg.data.reader._target_.endswith("IsfahanFundus2Angio") and cfg.data.eval_transform.crop == "quadrants"
    assert cfg.callbacks.image_set_metrics.stages == ["test"] and "model_checkpoint" in cfg.callbacks
    assert cfg.report.column == variant and variant in cfg.report.reported.isfahan_fundus2angio.fid
    if variant != "fundus2angio":
        assert cfg.data.batch_size == 1 and cfg.data.train_repeats == 50  # 850 crops per epoch
    if variant == "pix2pixhd":
        assert cfg.loss.vgg.imagenet_norm is False and cfg.model.update_order == "g_first"
    if variant == "pix2pix":
        assert cfg.generator.num_downs == 9  # U-Net for 512 px crops


def test_a_run_reports_fid_and_kid_beside_the_paper(isfahan_root, tmp_path):
    fundus2ffa.weights.fetch("fid_inception")
    out = tmp_path / "sweep" / "0"
    result = cli("experiment=kamran2020/pix2pixhd", "debug=smoke", f"data.reader.root={isfahan_root}", *SMOKE_DATA,
                 "data.eval_batch_size=2", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["fid_count"] == 2 and test["kid_subset_size"] == 2  # 1 smoke test batch of 2 quadrant crops
    assert test["fid"] > 0 and test["kid"] > 0
    table = report.main([str(tmp_path / "sweep"), "--metrics", "fid,kid"])
    assert "| fid (paper) | 42.80 |" in table and "| kid |" in table
