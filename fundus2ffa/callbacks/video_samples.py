"""Video samples of a CF -> FFA video model (Fundus2Video, reference_spec 4.7), written every epoch.

For the first ``num_samples`` validation eyes (the same eyes every epoch, so epochs compare directly) the
model's :meth:`translate_video` generates as many frames as the real video has. Written:

- ``<dirpath>/epoch_XXXX.png``: per eye two rows, ``CF | real frame 1 .. T`` over
  ``CF | generated frame 1 .. T`` (shorter videos padded with black tiles);
- ``<dirpath>/epoch_XXXX.gif`` (or ``.mp4``; ``video_format``): the generated frames next to the
  real ones, side by side per eye, one video frame per time step.

Loggers: W&B gets the strip as an image and the video file as ``wandb.Video``; TensorBoard the strip.

:class:`VideoSamples` subclasses :class:`~fundus2ffa.callbacks.samples.SampleGrid` so that a video
model's ``configure_callbacks`` can replace the still-image grid of the default callbacks (Lightning
replaces trainer callbacks of a parent type by the model's): ``model=fundus2video`` shows videos with
``callbacks=default``; ``callbacks=video`` configures them explicitly.
"""


import lightning as L
import numpy as np
import torch

from fundus2ffa.callbacks.samples import SampleGrid
from fundus2ffa.errors import ConfigError
from fundus2ffa.metrics.convert import to_uint8
from fundus2ffa.writers import write_png, write_video

VIDEO_FORMATS = ("gif", "mp4", "none")


def _tiles(video: torch.Tensor) -> list[np.ndarray]:
    """T x C x H x W in [-1, 1] -> T uint8 H x W x 3 tiles."""
    x = to_uint8(video).cpu()
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]
    return list(x.permute(0, 2, 3, 1).numpy())


def strip_rows(cf: torch.Tensor, real: torch.Tensor, fake: torch.Tensor, length: int | None = None) -> np.ndarray:
    """Two rows for one eye: CF | real frames over CF | generated frames (uint8 H*2 x W*(1+L) x 3)."""
    cf_tile = _tiles(cf[None])[0]
    blank = np.zeros_like(cf_tile)
    length = length or max(real.shape[0], fake.shape[0])
    rows = []
    for video in (real, fake):
        tiles = _tiles(video)
        tiles += [blank] * (length - len(tiles))
        rows.append(np.concatenate([cf_tile, *tiles], axis=1))
    return np.concatenate(rows, axis=0)


class VideoSamples(SampleGrid):
    """Every ``every_n_epochs`` validation epochs, generate the videos of ``num_samples`` fixed validation eyes.

    Args:
        dirpath: where epoch_XXXX.png / .gif / .mp4 go.
        num_samples: eyes shown (the first of the validation split).
        every_n_epochs: how often.
        fps: frames per second of the written video.
        video_format: gif | mp4 | none (the PNG strip only).
    """

    def __init__(self, dirpath: str, num_samples: int = 2, every_n_epochs: int = 1, fps: float = 4.0, video_format: str = "gif"):
        if video_format not in VIDEO_FORMATS:
            raise ConfigError(f"callbacks.samples.video_format must be one of {'|'.join(VIDEO_FORMATS)}, got {video_format!r}")
        super().__init__(str(dirpath), int(num_samples), int(every_n_epochs))
        self.fps, self.video_format = float(fps), video_format
        self._items = None

    @classmethod
    def from_grid(cls, grid: SampleGrid, **kwargs) -> "VideoSamples":
        """Video samples with a still-image grid's folder, number of samples and frequency."""
        return cls(str(grid.dirpath), grid.num_samples, grid.every_n_epochs, **kwargs)

    def _fixed_items(self, trainer: L.Trainer):
        if self._items is None:
            dataset = trainer.datamodule.datasets.get("val") if trainer.datamodule is not None else None
            if dataset is None or len(dataset) == 0:
                return None
            self._items = [dataset[i] for i in range(min(self.num_samples, len(dataset)))]
        return self._items

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.fitting(trainer) or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if not hasattr(pl_module, "translate_video"):
            raise ConfigError(
                f"callbacks.samples is VideoSamples but {type(pl_module).__name__} has no translate_video(); "
                "use callbacks=default for still-image models"
            )
        items = self._fixed_items(trainer)
        if not items:
            return
        reals, fakes = [], []
        for item in items:
            frames = item["frames"]
            real = frames if frames.shape[1] == 1 else frames.mean(1, keepdim=True)
            fake = pl_module.translate_video(item["cf"][None].to(pl_module.device), real.shape[0])[0].float().cpu()
            reals.append(real)
            fakes.append(fake)
        length = max(r.shape[0] for r in reals)
        strip = np.concatenate([strip_rows(item["cf"], r, f, length) for item, r, f in zip(items, reals, fakes)], axis=0)
        stem = self.dirpath / f"epoch_{trainer.current_epoch:04d}"
        write_png(stem.with_suffix(".png"), strip)
        video_path = None
        if self.video_format != "none":
            per_step = []
            for t in range(length):
                rows = []
                for r, f in zip(reals, fakes):
                    rt, ft = _tiles(r[min(t, r.shape[0] - 1)][None])[0], _tiles(f[min(t, f.shape[0] - 1)][None])[0]
                    rows.append(np.concatenate([rt, ft], axis=1))
                per_step.append(np.concatenate(rows, axis=0))
            video_path = write_video(stem.with_suffix("." + self.video_format), per_step, self.fps, self.video_format)
        for logger in trainer.loggers:
            name = type(logger).__name__
            if name == "WandbLogger":
                logger.log_image(key="samples", images=[strip], step=trainer.global_step)
                if video_path is not None:
                    import wandb

                    logger.experiment.log({"video_samples": wandb.Video(str(video_path), format=self.video_format),
                                           "trainer/global_step": trainer.global_step})
            elif name == "TensorBoardLogger":
                logger.experiment.add_image("samples", strip, trainer.global_step, dataformats="HWC")
