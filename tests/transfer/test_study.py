"""``python -m fundus2ffa.transfer``'s study through the composed Hydra config: each task end to end."""

import csv

import pytest
from hydra import compose, initialize_config_dir

from fundus2ffa.config import config_dir, register_resolvers
from fundus2ffa.errors import ConfigError, WeightsError
from fundus2ffa.transfer.study import run_study

TINY = ["trainer.accelerator=cpu", "backbone.inits=[pretrained,random]", "downstream.seeds=[0]", "downstream.data.image_size=32"]


def _run(tmp_path, checkpoint, overrides):
    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("transfer", overrides=[*TINY, f"backbone.checkpoint={checkpoint}", f"paths.output_dir={tmp_path}", *overrides])
    rows = run_study(cfg)
    with (tmp_path / "results.csv").open() as handle:
        assert list(csv.DictReader(handle)) == [{k: str(v) for k, v in row.items()} for row in rows]
    return rows, (tmp_path / "table.md").read_text()


@pytest.mark.parametrize("downstream, extra, metric", [
    ("synthetic_vessels", ["downstream.shots=[1,all]", "downstream.data.num_eyes=6", "downstream.train.steps=2"], "dice"),
    ("synthetic_lesions", ["downstream.shots=[1]", "downstream.data.num_eyes=12", "downstream.train.steps=2",
                           "downstream.modes=[linear_probe,finetune]"], "balanced_accuracy"),
    ("synthetic_retrieval", ["downstream.data.num_eyes=5"], "recall@1"),
])
def test_each_task_end_to_end(tmp_path, video_checkpoint, downstream, extra, metric):
    rows, table = _run(tmp_path, video_checkpoint[0], [f"downstream={downstream}", *extra])
    assert {row["init"] for row in rows} == {"pretrained", "random"}
    assert all(0.0 <= row[metric] <= 1.0 for row in rows)
    assert "| pretrained |" in table and "| random |" in table and metric in table


def test_missing_imagenet_weights_fail_before_training(tmp_path, global_checkpoint):
    with pytest.raises(WeightsError, match="backbone.imagenet.weights"):
        _run(tmp_path, global_checkpoint[0], ["downstream=synthetic_retrieval", "backbone.inits=[pretrained,imagenet]"])
    assert not (tmp_path / "results.csv").exists()


def test_a_missing_data_root_names_the_key(tmp_path, global_checkpoint):
    with pytest.raises(ConfigError, match="downstream.data.root"):
        _run(tmp_path, global_checkpoint[0], ["downstream=vessel_segmentation"])
