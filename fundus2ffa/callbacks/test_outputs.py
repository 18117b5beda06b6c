"""Per-image test outputs: CF | real FFA | generated FFA | absolute error, written once per test image.

pix2pix's ``test.py`` writes every test image's input, target and output for its HTML page; here the
test step already translated each image (``_eval_step`` returns ``{"fake": ...}``), so this callback
only turns that batch into files under ``<run>/results/`` (the layout is
:mod:`fundus2ffa.results_page`'s, which references them from ``index.html``):

- still images: ``images/<stem>_cf.png``, ``_real.png``, ``_fake.png`` and ``_error.png``, the
  absolute error |generated - real| on a colour map (black 0 -> yellow at half the intensity range or
  more; :func:`error_map`);
- videos (the fake is N x T x 1 x H x W): ``images/<stem>_cf.png``, ``images/<stem>_strip.png`` (real
  frames over generated frames, CF first) and ``videos/<stem>.mp4`` (the generated video, H.264).

Only ``trainer.test`` writes (``task=test`` and the final test after training); every rank writes its
own images, so the files do not depend on a gather.
"""

from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch

from fundus2ffa.callbacks.video_samples import strip_rows
from fundus2ffa.writers import write_video
from fundus2ffa.writers import write_png
from fundus2ffa.metrics.convert import to_uint8
from fundus2ffa.results_page import result_files

ERROR_FULL_SCALE = 0.5
"""Absolute error (as a fraction of the intensity range) shown at the top of the colour map."""


def error_map(fake: torch.Tensor, real: torch.Tensor) -> np.ndarray:
    """|fake - real| of two 1 x H x W images in [-1, 1] -> H x W x 3 uint8 (inferno colour map).

    The error is measured on the 8-bit images, as the metrics see saved files; an error of
    ``ERROR_FULL_SCALE`` of the range (128 grey levels) or more is the brightest colour."""
    diff = np.abs(to_uint8(fake).cpu().numpy().astype(np.int16) - to_uint8(real).cpu().numpy().astype(np.int16))[0]
    scaled = np.clip(diff / (ERROR_FULL_SCALE * 255.0), 0.0, 1.0)
    coloured = cv2.applyColorMap(np.round(scaled * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    return cv2.cvtColor(coloured, cv2.COLOR_BGR2RGB)


def _image(x: torch.Tensor) -> np.ndarray:
    """C x H x W in [-1, 1] -> H x W (grey) or H x W x 3 uint8."""
    array = to_uint8(x).cpu().numpy()
    return array[0] if array.shape[0] == 1 else np.ascontiguousarray(array[:3].transpose(1, 2, 0))


class TestOutputs(L.Callback):
    """Write every test image's CF, real, generated and error images (or video and strip) under ``dirpath``.

    Args:
        dirpath: the run's ``results`` folder.
        fps: frames per second of the generated videos (video models).
    """

    __test__ = False  # not a pytest test class despite its name

    def __init__(self, dirpath: str, fps: float = 4.0):
        self.dirpath = Path(dirpath)
        self.fps = float(fps)

    @torch.no_grad()
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        fake = outputs.get("fake") if isinstance(outputs, dict) else None
        if fake is None or "cf" not in batch:
            return
        for i, item_id in enumerate(batch["id"]):
            files = result_files(self.dirpath, str(item_id))
            write_png(files["cf"], _image(batch["cf"][i]))
            if fake.dim() == 5:
                frames = batch["frames"][i]
                real = frames if frames.shape[1] == 1 else frames.mean(1, keepdim=True)
                generated = fake[i].float().cpu()
                write_png(files["strip"], strip_rows(batch["cf"][i].cpu(), real.cpu(), generated))
                write_video(files["video"], [_image(f) for f in generated], self.fps, "mp4")
            else:
                write_png(files["real"], _image(batch["ffa"][i]))
                write_png(files["fake"], _image(fake[i].float()))
                write_png(files["error"], error_map(fake[i].float(), batch["ffa"][i]))
