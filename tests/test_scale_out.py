"""Scale-out paths: a two-process CPU DDP run (gloo) and a two-job ``-m`` sweep."""

import json

import yaml

from conftest import cli


def test_two_process_cpu_ddp_run_finishes(tmp_path):
    result = cli(
        "trainer=ddp_cpu", "debug=smoke", "trainer.devices=2", "trainer.limit_train_batches=4",
        "data.reader.num_pairs=8", f"hydra.run.dir={tmp_path}", timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test"]["psnr"] > 0
    # 6 training pairs split over 2 ranks by the distributed sampler: 3 batches per rank, each a D and
    # a G optimizer step (a single process would take 6 batches, 12 steps)
    assert metrics["global_step"] == 6
    # Lightning's distributed banner goes to stderr, or through the root logger into run.log since the
    # library loggers propagate there
    run_log = (tmp_path / "run.log").read_text() if (tmp_path / "run.log").is_file() else ""
    output = result.stderr + result.stdout + run_log
    assert "world_size: 2" in output or "distributed_backend=gloo" in output


def test_multirun_sweep_writes_one_run_directory_per_job(tmp_path):
    result = cli(
        "-m", "debug=smoke", "data.reader.num_pairs=6", "seed=1,2", f"hydra.sweep.dir={tmp_path}", timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and (p / "metrics.json").is_file())
    assert [p.name for p in runs] == ["0", "1"]
    overrides = [yaml.safe_load((p / ".hydra" / "overrides.yaml").read_text()) for p in runs]
    assert "seed=1" in overrides[0] and "seed=2" in overrides[1]
