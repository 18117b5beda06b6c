"""Run folders never collide (issue 8 item 4): two runs started together get two folders, each with its
own config."""

import subprocess
import sys

import yaml

from conftest import REPO


def test_two_runs_started_together_get_two_folders(tmp_path):
    env = {"FUNDUS2FFA_ROOT": str(tmp_path), "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    # each run fails right after Hydra made its folder and wrote its config (the checkpoint is missing)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "fundus2ffa.run", "task=test", f"ckpt_path={tmp_path / 'missing.ckpt'}", f"seed={seed}"],
            cwd=REPO, env={**__import__("os").environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for seed in (1, 2)
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode != 0 and "missing.ckpt does not exist" in stderr
    folders = sorted((tmp_path / "outputs" / "test" / "runs").iterdir())
    assert len(folders) == 2
    seeds = sorted(yaml.safe_load((f / ".hydra" / "config.yaml").read_text())["seed"] for f in folders)
    assert seeds == [1, 2]  # each folder holds its own run's config
    stamps = [f.name.rsplit("_", 1) for f in folders]
    assert all(len(suffix) == 6 for _, suffix in stamps) and stamps[0][1] != stamps[1][1]
