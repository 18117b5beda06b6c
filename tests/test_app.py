"""The web demo's pieces without a browser (the browser round trip: tests/test_browser.py)."""

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from conftest import compose_run
from fundus2ffa.app import blend, checkpoint_paths, fov_overlay, load_config, translate_upload
from fundus2ffa.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_config_errors_name_the_key_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="add ckpt_path="):
        load_config([])
    with pytest.raises(ConfigError, match="keys of conf/app.yaml"):
        load_config(["ckpt_path=a.ckpt", "prot=1"])
    with pytest.raises(ConfigError, match=f"ckpt_path={tmp_path / 'missing.ckpt'} does not exist"):
        checkpoint_paths(load_config([f"ckpt_path=[{tmp_path / 'missing.ckpt'}]"]))
    cfg = load_config(["ckpt_path=x.ckpt"])
    assert cfg.host == "127.0.0.1" and cfg.share_on_network is False  # loopback unless asked


def test_blend_and_fov_overlay():
    cf = np.zeros((40, 40, 3), np.uint8)
    cf[8:32, 8:32] = (200, 100, 50)
    ffa = np.full((40, 40), 100, np.uint8)
    np.testing.assert_array_equal(blend(cf, ffa, 0.0), cf)
    np.testing.assert_array_equal(blend(cf, ffa, 1.0), np.repeat(ffa[..., None], 3, axis=2))
    assert blend(cf, ffa, 0.5)[20, 20].tolist() == [150, 100, 75]
    fov = np.zeros((40, 40), np.uint8)
    fov[8:32, 8:32] = 1
    overlay = fov_overlay(cf, fov)
    assert overlay[8, 20].tolist() == [0, 255, 0] and overlay[20, 20].tolist() == [200, 100, 50]


def _video_model():
    cfg = compose_run(["model=fundus2video", "data=synthetic_video", "pretrained.vgg19=random", "generator.ngf=4",
                       "generator.n_blocks=1", "generator.kba_hidden=8", "discriminator.ndf=4"])
    return instantiate(OmegaConf.create(OmegaConf.to_yaml(cfg.model, resolve=True)), _recursive_=False).eval()


def test_video_upload_gives_frames_png_and_mp4_at_the_input_size(tmp_path):
    from fundus2ffa.data.synthetic.retina import synthesize_eye

    upload = tmp_path / "eye.jpg"
    Image.fromarray(synthesize_eye(1, size=40, width=56).cf).save(upload)
    from fundus2ffa.inference.translator import Translator, settings_of

    cfg = load_config(["ckpt_path=x.ckpt", "predict.mode=resize", "predict.image_size=32", "predict.num_frames=4"])
    translator = Translator.for_model(_video_model(), {"resize": "square", "size": 32}, settings_of(cfg.predict))
    result = translate_upload(translator, upload, cfg, tmp_path / "out")
    assert len(result.frames) == 4 and all(f.shape == (40, 56) for f in result.frames)
    assert result.mp4.stat().st_size > 0 and np.asarray(Image.open(result.png)).shape == (40, 56)
    np.testing.assert_array_equal(np.asarray(Image.open(result.png)), result.frames[-1])


def test_bad_uploads_are_refused_with_the_file_name(tmp_path):
    cfg = load_config(["ckpt_path=x.ckpt", "predict.image_size=32"])
    grey = tmp_path / "angiogram.png"
    Image.fromarray(np.full((20, 20), 90, np.uint8)).save(grey)
    with pytest.raises(DataError, match="angiogram.png .*greyscale.*allow_grey_cf=true"):
        translate_upload(None, grey, cfg, tmp_path / "out")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(ConfigError, match="notes.txt is not a JPEG, PNG or TIFF"):
        translate_upload(None, notes, cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written for a refused upload


class _Payload:
    """Unpickling this would run code: what a crafted checkpoint does."""

    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_a_checkpoint_with_code_is_refused_before_anything_runs(tmp_path, monkeypatch):
    from fundus2ffa.app import load_models
    from fundus2ffa.errors import CheckpointError

    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload()}, bad)
    with pytest.raises(CheckpointError, match=f"refused to load checkpoint {bad}"):
        load_models([bad], torch.device("cpu"))
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()


def test_the_demo_prints_its_url_when_ready_and_serves_it(tmp_path):
    """The real command: one line says where the demo listens (loopback) and how long the start took; the
    page answers there; Ctrl+C stops it."""
    import os
    import re
    import signal
    import socket
    import subprocess
    import sys
    import threading
    import urllib.request

    from conftest import REPO, tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "tiny.ckpt")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fundus2ffa.app", f"ckpt_path={ckpt}", f"port={port}", "device=cpu"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=240)
    try:
        assert lines and lines[0], proc.stderr.read() if proc.poll() is not None else "no line within 240 s"
        match = re.fullmatch(r"fundus2ffa demo ready at (http://\S+) \(started in ([0-9.]+) s; Ctrl\+C stops it\)\n", lines[0])
        assert match, lines[0]
        url = match.group(1)
        assert url.startswith(f"http://127.0.0.1:{port}") and float(match.group(2)) > 0
        with urllib.request.urlopen(url, timeout=60) as page:
            assert page.status == 200 and "fundus2ffa" in page.read().decode("utf-8", "replace")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode is not None


def test_a_native_scale_upload_raises_no_numpy_warning(tmp_path):
    """PIL's arrays are read-only; nothing on the way to the generator hands one to torch.from_numpy."""
    import warnings

    from conftest import tiny_checkpoint
    from fundus2ffa.app import load_models
    from fundus2ffa.data.synthetic.retina import synthesize_eye

    ckpt = tiny_checkpoint(tmp_path / "tiny.ckpt")
    upload = tmp_path / "eye.png"
    Image.fromarray(synthesize_eye(2, size=64, width=96).cf).save(upload)
    cfg = load_config([f"ckpt_path={ckpt}", "predict.mode=native", "predict.multiple=32"])
    (translator,) = load_models([ckpt], torch.device("cpu"), cfg).values()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = translate_upload(translator, upload, cfg, tmp_path / "out")
    assert result.ffa.shape == (64, 96)
    assert not [w for w in caught if "not writable" in str(w.message)], [str(w.message) for w in caught]
