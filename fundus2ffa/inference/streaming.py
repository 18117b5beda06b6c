"""Streaming batched prediction (``task=predict``; issue 12, item 1): memory flat in the number of
inputs, batches, DataLoader workers, one or many devices through Lightning.

1. Validation pass: every input not skipped is decoded and checked (readable, colour, a non-empty
   field of view when the preprocessing crops to it) and dropped at once, so a bad file stops the run
   before anything is written (all bad files named in one error) and no pixels are kept.
   ``predict.skip_existing=true`` leaves out inputs whose output exists (outputs are written
   atomically, so an interrupted run leaves no partial file to skip).
2. A DataLoader with ``predict.num_workers`` workers reads and prepares, ``predict.batch_size`` inputs a
   batch, with the :class:`~fundus2ffa.inference.translator.Translator`'s preprocessing.
3. ``Trainer.predict`` (devices, precision and strategy from ``trainer=``; ``trainer=ddp`` /
   ``ddp_cpu`` shard the inputs with Lightning's unrepeated distributed sampler, so each input is
   translated and written by exactly one process) runs :class:`StreamingPredictor`: same-size inputs
   of a batch go through :meth:`Translator.run` together (whole, or in tiles), and
   :meth:`Translator.finish` maps every output back into its input's geometry.
4. :class:`PredictionWriter` writes each batch as it comes through :mod:`fundus2ffa.writers` (nothing
   accumulates) and records written / skipped / failed (with the reason); rank 0 logs the summary and
   writes it to ``predict.summary_file`` (the run folder's ``predict_summary.json``).
5. SIGTERM / SIGINT raise :class:`~fundus2ffa.errors.Stopped` in the main process
   (:func:`stop_on_signals`; an Exception, not a KeyboardInterrupt, which Lightning turns into
   ``sys.exit(1)``): the current operator finishes, the writer's temporary file is removed, and the run
   ends with a message saying how many outputs were written and how to resume.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import signal
import time
from contextlib import contextmanager

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from fundus2ffa.builders import build_trainer
from fundus2ffa.data.io import MAX_PIXELS, check_max_pixels, read_cf
from fundus2ffa.data.preprocess import Preprocess
from fundus2ffa.errors import ConfigError, DataError, Stopped
from fundus2ffa.inference.translator import Translator
from fundus2ffa.progress import Progress
from fundus2ffa.writers import VIDEO_FORMATS, check_video_format, remove_temp_files, write_frames, write_json, write_png

log = logging.getLogger(__name__)


@contextmanager
def stop_on_signals():
    """In the main thread: SIGTERM and SIGINT raise :class:`Stopped` (SIGTERM otherwise kills the
    process at once, leaving temporary files; Lightning's own handler only sets a flag between batches,
    which one long tiled image never reaches). The previous handlers come back afterwards."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):  # noqa: ARG001 - the signal module's signature
        raise Stopped(f"stopped by {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class PredictSettings:
    """The ``predict`` keys of the streaming loop (the translation's own are the Translator's)."""

    batch_size: int = 4
    num_workers: int = 2
    skip_existing: bool = False
    video: tuple | None = None  # (format, num_frames, fps) for video models

    @classmethod
    def from_config(cls, node: DictConfig, video=None) -> "PredictSettings":
        batch_size, num_workers = int(node.get("batch_size", 4)), int(node.get("num_workers", 2))
        if batch_size < 1:
            raise ConfigError(f"predict.batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise ConfigError(f"predict.num_workers must be >= 0, got {num_workers}")
        return cls(batch_size, num_workers, bool(node.get("skip_existing", False)), video)


def output_path(out_dir: Path, name: str, video: tuple | None) -> Path:
    """Where the prediction named ``name`` (predict_io.output_names) goes: <name>.png, or the video
    file / frame folder."""
    if video is None:
        return out_dir / f"{name}.png"
    video_format = video[0]
    return out_dir / name if video_format == "png" else out_dir / f"{name}.{video_format}"


def is_done(target: Path, video: tuple | None) -> bool:
    """A finished output: the file, or a frame folder with all its frames."""
    if video is not None and video[0] == "png":
        return target.is_dir() and all((target / f"frame_{t:03d}.png").is_file() for t in range(video[1]))
    return target.is_file()


class Carried:
    """A value the batch carries untouched: Lightning's device transfer (``apply_to_collection``) recurses
    into dataclasses and refuses frozen ones such as :class:`Geometry`, but leaves plain objects alone."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def validate_inputs(paths: list[Path], allow_grey: bool, preprocess: Preprocess | None = None, max_pixels: int | None = MAX_PIXELS) -> None:
    """Decode and check every input (and, with ``preprocess``, its field of view: an empty one fails when
    the preprocessing crops to it), keeping no pixels; one DataError naming every bad file."""
    bad = []
    for path in paths:
        try:
            cf = read_cf(path, allow_grey=allow_grey, max_pixels=max_pixels, where="predict.input_dir")
            if preprocess is not None:
                preprocess.plan(cf, name=f"CF {path}")
            del cf
        except (DataError, OSError, ValueError) as exc:
            bad.append(f"{path}: {exc}")
    if bad:
        raise DataError(f"{len(bad)} of {len(paths)} inputs cannot be used (nothing was written); fix or remove them:\n  " + "\n  ".join(bad))


class PredictInputs(Dataset):
    """Reads and preprocesses one input per item (in DataLoader workers): ``preprocess(cf)`` -> the network
    input and its geometry, as :meth:`Translator.prepare`."""

    def __init__(self, paths: list[Path], names: list[str], preprocess: Preprocess, allow_grey: bool, max_pixels: int | None = MAX_PIXELS):
        self.paths, self.names, self.preprocess, self.allow_grey = [str(p) for p in paths], list(names), preprocess, allow_grey
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        try:
            x, geometry = self.preprocess(read_cf(Path(path), allow_grey=self.allow_grey, max_pixels=self.max_pixels,
                                                  where="predict.input_dir"))
        except Exception as exc:  # noqa: BLE001 - changed since validation: report, do not stop the archive
            return {"index": index, "path": path, "name": self.names[index], "error": f"{type(exc).__name__}: {exc}"}
        return {"index": index, "path": path, "name": self.names[index], "cf": x[0], "geometry": Carried(geometry)}


def collate(items: list[dict]) -> list[dict]:
    """Keep the items: inputs of different sizes cannot be stacked; the step groups equal sizes."""
    return items


class StreamingPredictor(L.LightningModule):
    """Runs a :class:`Translator` on batches of prepared inputs; returns uint8 outputs in each input's
    geometry."""

    def __init__(self, translator: Translator):
        super().__init__()
        self.translator = translator
        self.model = translator.model  # a submodule: Lightning moves it to the device

    @torch.no_grad()
    def predict_step(self, batch: list[dict], batch_idx: int) -> list[dict]:
        self.translator.device = self.device
        results = [{"path": item["path"], "name": item["name"], "error": item["error"]} for item in batch if "error" in item]
        groups: dict[tuple, list[dict]] = {}
        for item in batch:
            if "cf" in item:
                groups.setdefault(tuple(item["cf"].shape), []).append(item)
        for shape, items in groups.items():
            height, width = shape[-2:]
            try:
                fake = self.translator.run(torch.stack([item["cf"] for item in items]))
            except torch.OutOfMemoryError as exc:
                reason = f"out of memory at {height}x{width} ({exc}); use predict.mode=tiled or a smaller predict.tiled.size"
                results += [{"path": item["path"], "name": item["name"], "error": reason} for item in items]
                continue
            for item, out in zip(items, fake):
                results.append({"path": item["path"], "name": item["name"], "output": self.translator.finish(out, item["geometry"].value)})
        return results


@dataclass
class Summary:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)  # the process that wrote written[i]


class PredictionWriter(BasePredictionWriter):
    """Writes each batch's outputs as they come; gathers the summary on rank 0 at the end."""

    def __init__(self, out_dir: Path, settings: PredictSettings, summary: Summary, progress: Progress | None = None):
        super().__init__(write_interval="batch")
        self.out_dir, self.settings, self.summary = out_dir, settings, summary
        self.progress = progress  # counts images (rank 0: its own share; every rank writes its own)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        self._write(trainer, prediction)
        if self.progress is not None and trainer.is_global_zero:
            self.progress.update(len(prediction), f"{len(self.summary.failed)} failed" if self.summary.failed else "")

    def _write(self, trainer, prediction) -> None:
        for item in prediction:
            if "error" in item:
                self.summary.failed.append({"path": item["path"], "reason": item["error"]})
                continue
            target = output_path(self.out_dir, item["name"], self.settings.video)
            try:
                if self.settings.video is None:
                    write_png(target, item["output"])
                    written = str(target)
                else:
                    video_format, _, fps = self.settings.video
                    written = write_frames(self.out_dir / item["name"], item["output"], video_format, fps)
            except OSError as exc:
                self.summary.failed.append({"path": item["path"], "reason": f"cannot write {target}: {exc}"})
                continue
            self.summary.written.append(written)
            self.summary.ranks.append(trainer.global_rank)

    def on_predict_end(self, trainer, pl_module) -> None:
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            parts = [None] * trainer.world_size
            torch.distributed.all_gather_object(parts, (self.summary.written, self.summary.failed, self.summary.ranks))
            self.summary.written = [p for part in parts for p in part[0]]
            self.summary.failed = [f for part in parts for f in part[1]]
            self.summary.ranks = [r for part in parts for r in part[2]]


def video_settings(settings, default_frames: int = 12) -> tuple[str, int, float]:
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
    try:
        check_video_format(video_format)
    except ConfigError as exc:
        raise ConfigError(f"predict.video_format={video_format}: {exc}") from None
    return video_format, num_frames, fps


def predict_streaming(cfg: DictConfig, translator: Translator, inputs: list[Path], names: list[str], check_overwrite=None) -> list[str]:
    """Translate ``inputs`` with ``translator`` into ``predict.output_dir`` under ``names``; returns the
    written paths (all ranks). ``check_overwrite(targets, inputs, overwrite)`` refuses existing outputs
    (predict_io)."""
    node = cfg.predict
    video = video_settings(node, translator.num_frames) if translator.is_video else None
    if video is not None:
        translator.num_frames = video[1]
    settings = PredictSettings.from_config(node, video)
    out_dir = Path(node.output_dir)
    started = time.time()
    remove_temp_files(out_dir, older_than=started, recursive=video is not None and video[0] == "png")
    summary = Summary()
    todo, todo_names = [], []
    for path, name in zip(inputs, names):
        if settings.skip_existing and is_done(output_path(out_dir, name, video), video):
            summary.skipped.append(str(path))
        else:
            todo.append(path)
            todo_names.append(name)
    reader = cfg.data.get("reader") or {}
    allow_grey = bool(reader.get("allow_grey_cf", False))
    max_pixels = check_max_pixels(reader.get("max_pixels", MAX_PIXELS))  # data.reader.max_pixels: the image size limit
    validate_inputs(todo, allow_grey, translator.preprocess, max_pixels)
    if check_overwrite is not None:
        check_overwrite([output_path(out_dir, n, video) for n in todo_names], todo, bool(node.get("overwrite", False)))

    loader = DataLoader(
        PredictInputs(todo, todo_names, translator.preprocess, allow_grey, max_pixels), batch_size=settings.batch_size, shuffle=False,
        num_workers=settings.num_workers, collate_fn=collate, persistent_workers=False,
    )
    # the progress counts images (Lightning's bar would count batches of predict.batch_size); each rank its share
    progress = Progress(len(todo), "predict", "images", min_interval=10.0)
    writer = PredictionWriter(out_dir, settings, summary, progress)
    trainer = build_trainer(cfg, [writer], [], enable_progress_bar=False)
    if trainer.world_size > 1:
        progress.total = len(range(trainer.global_rank, len(todo), trainer.world_size))
    if todo:
        try:
            with stop_on_signals(), progress:
                trainer.predict(StreamingPredictor(translator), dataloaders=loader, return_predictions=False)
        except Stopped as exc:
            message = (f"prediction {exc} after {len(summary.written)} of {len(todo)} outputs; no partial file is left "
                       f"in {out_dir}. Resume with predict.skip_existing=true.")
            log.error(message)
            raise Stopped(message) from None
    if trainer.is_global_zero:
        log.info("predict: %d written, %d skipped (output exists), %d failed, to %s",
                 len(summary.written), len(summary.skipped), len(summary.failed), out_dir)
        for failure in summary.failed:
            log.warning("failed: %s: %s", failure["path"], failure["reason"])
        summary_file = node.get("summary_file")
        if summary_file and (summary.written or summary.failed or summary.skipped):
            write_json(Path(summary_file), {"written": summary.written, "skipped": summary.skipped, "failed": summary.failed,
                                            "rank_of_written": summary.ranks}, sort_keys=False)
    return sorted(summary.written)
