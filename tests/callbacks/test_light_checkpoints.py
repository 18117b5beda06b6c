"""Light best checkpoints (issue 23 item 1): a best-K file holds what evaluation needs (generator, config;
no optimizer or scheduler state, no discriminator unless asked), is a hard link to last.ckpt while they are
the same epoch, and still serves task=test (the real command line), task=predict and the loader; resuming
from it is refused, naming last.ckpt; last.ckpt keeps everything.

Real fits (``run`` on the composed config, 32 px, ngf 4) with the validation PSNR of the fit loop replaced
by a chosen sequence, so which epoch is best is known."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.trainer.states import TrainerFn
from PIL import Image

from conftest import REPO, compose_cli, compose_run
from fundus2ffa import checkpoint as ckpt_io
from fundus2ffa import loader
from fundus2ffa.errors import CheckpointError
from fundus2ffa.models.gan_module import GANModule
from fundus2ffa.run import run

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["data.image_size=32", "generator.num_downs=5", "generator.ngf=4", "discriminator.ndf=4"]
BASE = ["debug=smoke", "data.reader.num_pairs=8", *TINY, "model.schedule.constant_epochs=2",
        "model.schedule.decay_epochs=1", "trainer.limit_train_batches=1"]


def _scripted_psnr(monkeypatch, scores: list[float]) -> None:
    """val/psnr of epoch e in the fit loop is scores[e] (evaluation outside fitting is real)."""
    original = GANModule._eval_epoch_end

    def eval_epoch_end(self, stage):
        if stage == "val" and self.trainer.state.fn == TrainerFn.FITTING:
            self._tables.pop(stage, None)
            self.log("val/psnr", scores[self.current_epoch])
            return
        original(self, stage)

    monkeypatch.setattr(GANModule, "_eval_epoch_end", eval_epoch_end)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def early_best(tmp_path_factory) -> Path:
    """A 3-epoch run whose best validation epoch is the first (so its best file parted from last.ckpt)."""
    out = tmp_path_factory.mktemp("light") / "run"
    patch = pytest.MonkeyPatch()
    try:
        _scripted_psnr(patch, [22.0, 20.0, 21.0])
        run(compose_run([*BASE, "trainer.max_epochs=3"], out))
    finally:
        patch.undo()
    return out


def test_a_best_file_holds_no_optimizer_state_and_no_discriminator(early_best):
    folder = early_best / "checkpoints"
    assert _names(folder) == ["best-epoch_0000.ckpt", "last.ckpt"]
    best, last = folder / "best-epoch_0000.ckpt", folder / "last.ckpt"
    light = ckpt_io.load_checkpoint(best, mmap=True)
    full = ckpt_io.load_checkpoint(last, mmap=True)
    assert light["epoch"] == 0 and full["epoch"] == 2
    assert "optimizer_states" not in light and "lr_schedulers" not in light
    assert full["optimizer_states"] and full["lr_schedulers"]  # last.ckpt keeps everything for resume
    assert not [k for k in light["state_dict"] if k.startswith("discriminator.")]
    assert [k for k in full["state_dict"] if k.startswith("discriminator.")]
    generator = {k for k in full["state_dict"] if k.startswith("generator.")}
    assert generator and generator <= set(light["state_dict"])
    assert light[ckpt_io.LIGHT_KEY]["dropped_modules"] == ["discriminator"]
    assert light["fundus2ffa"]["config"]["model"]["_target_"] == full["fundus2ffa"]["config"]["model"]["_target_"]
    assert not best.samefile(last) and best.stat().st_size < last.stat().st_size / 2


def test_the_loader_rebuilds_the_best_epochs_generator(early_best):
    best = early_best / "checkpoints" / "best-epoch_0000.ckpt"
    stored = ckpt_io.load_checkpoint(best)["state_dict"]
    loaded = loader.load(best)
    assert loaded.epoch == 0
    for key, value in loaded.model.generator.state_dict().items():
        assert torch.equal(value, stored[f"generator.{key}"]), key
    last = ckpt_io.load_checkpoint(early_best / "checkpoints" / "last.ckpt")["state_dict"]
    assert any(not torch.equal(stored[k], last[k]) for k in stored if k.startswith("generator."))  # another epoch's


def test_task_test_on_a_best_file_prints_its_metrics(early_best, tmp_path):
    """The real command line: task=test on the light best file evaluates it and prints the metrics table
    (the model's rows and the baselines) at the end."""
    best = early_best / "checkpoints" / "best-epoch_0000.ckpt"
    out = tmp_path / "test_run"
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "fundus2ffa.run", "task=test", f"ckpt_path={best}", "logger=csv",
                             f"hydra.run.dir={out}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoint"] == str(best) and metrics["epoch"] == 0
    console = result.stdout + result.stderr
    table = console[console.index("metrics of "):]
    test_row = next(line for line in table.splitlines() if line.startswith("this run (test)"))
    assert f"{metrics['test']['psnr']:.4g}" in test_row and f"{metrics['test']['ssim']:.4g}" in test_row
    for name, values in metrics["baselines"].items():
        if name != "fit":
            assert any(line.startswith(f"baseline {name}") and f"{values['psnr']:.4g}" in line for line in table.splitlines())
    assert "baseline fit" not in table
    # the few lines that matter instead of the config tree (which is saved)
    assert f"task=test: checkpoint {best} (epoch 0" in console and "weights only" in console
    assert "CONFIG" not in result.stdout and "CONFIG" in (out / "config_tree.log").read_text()


def test_task_predict_on_a_best_file_writes_images(early_best, tmp_path):
    from fundus2ffa.data.synthetic.retina import synthesize_eye

    best = early_best / "checkpoints" / "best-epoch_0000.ckpt"
    inputs = tmp_path / "cf"
    inputs.mkdir()
    Image.fromarray(synthesize_eye(3, size=40, width=48).cf).save(inputs / "eye.png")
    try:
        run(compose_cli(["debug=smoke", "task=predict", f"ckpt_path={best}", f"predict.input_dir={inputs}",
                         f"predict.output_dir={tmp_path / 'pred'}"], tmp_path / "predict_run"))
    finally:
        HydraConfig.instance().cfg = None
    image = np.asarray(Image.open(tmp_path / "pred" / "eye.png"))
    assert image.shape == (40, 48)


def test_resuming_from_a_best_file_is_refused_naming_last_ckpt(early_best, tmp_path):
    best = early_best / "checkpoints" / "best-epoch_0000.ckpt"
    last = early_best / "checkpoints" / "last.ckpt"
    before = {p.name: p.stat().st_mtime_ns for p in (early_best / "checkpoints").iterdir()}
    try:
        with pytest.raises(CheckpointError, match=rf"cannot resume training from {best}: .*no optimizer_states.*"
                                                  rf"ckpt_path={last}"):
            run(compose_cli([*BASE, "trainer.max_epochs=4", f"ckpt_path={best}"], tmp_path / "resumed"))
    finally:
        HydraConfig.instance().cfg = None
    assert {p.name: p.stat().st_mtime_ns for p in (early_best / "checkpoints").iterdir()} == before


def test_a_best_file_of_the_last_epoch_is_a_hard_link_to_last_ckpt(tmp_path, monkeypatch):
    """One file on disk, two names, while best and last are the same epoch; superseded bests are gone."""
    _scripted_psnr(monkeypatch, [20.0, 21.0, 22.0])
    out = tmp_path / "run"
    run(compose_run([*BASE, "trainer.max_epochs=3"], out))
    folder = out / "checkpoints"
    assert _names(folder) == ["best-epoch_0002.ckpt", "last.ckpt"]
    assert (folder / "best-epoch_0002.ckpt").samefile(folder / "last.ckpt")
    assert (folder / "last.ckpt").stat().st_nlink == 2


def test_without_hard_links_the_best_file_is_written_light(tmp_path, monkeypatch):
    import fundus2ffa.callbacks.checkpoint as callback

    monkeypatch.setattr(callback, "hard_link", lambda source, target: False)  # a filesystem without links
    _scripted_psnr(monkeypatch, [20.0, 21.0])
    out = tmp_path / "run"
    run(compose_run([*BASE, "trainer.max_epochs=2"], out))
    folder = out / "checkpoints"
    assert _names(folder) == ["best-epoch_0001.ckpt", "last.ckpt"]
    best = ckpt_io.load_checkpoint(folder / "best-epoch_0001.ckpt", mmap=True)
    assert ckpt_io.is_light(best) and "optimizer_states" not in best and best["epoch"] == 1
    assert not (folder / "best-epoch_0001.ckpt").samefile(folder / "last.ckpt")


def test_a_kill_between_last_ckpt_and_its_best_link_loses_nothing_and_resumes(tmp_path, monkeypatch):
    """Killed after writing epoch 2's last.ckpt, before linking its best file: the epoch-1 best stays; a resume
    forgets the best file that never appeared, keeps the earlier process's file and links its own best."""
    import fundus2ffa.callbacks.checkpoint as callback

    _scripted_psnr(monkeypatch, [20.0, 21.0, 22.0, 23.0])
    real_link = callback.hard_link
    out = tmp_path / "run"
    folder = out / "checkpoints"

    def killed_at_epoch_2(source, target):
        if Path(target).name == "best-epoch_0002.ckpt":
            raise RuntimeError("killed after last.ckpt, before its best link")
        return real_link(source, target)

    monkeypatch.setattr(callback, "hard_link", killed_at_epoch_2)
    with pytest.raises(RuntimeError, match="killed after last.ckpt"):
        run(compose_run([*BASE, "trainer.max_epochs=3"], out))
    monkeypatch.setattr(callback, "hard_link", real_link)
    assert _names(folder) == ["best-epoch_0001.ckpt", "last.ckpt"]
    assert ckpt_io.load_checkpoint(folder / "last.ckpt", mmap=True)["epoch"] == 2
    kept = (folder / "best-epoch_0001.ckpt").read_bytes()

    run(compose_run([*BASE, "trainer.max_epochs=4", f"ckpt_path={folder / 'last.ckpt'}"], out))
    assert _names(folder) == ["best-epoch_0001.ckpt", "best-epoch_0003.ckpt", "last.ckpt"]
    assert (folder / "best-epoch_0001.ckpt").read_bytes() == kept  # the earlier process's file, untouched
    assert (folder / "best-epoch_0003.ckpt").samefile(folder / "last.ckpt")
