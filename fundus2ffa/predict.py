"""``task=predict``: a folder of CF images of any size -> one FFA PNG per input, at its resolution
(still-image models), or one generated FFA video per input (video models: those with
``translate_video``, e.g. Fundus2Video).

Every input is checked (readable, colour) before the first output is written, so a bad file leaves
no half-written prediction folder. Two ways to meet the network's input size:
``predict.mode=resize`` squeezes each image to ``predict.image_size`` square and resizes the output
back (how pix2pix-style models trained on resized images see data); ``native`` runs the fully
convolutional generator at the native resolution, reflection-padded to a multiple of
``predict.multiple`` (for models trained on native-resolution crops, e.g. Isfahan MISP).

Videos (reference_spec 4.7): ``predict.num_frames`` frames (12 by default; there is no ground truth to
take T from) at the input's resolution, written as ``<stem>.mp4`` (H.264 through imageio-ffmpeg's bundled
ffmpeg; sides padded to even numbers), ``<stem>.gif`` or ``<stem>/frame_XXX.png`` per
``predict.video_format`` (mp4 | gif | png), at ``predict.fps`` frames per second. The format and the
encoder are checked, like the inputs, before anything is written.

Inputs and outputs (:mod:`fundus2ffa.predict_io`): ``predict.input_dir`` is a folder, one image or a
glob; inputs sharing a stem get distinct names (``x.png``, ``x.jpg`` -> ``x__png``, ``x__jpg``); the
output folder's writability is checked before the model is loaded, and existing outputs are refused,
naming them, before the model runs, unless ``predict.overwrite=true``.
"""

import logging
from pathlib import Path

import cv2
import numpy as np
import torch
from omegaconf import DictConfig

from fundus2ffa import checkpoint
from fundus2ffa.data.io import read_cf, write_png
from fundus2ffa.data.transforms import to_tensor_pm1
from fundus2ffa.errors import ConfigError
from fundus2ffa.metrics.convert import to_uint8
from fundus2ffa.nets.padding import pad_to_multiple
from fundus2ffa.predict_io import check_output_dir, check_overwrite, output_names, resolve_inputs

log = logging.getLogger(__name__)

VIDEO_FORMATS = ("mp4", "gif", "png")


def load_model(ckpt_path: str, target: str | None = None):
    """Rebuild a trained module from its checkpoint (weights_only; see :func:`fundus2ffa.checkpoint.load_model`)."""
    return checkpoint.load_model(ckpt_path, target)


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
        x, crop = pad_to_multiple(to_tensor_pm1(cf)[None].to(device), multiple)
        fake = model.translate(x)
        fake = fake if crop is None else fake[..., crop[0], crop[1]]
        return to_uint8(fake[0, 0]).cpu().numpy()
    raise ConfigError(f"predict.mode must be resize or native, got {mode!r}")


@torch.no_grad()
def translate_video_frames(model, cf: np.ndarray, mode: str, image_size: int, multiple: int, device, num_frames: int) -> list[np.ndarray]:
    """One H x W x 3 uint8 CF -> ``num_frames`` H x W uint8 FFA frames at the input's resolution."""
    height, width = cf.shape[:2]
    if mode == "resize":
        small = cv2.resize(cf, (image_size, image_size), interpolation=cv2.INTER_AREA)
        video = model.translate_video(to_tensor_pm1(small)[None].to(device), num_frames)[0, :, 0]
        return [cv2.resize(to_uint8(f).cpu().numpy(), (width, height), interpolation=cv2.INTER_CUBIC) for f in video]
    if mode == "native":
        x, crop = pad_to_multiple(to_tensor_pm1(cf)[None].to(device), multiple)
        video = model.translate_video(x, num_frames)[0, :, 0]
        video = video if crop is None else video[..., crop[0], crop[1]]
        return [to_uint8(f).cpu().numpy() for f in video]
    raise ConfigError(f"predict.mode must be resize or native, got {mode!r}")


def _video_settings(settings, default_frames: int = 12) -> tuple[str, int, float]:
    """predict.video_format / num_frames / fps, checked (and the MP4 encoder found) before any output.

    Without ``predict.num_frames`` the model's own ``num_frames`` (``default_frames``) is used."""
    video_format = str(settings.get("video_format", "mp4"))
    if video_format not in VIDEO_FORMATS:
        raise ConfigError(f"predict.video_format must be one of {'|'.join(VIDEO_FORMATS)}, got {video_format!r}")
    num_frames, fps = int(settings.get("num_frames") or default_frames), float(settings.get("fps", 4))
    if num_frames < 1:
        raise ConfigError(f"predict.num_frames must be at least 1, got {num_frames}")
    if fps <= 0:
        raise ConfigError(f"predict.fps must be positive, got {fps}")
    if video_format == "mp4":
        try:
            import imageio_ffmpeg

            imageio_ffmpeg.get_ffmpeg_exe()
        except Exception as exc:  # noqa: BLE001 - any failure means no encoder
            raise ConfigError(
                f"predict.video_format=mp4 needs ffmpeg (pip install imageio-ffmpeg): {exc}; or set predict.video_format=gif|png"
            ) from None
    return video_format, num_frames, fps


def write_frames(path_stem: Path, frames: list[np.ndarray], video_format: str, fps: float) -> str:
    """Write one generated video; returns the written file (mp4/gif) or folder (png)."""
    if video_format == "png":
        for t, frame in enumerate(frames):
            write_png(path_stem / f"frame_{t:03d}.png", frame)
        return str(path_stem)
    from fundus2ffa.callbacks.video_samples import write_video

    return str(write_video(path_stem.with_name(f"{path_stem.name}.{video_format}"), frames, fps, video_format))


def predict(cfg: DictConfig) -> list[str]:
    """Translate every image of ``predict.input_dir`` (folder, file or glob) into ``predict.output_dir``;
    returns the written paths. Inputs, output folder and existing outputs are checked before the model
    runs; the translation streams in batches on the devices of ``trainer=`` (inference/streaming.py)."""
    from fundus2ffa.inference.streaming import predict_streaming

    settings = cfg.predict
    inputs = resolve_inputs(settings.input_dir)
    names = output_names(inputs)
    out_dir = Path(settings.output_dir)
    check_output_dir(out_dir)
    model = load_model(cfg.ckpt_path, cfg.model.get("_target_"))
    return predict_streaming(cfg, model, inputs, names, check_overwrite)
