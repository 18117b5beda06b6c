"""``task=predict``: a folder of CF images of any size -> one FFA PNG per input, at its resolution
(still-image models), or one generated FFA video per input (video models: those with
``translate_video``, e.g. Fundus2Video).

Every input is checked (readable, colour) before the first output is written, so a bad file leaves
no half-written prediction folder. Each CF is prepared by the training preprocessing
(:class:`~fundus2ffa.data.preprocess.Preprocess`, settings from the checkpoint's ``data.preprocess``:
field-of-view crop, resize policy, padding) and the output mapped back into the input's geometry by its
inverse. ``predict.mode`` overrides the resize policy: ``resize`` squeezes each image to
``predict.image_size`` square; ``native`` runs the fully convolutional generator at the native
resolution, reflection-padded to a multiple of ``predict.multiple`` (tiled above
``predict.tiled.auto_above``); ``tiled`` runs the native-scale network input in overlapping tiles
(``predict.tiled.*``, inference/tiled.py). The translation streams through a DataLoader and
``Trainer.predict`` (inference/streaming.py), one :class:`Preprocess` for every input.

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

from dataclasses import replace

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fundus2ffa import checkpoint
from fundus2ffa.data.io import read_cf, write_png
from fundus2ffa.data.preprocess import Preprocess
from fundus2ffa.errors import CheckpointError, ConfigError
from fundus2ffa.metrics.convert import to_uint8
from fundus2ffa.predict_io import check_output_dir, check_overwrite, output_names, resolve_inputs

log = logging.getLogger(__name__)

VIDEO_FORMATS = ("mp4", "gif", "png")


def load_model(ckpt_path: str, target: str | None = None):
    """Rebuild a trained module from its checkpoint (weights_only; see :func:`fundus2ffa.checkpoint.load_model`)."""
    return checkpoint.load_model(ckpt_path, target)


def prediction_preprocess(cfg: DictConfig) -> Preprocess:
    """The checkpoint's own preprocessing (its stored ``data.preprocess``: how the model was trained, so
    native-scale crop models run at native scale, issue 10.3), else the composed ``data.preprocess``;
    ``predict.mode`` overrides the resize policy: resize (``predict.image_size`` square) | native (padded
    to ``predict.multiple``) | tiled (native scale, unpadded: the network input, field-of-view crop
    included, is run in overlapping tiles by inference/streaming.py, each padded to ``predict.multiple``)."""
    settings = None
    if cfg.get("ckpt_path"):
        try:
            stored = checkpoint.checkpoint_config(cfg.ckpt_path)
            settings = (stored.get("data") or {}).get("preprocess")
        except CheckpointError:  # an older checkpoint without its run config: the command line's
            log.warning("checkpoint %s stores no run config: preprocessing with the composed data.preprocess", cfg.ckpt_path)
    if settings is None:
        settings = OmegaConf.to_container(cfg.data.get("preprocess") or {}, resolve=True)
    preprocess = Preprocess.from_config(settings)
    mode = cfg.predict.get("mode")
    if mode == "resize":
        preprocess = replace(preprocess, resize="square", size=int(cfg.predict.image_size), multiple=1)
    elif mode == "native":
        preprocess = replace(preprocess, resize="native", multiple=int(cfg.predict.multiple))
    elif mode == "tiled":
        preprocess = replace(preprocess, resize="native", multiple=1)
    elif mode is not None:
        raise ConfigError(f"predict.mode must be null (the checkpoint's data.preprocess), resize, native or tiled, got {mode!r}")
    return preprocess


@torch.no_grad()
def translate_image(model, cf: np.ndarray, preprocess: Preprocess, device) -> np.ndarray:
    """One H x W x 3 uint8 CF -> H x W uint8 FFA in the input's geometry (the training preprocessing and
    its inverse)."""
    x, geometry = preprocess(cf)
    fake = model.translate(x.to(device))
    return preprocess.invert(to_uint8(fake[0, 0]).cpu().numpy(), geometry)


@torch.no_grad()
def translate_video_frames(model, cf: np.ndarray, preprocess: Preprocess, device, num_frames: int) -> list[np.ndarray]:
    """One H x W x 3 uint8 CF -> ``num_frames`` H x W uint8 FFA frames in the input's geometry (Fundus2Video:
    the CF's field of view masked and cropped as in training, issue 10.2)."""
    x, geometry = preprocess(cf)
    video = model.translate_video(x.to(device), num_frames)[0, :, 0]
    return list(preprocess.invert(to_uint8(video).cpu().numpy(), geometry))


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
    preprocess = prediction_preprocess(cfg)
    return predict_streaming(cfg, model, inputs, names, preprocess, check_overwrite)
