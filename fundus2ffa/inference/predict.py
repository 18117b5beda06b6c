"""``task=predict``: a folder of CF images of any size -> one FFA PNG per input, at its resolution
(still-image models), or one generated FFA video per input (video models: those with
``translate_video``, e.g. Fundus2Video).

The door is thin: inputs and the output folder are decided and checked (:mod:`.predict_io`) before the
model is loaded; the checkpoint is loaded by the one loader (:func:`fundus2ffa.loader.load`: allow-listed
targets, weights_only) and turned into pixels by the one translator
(:class:`~fundus2ffa.inference.translator.Translator`: the checkpoint's own preprocessing, the
``predict.mode`` override, tiles, the inverse back to the input's geometry); the translation streams
through a DataLoader and ``Trainer.predict`` (:mod:`.streaming`), and every file is written by
:mod:`fundus2ffa.writers` (atomic).

Videos (reference_spec 4.7): ``predict.num_frames`` frames (the model's own ``num_frames`` when null)
at the input's resolution, written as ``<stem>.mp4`` (H.264 through imageio-ffmpeg's bundled ffmpeg;
an odd side is padded by one pixel for the encoder and the true size is kept in the file's metadata,
fundus2ffa.writers.read_video crops it back), ``<stem>.gif`` or ``<stem>/frame_XXX.png`` per
``predict.video_format`` (mp4 | gif | png), at ``predict.fps`` frames per second. The format and the
encoder are checked, like the inputs, before anything is written.

Stopping: SIGTERM or SIGINT (Ctrl-C) stop the run within seconds, between two tile batches or images;
no temporary file is left (writes are atomic), and ``predict.skip_existing=true`` resumes the folder.
Temporary files of a run killed with SIGKILL are removed at the next start in the same folder.
"""

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fundus2ffa import loader
from fundus2ffa.inference.streaming import predict_streaming
from fundus2ffa.inference.predict_io import check_output_dir, check_overwrite, output_names, resolve_inputs
from fundus2ffa.inference.translator import Translator, settings_of

log = logging.getLogger(__name__)


def translator_for(cfg: DictConfig, loaded) -> Translator:
    """The translator of ``loaded`` under ``cfg.predict`` (the composed ``data.preprocess`` for a
    checkpoint that stores none)."""
    fallback = OmegaConf.to_container(cfg.data.get("preprocess") or {}, resolve=True) if "data" in cfg else None
    return Translator.from_loaded(loaded, settings_of(cfg.predict), fallback_preprocess=fallback)


def predict(cfg: DictConfig) -> list[str]:
    """Translate every image of ``predict.input_dir`` (folder, file or glob) into ``predict.output_dir``;
    returns the written paths. Inputs, output folder and existing outputs are checked before the model
    runs; the translation streams in batches on the devices of ``trainer=`` (streaming.py)."""
    settings = cfg.predict
    inputs = resolve_inputs(settings.input_dir)
    names = output_names(inputs)
    check_output_dir(Path(settings.output_dir))
    loaded = loader.load(cfg.ckpt_path, cfg.model.get("_target_") if "model" in cfg else None)
    return predict_streaming(cfg, translator_for(cfg, loaded), inputs, names, check_overwrite)
