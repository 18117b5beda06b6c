"""Checkpoints (issue 8 items 1-3): safe loading on every path, last.ckpt every epoch, atomic writes,
the disk-space check, and test / predict rebuilt from the checkpoint alone.

One tiny 3-epoch run (32 px, ngf 4, non-default overrides) whose validation PSNR is made to peak at
epoch 0 serves the tests that need a trained checkpoint."""

import errno
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.trainer.states import TrainerFn
from PIL import Image

from conftest import REPO, compose_cli, compose_run
from fundus2ffa import checkpoint as ckpt_io
from fundus2ffa.callbacks.checkpoint import RunCheckpoint
from fundus2ffa.errors import CheckpointError, ConfigError
from fundus2ffa.models.gan_module import GANModule
from fundus2ffa.builders import build
from fundus2ffa.run import run

pytestmark = pytest.mark.usefixtures("one_thread")

TRAINED_WITH = ["data.image_size=32", "generator.num_downs=5", "generator.ngf=4", "discriminator.ndf=4"]
BASE = ["debug=smoke", "data.reader.num_pairs=8", *TRAINED_WITH, "model.schedule.constant_epochs=1",
        "model.schedule.decay_epochs=2", "trainer.limit_train_batches=1"]
EPOCHS = 3


def _peaked_early(original):
    """val/psnr of the fit loop made 30 - epoch: it peaks at epoch 0 (best-epoch_0000.ckpt)."""

    def eval_epoch_end(self, stage):
        if stage == "val" and self.trainer.state.fn == TrainerFn.FITTING:
            self._tables.pop(stage, None)
            self.log("val/psnr", 30.0 - self.current_epoch)
            return
        original(self, stage)

    return eval_epoch_end


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GANModule, "_eval_epoch_end", _peaked_early(GANModule._eval_epoch_end))
        run(compose_run([*BASE, f"trainer.max_epochs={EPOCHS}"], out))
    return out


class Evil:
    """Unpickling this runs code: it creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).touch()",))


def _evil_checkpoint(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 0, "payload": Evil(marker)}, path)
    torch.load(path, weights_only=False)  # the payload works when unpickled unsafely ...
    assert marker.exists()
    marker.unlink()  # ... so the checks below mean something
    return path, marker


def test_malicious_checkpoint_runs_nothing_on_predict_test_and_resume(tmp_path):
    evil, marker = _evil_checkpoint(tmp_path)
    inputs = tmp_path / "cf"
    inputs.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(inputs / "a.png")
    paths = {
        "predict": ["task=predict", f"predict.input_dir={inputs}", f"predict.output_dir={tmp_path / 'pred'}"],
        "test": ["task=test"],
        "resume": ["task=train"],
    }
    for name, overrides in paths.items():
        cfg = compose_run(["debug=smoke", "data.reader.num_pairs=8", f"ckpt_path={evil}", *overrides], tmp_path / name)
        with pytest.raises(CheckpointError, match=r"refused to load checkpoint .*evil\.ckpt.*builtins\.exec"):
            run(cfg)
        assert not marker.exists(), name
    from fundus2ffa import loader

    with pytest.raises(CheckpointError, match="refused"):
        loader.load(evil)
    with pytest.raises(CheckpointError, match="refused"):  # Lightning's own loads go through it as well
        ckpt_io.SafeCheckpointIO().load_checkpoint(evil)
    assert not marker.exists() and not (tmp_path / "pred").exists()


def test_last_ckpt_holds_the_final_epoch_after_an_early_peak(trained):
    files = sorted(p.name for p in (trained / "checkpoints").iterdir())
    assert files == ["best-epoch_0000.ckpt", "last.ckpt"]  # save_top_k 1: no pile-up, no temp files
    last = ckpt_io.load_checkpoint(trained / "checkpoints" / "last.ckpt")
    best = ckpt_io.load_checkpoint(trained / "checkpoints" / "best-epoch_0000.ckpt")
    assert last["epoch"] == EPOCHS - 1 and best["epoch"] == 0
    assert last["global_step"] == EPOCHS * 2  # one batch per epoch, G and D steps
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["checkpoint"].endswith("last.ckpt")
    assert (metrics["epoch"], metrics["global_step"]) == (last["epoch"], last["global_step"])
    assert metrics["selected_on"] is None and metrics["validated_on"] == "val"
    # the checkpoint carries its resolved config in plain containers (loaded above with weights_only=True)
    record = last["fundus2ffa"]
    assert record["format"] == 1 and record["model_target"] == "fundus2ffa.models.PairedGAN"
    assert record["config"]["generator"]["ngf"] == 4 and record["config"]["data"]["image_size"] == 32
    assert ckpt_io.checkpoint_config(trained / "checkpoints" / "last.ckpt").data.image_size == 32


def test_test_and_predict_rebuild_from_the_checkpoint_alone(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    # debug=smoke alone would build ngf 8 at 256 px: the checkpoint's settings are used instead
    out = tmp_path / "test"
    results = run(compose_run(["debug=smoke", "task=test", f"ckpt_path={ckpt}"], out))
    metrics = json.loads((out / "metrics.json").read_text())
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert (metrics["epoch"], metrics["global_step"]) == (stored["epoch"], stored["global_step"]) == (EPOCHS - 1, EPOCHS * 2)
    assert metrics["test"]["psnr"] == pytest.approx(results["test"]["psnr"])
    assert "image_size: 32" in (out / "config_resolved.yaml").read_text()

    inputs = tmp_path / "cf"
    inputs.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(inputs / "eye.png")
    pred = compose_run(["debug=smoke", "task=predict", f"ckpt_path={ckpt}", f"predict.input_dir={inputs}"], tmp_path / "p")
    (written,) = run(pred)
    assert Image.open(written).size == (70, 50)


def test_conflicting_overrides_and_wrong_model_are_named(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    try:
        cfg = compose_cli(["debug=smoke", "task=test", f"ckpt_path={ckpt}", "generator.ngf=16"], tmp_path / "a")
        with pytest.raises(ConfigError, match=r"generator\.ngf=16 \(the checkpoint has 4\)"):
            run(cfg)
        cfg = compose_cli(["debug=smoke", "task=test", f"ckpt_path={ckpt}", "model=cyclegan"], tmp_path / "b")
        with pytest.raises(ConfigError, match=r"model\._target_=.*CycleGAN.*the checkpoint has .*PairedGAN"):
            run(cfg)
        # data overrides are applied on top of the checkpoint's data settings
        cfg = compose_cli(["debug=smoke", "task=test", f"ckpt_path={ckpt}", "data.batch_size=2"], tmp_path / "c")
        from fundus2ffa.loader import run_config

        rebuilt = run_config(cfg, ["debug=smoke", "task=test", f"ckpt_path={ckpt}", "data.batch_size=2"])
        assert rebuilt.data.batch_size == 2 and rebuilt.data.image_size == 32 and rebuilt.generator.ngf == 4
    finally:
        HydraConfig.instance().cfg = None
    # resuming into another model class names both classes
    resume = compose_run(["debug=smoke", "model=cyclegan", "data.reader.num_pairs=8", f"ckpt_path={ckpt}"], tmp_path / "r")
    with pytest.raises(ConfigError, match=r"holds a PairedGAN model .* builds a CycleGAN"):
        run(resume)
    # resuming with other shapes names the differing keys
    resume = compose_run([*BASE, "generator.ngf=8", f"ckpt_path={ckpt}"], tmp_path / "s")
    with pytest.raises(ConfigError, match=r"cannot resume from .*last\.ckpt.*model\.generator\.ngf: checkpoint 4, now 8"):
        run(resume)


def _partial_save(exc):
    def save(obj, handle):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise exc

    return save


def test_a_failed_save_keeps_the_previous_file_and_no_temp_files(trained, tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    last = folder / "last.ckpt"
    last.write_bytes((trained / "checkpoints" / "last.ckpt").read_bytes())
    monkeypatch.setattr(torch, "save", _partial_save(RuntimeError("simulated crash mid-save")))
    with pytest.raises(RuntimeError, match="simulated crash"):
        ckpt_io.SafeCheckpointIO().save_checkpoint({"epoch": 99}, str(last))
    monkeypatch.setattr(torch, "save", _partial_save(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(CheckpointError, match=rf"no space left in {folder} while writing the checkpoint last\.ckpt.*previous last\.ckpt .*unchanged"):
        ckpt_io.atomic_save({"epoch": 99}, last)
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    assert ckpt_io.load_checkpoint(last)["epoch"] == EPOCHS - 1


def test_a_kill_during_save_leaves_last_ckpt_loadable_and_the_next_start_removes_the_temp_file(trained, tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    last = folder / "last.ckpt"
    last.write_bytes((trained / "checkpoints" / "last.ckpt").read_bytes())
    script = textwrap.dedent(f"""
        import sys, time, torch
        from fundus2ffa import checkpoint
        def stuck(obj, handle):
            handle.write(b"PK" + b"x" * 4096); handle.flush(); print("writing", flush=True); time.sleep(120)
        torch.save = stuck
        checkpoint.atomic_save({{"epoch": 99}}, {str(last)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()  # SIGKILL: no handler runs
    proc.wait(timeout=30)
    orphans = [p for p in folder.iterdir() if p.name != "last.ckpt"]
    assert len(orphans) == 1 and orphans[0].name.startswith(".last.ckpt.")
    assert ckpt_io.load_checkpoint(last)["epoch"] == EPOCHS - 1
    # the next training start in that folder removes it
    callback = RunCheckpoint(dirpath=str(folder), min_free_checkpoints=0)
    callback.on_fit_start(SimpleNamespace(is_global_zero=True, ckpt_path=str(last), optimizers=[]), torch.nn.Linear(2, 2))
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]


def test_too_little_disk_space_fails_before_training_naming_folder_and_bytes(tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "run"
    cfg = compose_run([*BASE, "trainer.max_epochs=1"], out)
    model = build(cfg.model, "model", _recursive_=False)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    needed = 2 * (state + 2 * params)  # two checkpoints of weights + Adam's two moments
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=needed - 1))
    with pytest.raises(CheckpointError, match=rf"disk space for checkpoints in {out / 'checkpoints'}: {needed - 1} bytes free, {needed} bytes needed"):
        run(cfg)
    assert not list(out.rglob("*.ckpt")) and not (out / "metrics.json").exists()


class _CtrlCWhilePickled:
    """Sends this process SIGINT while torch.save pickles it (mid-save), and unpickles as an empty OrderedDict."""

    def __reduce__(self):
        import collections
        import os
        import signal

        os.kill(os.getpid(), signal.SIGINT)
        return collections.OrderedDict, ()


def test_ctrl_c_during_a_checkpoint_save_waits_for_the_save(tmp_path):
    """A KeyboardInterrupt inside torch.save broke its zip writer ("file write failed", read as a full disk);
    now the save completes, the file loads, and the interrupt is raised after it."""
    from fundus2ffa.checkpoint import atomic_save

    target = tmp_path / "last.ckpt"
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, as in a foreground run
    try:
        with pytest.raises(KeyboardInterrupt):
            atomic_save({"state_dict": {"w": torch.ones(3)}, "marker": _CtrlCWhilePickled(), "after": torch.arange(4)}, target)
    finally:
        signal.signal(signal.SIGINT, inherited)
    loaded = torch.load(target, weights_only=True)
    assert torch.equal(loaded["after"], torch.arange(4)) and torch.equal(loaded["state_dict"]["w"], torch.ones(3))
    assert not [p for p in tmp_path.iterdir() if p.name != "last.ckpt"]
