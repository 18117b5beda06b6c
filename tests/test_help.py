"""One help per command (issue 23 items 6 and 7): every ``python -m fundus2ffa.<command> --help`` exits 0, names
its own command, says what it does and gives an example; the Hydra entries list their own config groups with
the defaults (run no longer lists transfer's ``downstream``) and their keys with defaults; ``--help`` and
``--cfg job`` of the Hydra entries import neither torch nor Lightning (what made them take 6.6 s)."""

import os
import subprocess
import sys

import pytest

from conftest import REPO

# command -> a phrase of what it does, from its help
COMMANDS = {
    "fundus2ffa.run": "train, test or predict",
    "fundus2ffa.transfer": "downstream transfer of a trained generator",
    "fundus2ffa.app": "the web demo",
    "fundus2ffa.export": "Export a trained generator",
    "fundus2ffa.report": "Collect the runs of a sweep",
    "fundus2ffa.results_page": "results page of a run",
    "fundus2ffa.register": "Register raw CF/FFA pairs",
    "fundus2ffa.bench": "Training-iteration benchmark",
    "fundus2ffa.inference.bench": "Prediction speed and memory",
    "fundus2ffa.registration.bench": "Registration accuracy and speed",
    "fundus2ffa.weights": "Pretrained weights",
    "fundus2ffa.data.synthetic": "Export the synthetic retina",
    "fundus2ffa.transfer.report": "The few-shot table",
}
ENV = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}


def _python(*args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_its_own_help(command):
    result = _python("-m", command, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    assert f"python -m {command}" in text and COMMANDS[command] in text
    assert "example" in text.lower() and "Traceback" not in text + result.stderr


def _group_line(text: str, group: str) -> str:
    """The line of ``group`` in the help's config-group section."""
    section = text.split("== Config groups", 1)[1].split("\n", 1)[1].split("\n==", 1)[0] if "== Config groups" in text else ""
    return next((line.strip() for line in section.splitlines() if line.strip().startswith(f"{group}: ")), "")


def test_the_hydra_entries_list_their_own_groups_and_keys_with_defaults():
    run = _python("-m", "fundus2ffa.run", "--help").stdout
    assert _group_line(run, "model").endswith("(default: pix2pix)") and "saliency_cgan" in _group_line(run, "model")
    assert _group_line(run, "loss").endswith("(default: gan, l1)")
    assert not _group_line(run, "downstream")  # transfer's, not training's
    assert "eval_ckpt: last" in run and "task: train" in run  # conf/run.yaml's keys with their defaults
    transfer = _python("-m", "fundus2ffa.transfer", "--help").stdout
    assert _group_line(transfer, "downstream").endswith("(default: synthetic_vessels)")
    assert not _group_line(transfer, "model") and "fundus2ffa.run [group" not in transfer
    assert "inits: [pretrained, random]" in transfer


PROBE = """
import atexit, runpy, sys
atexit.register(lambda: print("LOADED", sorted(m for m in ("torch", "lightning") if m in sys.modules), file=sys.stderr))
module, sys.argv = sys.argv[1], ["x", *sys.argv[2:]]
runpy.run_module(module, run_name="__main__")
"""


@pytest.mark.parametrize("command", ["fundus2ffa.run", "fundus2ffa.transfer"])
@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"]])
def test_help_and_cfg_job_import_neither_torch_nor_lightning(command, args):
    result = _python("-c", PROBE, command, *args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LOADED []" in result.stderr, result.stderr[-500:]
    assert result.stdout.strip()
