"""``task=predict``: a folder of CF images of any size -> one FFA PNG per input, at its resolution.

Every input is checked (readable, colour) before the first output is written, so a bad file leaves
no half-written prediction folder. Two ways to meet the network's input size:
``predict.mode=resize`` squeezes each image to ``predict.image_size`` square and resizes the output
back (how pix2pix-style models trained on resized images see data); ``native`` runs the fully
convolutional generator at the native resolution, reflection-padded to a multiple of
``predict.multiple`` (for models trained on native-resolution crops, e.g. Isfahan MISP).
"""

import logging
from pathlib import Path

import cv2
import numpy as np
import torch
from hydra.utils import get_class
from omegaconf import DictConfig

from fundus2ffa.data.io import list_images, read_cf, write_png
from fundus2ffa.data.transforms import to_tensor_pm1
from fundus2ffa.errors import ConfigError
from fundus2ffa.metrics.convert import to_uint8

log = logging.getLogger(__name__)


def load_model(ckpt_path: str, target: str | None = None):
    """Rebuild a trained module from its checkpoint (class from the checkpoint, else ``target``)."""
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    target = checkpoint.get("fundus2ffa_target") or target
    if not target:
        raise ConfigError(f"checkpoint {ckpt_path} does not name its model class; pass model=<the model it was trained with>")
    return get_class(target).load_from_checkpoint(ckpt_path, map_location="cpu")


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


@torch.no_grad()
def translate_image(model, cf: np.ndarray, mode: str, image_size: int, multiple: int, device) -> np.ndarray:
    """One H x W x 3 uint8 CF -> H x W uint8 FFA at the input's resolution."""
    height, width = cf.shape[:2]
    if mode == "resize":
        small = cv2.resize(cf, (image_size, image_size), interpolation=cv2.INTER_AREA)
        fake = model.translate(to_tensor_pm1(small)[None].to(device))
        ffa = to_uint8(fake[0, 0]).cpu().numpy()
        return cv2.resize(ffa, (width, height), interpolation=cv2.INTER_CUBIC)
    if mode == "native":
        x, (h, w) = _pad_to_multiple(to_tensor_pm1(cf)[None].to(device), multiple)
        fake = model.translate(x)[..., :h, :w]
        return to_uint8(fake[0, 0]).cpu().numpy()
    raise ConfigError(f"predict.mode must be resize or native, got {mode!r}")


def predict(cfg: DictConfig) -> list[str]:
    """Translate every image of ``predict.input_dir`` into ``predict.output_dir``; returns the paths."""
    settings = cfg.predict
    inputs = list_images(Path(settings.input_dir))
    allow_grey = bool(cfg.data.get("reader", {}).get("allow_grey_cf", False))
    images = [(path, read_cf(path, allow_grey=allow_grey)) for path in inputs]  # check all before writing

    model = load_model(cfg.ckpt_path, cfg.model.get("_target_"))
    accelerator = cfg.trainer.get("accelerator", "auto")
    use_cuda = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    device = torch.device("cuda" if use_cuda else "cpu")
    model.to(device).eval()

    out_dir = Path(settings.output_dir)
    written = []
    for path, cf in images:
        ffa = translate_image(model, cf, settings.mode, int(settings.image_size), int(settings.multiple), device)
        target = out_dir / f"{path.stem}.png"
        write_png(target, ffa)
        written.append(str(target))
    log.info("wrote %d predictions to %s", len(written), out_dir)
    return written
