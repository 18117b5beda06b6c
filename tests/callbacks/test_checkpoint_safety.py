"""Nothing lost (issue 21 items 1, 4 and 7): no start deletes a checkpoint it did not write, a fresh run
never writes into another run's checkpoints, a full disk is named, and SIGTERM / SIGINT during training
leave a last.ckpt that resumes.

Real fits (``run`` on the composed config) and real command lines (``python -m fundus2ffa.run`` in a
subprocess) on tiny synthetic data (32 px, ngf 4)."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lightning.pytorch.trainer.states import TrainerFn

from conftest import REPO, compose_run
from fundus2ffa import checkpoint as ckpt_io
from fundus2ffa.errors import CheckpointError, ConfigError
from fundus2ffa.models.gan_module import GANModule
from fundus2ffa.run import run
from fundus2ffa.writers import TEMP_SUFFIX

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["data.image_size=32", "generator.num_downs=5", "generator.ngf=4", "discriminator.ndf=4"]
BASE = ["debug=smoke", "data.reader.num_pairs=8", *TINY, "model.schedule.constant_epochs=2",
        "model.schedule.decay_epochs=1", "trainer.limit_train_batches=1"]


def _rising_psnr(original):
    """val/psnr of the fit loop made 20 + epoch: every epoch is a new best."""

    def eval_epoch_end(self, stage):
        if stage == "val" and self.trainer.state.fn == TrainerFn.FITTING:
            self._tables.pop(stage, None)
            self.log("val/psnr", 20.0 + self.current_epoch)
            return
        original(self, stage)

    return eval_epoch_end


def _epoch(path: Path) -> int:
    return int(ckpt_io.load_checkpoint(path, mmap=True)["epoch"])


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_resume_keeps_a_best_file_newer_than_the_last_ckpt_it_resumes_from(tmp_path, monkeypatch):
    """A kill between saving best-epoch_0002.ckpt and rewriting last.ckpt leaves last.ckpt at epoch 1;
    resuming from it must not delete the newer best file (it did: 'untracked best file'). Full best files
    (Lightning's order: the best file first, then last.ckpt); light best files are linked after last.ckpt
    is written, so that kill is tested below for them."""
    from fundus2ffa.callbacks.checkpoint import RunCheckpoint

    out = tmp_path / "run"
    folder = out / "checkpoints"
    monkeypatch.setattr(GANModule, "_eval_epoch_end", _rising_psnr(GANModule._eval_epoch_end))
    original = RunCheckpoint._save_last_checkpoint

    def killed_at_epoch_2(self, trainer, candidates):
        if trainer.current_epoch == 2:
            raise RuntimeError("killed after best-epoch_0002.ckpt, before last.ckpt")
        original(self, trainer, candidates)

    monkeypatch.setattr(RunCheckpoint, "_save_last_checkpoint", killed_at_epoch_2)
    full = "callbacks.model_checkpoint.best_files=full"
    with pytest.raises(RuntimeError, match="killed after"):
        run(compose_run([*BASE, "trainer.max_epochs=3", full], out))
    monkeypatch.setattr(RunCheckpoint, "_save_last_checkpoint", original)
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch_0002.ckpt", "last.ckpt"]
    assert _epoch(folder / "last.ckpt") == 1 and _epoch(folder / "best-epoch_0002.ckpt") == 2
    newer_best = (folder / "best-epoch_0002.ckpt").read_bytes()

    # resume in the same folder from the older last.ckpt; epoch 2 is a new best again
    run(compose_run([*BASE, "trainer.max_epochs=3", full, f"ckpt_path={folder / 'last.ckpt'}"], out))
    assert (folder / "best-epoch_0002.ckpt").read_bytes() == newer_best  # kept, untouched
    assert _epoch(folder / "last.ckpt") == 2
    # the resumed run's own best went beside it (Lightning's version counter), not over it
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch_0002-v1.ckpt", "best-epoch_0002.ckpt", "last.ckpt"]


def test_a_run_removes_the_best_files_it_wrote_and_superseded(tmp_path, monkeypatch):
    monkeypatch.setattr(GANModule, "_eval_epoch_end", _rising_psnr(GANModule._eval_epoch_end))
    out = tmp_path / "run"
    run(compose_run([*BASE, "trainer.max_epochs=3"], out))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best-epoch_0002.ckpt", "last.ckpt"]


def test_a_fresh_run_in_a_folder_of_checkpoints_is_refused_and_deletes_nothing(tmp_path):
    out = tmp_path / "run"
    run(compose_run([*BASE, "trainer.max_epochs=1"], out))
    folder = out / "checkpoints"
    before = _snapshot(folder)
    assert "last.ckpt" in before
    with pytest.raises(ConfigError, match=rf"run folder {out} already holds files of another run \(checkpoints, "
                                          r".*nothing was written.*ckpt_path=.*last\.ckpt"):
        run(compose_run([*BASE, "trainer.max_epochs=1"], out))
    # the same run folder is refused by run() itself (tests/test_run_folders.py); a new run folder whose
    # checkpoint folder is the old run's meets the checkpoint callback's own check
    with pytest.raises(CheckpointError, match=rf"checkpoint folder {folder} already holds 2 checkpoint\(s\) of another run "
                                              r".*nothing was written.*ckpt_path=.*last\.ckpt"):
        run(compose_run([*BASE, "trainer.max_epochs=1", f"callbacks.model_checkpoint.dirpath={folder}"], tmp_path / "new_run"))
    assert _snapshot(folder) == before
    # the checkpoint callback refuses it too, should a caller bypass run(): a fresh fit into that folder
    from fundus2ffa.callbacks.checkpoint import RunCheckpoint

    with pytest.raises(CheckpointError, match=rf"checkpoint folder {folder} already holds 2 checkpoint\(s\) of another run"):
        RunCheckpoint(dirpath=str(folder)).check_folder(folder, None)
    assert _snapshot(folder) == before


def _cli(*args, **kwargs):
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO), **kwargs.pop("env", {})}
    # Ctrl+C reaches the run whatever this process inherited (a shell's background job ignores SIGINT, and
    # its children would too: the SIGINT test then trained all 500 epochs and exited 0)
    return subprocess.Popen([sys.executable, "-m", "fundus2ffa.run", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs)


def test_a_fresh_cli_run_in_an_occupied_run_folder_is_refused_before_writing(tmp_path):
    folder = tmp_path / "old_run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"the only checkpoint of that run")
    (folder / "metrics.json").write_text("{}")
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    proc = _cli("debug=smoke", f"hydra.run.dir={folder}")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert f"run folder {folder} already holds files of another run (checkpoints, metrics.json)" in stderr
    assert f"ckpt_path={folder / 'checkpoints' / 'last.ckpt'}" in stderr and "Traceback" not in stderr
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before  # no .hydra, no run.log


def test_a_full_disk_during_training_names_the_folder_and_keeps_the_checkpoints(tmp_path, monkeypatch):
    """The second save meets a full disk: the file write fails with ENOSPC (which torch's zip writer turns
    into 'RuntimeError: ... unexpected pos'); the error names the folder and the bytes needed, and the
    epoch-0 last.ckpt stays intact."""
    out = tmp_path / "run"
    folder = out / "checkpoints"
    saves = []
    real_open = open

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def opener(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if "x" in mode and str(path).endswith(TEMP_SUFFIX) and Path(path).name.startswith(".last.ckpt."):
            saves.append(path)
            if len(saves) > 1:  # epoch 0's last.ckpt fits (its best file is a link to it); then the disk is full
                return FullDisk(handle)
        return handle

    monkeypatch.setattr(ckpt_io, "open", opener, raising=False)
    with pytest.raises(CheckpointError) as caught:
        run(compose_run([*BASE, "trainer.max_epochs=3"], out))
    message = str(caught.value)
    assert message.startswith(f"no space left in {folder}: ") and " bytes needed to write " in message
    assert "(epoch 1," in message and "intact" in message and f"ckpt_path={folder / 'last.ckpt'}" in message
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch_0000.ckpt", "last.ckpt"]  # no temp file left
    assert _epoch(folder / "last.ckpt") == 0


def _wait_for(path: Path, proc, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.is_file():
        if proc.poll() is not None:
            raise AssertionError(f"training ended before {path} appeared:\n{proc.stderr.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.2)


TRAIN = ["debug=smoke", "data.reader.num_pairs=8", *TINY, "trainer.limit_train_batches=2", "callbacks.samples=null"]


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 1)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_training_writes_last_ckpt_and_a_resume_completes(tmp_path, signum, status):
    first = tmp_path / "first"
    proc = _cli(*TRAIN, "trainer.max_epochs=500", f"hydra.run.dir={first}")
    last = first / "checkpoints" / "last.ckpt"
    _wait_for(last, proc)
    at_signal = _epoch(last)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == status, stderr[-3000:]
    log = (first / "run.log").read_text()
    assert "received: stopped at epoch" in log and f"Resume with ckpt_path={last}" in log
    stopped = ckpt_io.load_checkpoint(last, mmap=True)
    assert stopped["epoch"] >= at_signal and stopped["global_step"] > 0
    assert not [p for p in last.parent.iterdir() if p.name.endswith(TEMP_SUFFIX)]

    # the resume (wherever its run folder is) continues from that state and finishes
    epochs = int(stopped["epoch"]) + 2
    resumed = _cli(*TRAIN, f"trainer.max_epochs={epochs}", f"ckpt_path={last}", env={"FUNDUS2FFA_ROOT": str(tmp_path / "root")})
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-3000:]
    [metrics] = list((tmp_path / "root").rglob("metrics.json"))
    final = ckpt_io.load_checkpoint(metrics.parent / "checkpoints" / "last.ckpt", mmap=True)
    assert final["epoch"] == epochs - 1 and final["global_step"] > stopped["global_step"]
