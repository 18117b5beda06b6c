"""Sample grids (CF | real FFA | generated FFA, titled columns), written as PNG and sent to every logger.

The same validation samples are shown every time, so grids of successive epochs compare directly.
Grids are written while fitting only (``samples/epoch_XXXX.png``): the validation that scores the final
checkpoint after training, or a ``task=test`` run, does not add a copy of the last epoch's grid nor
rewrite one; ``trainer.test`` writes ``samples/test.png`` from the first test images instead.
"""

from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn

from fundus2ffa.writers import write_png
from fundus2ffa.metrics.convert import to_uint8


def grid_rows(cf: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> np.ndarray:
    """N rows of CF | real | generated as one H*N x W*3 x 3 uint8 image (grey replicated to RGB)."""
    def rgb(x):
        x = to_uint8(x).cpu()
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]

    rows = torch.cat([rgb(cf), rgb(real), rgb(fake)], dim=3)  # N x 3 x H x 3W
    return rows.permute(0, 2, 3, 1).reshape(-1, rows.shape[3], 3).numpy()


GRID_TITLES = ("CF", "real FFA", "generated FFA")


def title_band(titles: tuple[str, ...] | list[str], tile_width: int) -> np.ndarray:
    """A white band with one centred black title per column of width ``tile_width`` (uint8 RGB).

    The font is scaled so the longest title fits its column; the band is at least 12 px high."""
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, 1
    longest = max(cv2.getTextSize(t, font, 1.0, thickness)[0][0] for t in titles)
    scale = min(1.0, 0.9 * tile_width / max(longest, 1))
    height = max(12, int(cv2.getTextSize("Ag", font, scale, thickness)[0][1] * 2.2))
    band = np.full((height, tile_width * len(titles), 3), 255, np.uint8)
    for i, title in enumerate(titles):
        (w, h), _ = cv2.getTextSize(title, font, scale, thickness)
        origin = (i * tile_width + (tile_width - w) // 2, (height + h) // 2)
        cv2.putText(band, title, origin, font, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return band


def titled_grid(cf: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> np.ndarray:
    """:func:`grid_rows` under a band naming its columns: CF | real FFA | generated FFA."""
    rows = grid_rows(cf, real, fake)
    return np.concatenate([title_band(GRID_TITLES, rows.shape[1] // 3), rows], axis=0)


class SampleGrid(L.Callback):
    """Every ``every_n_epochs`` validation epochs, translate ``num_samples`` fixed validation CFs.

    Writes ``<dirpath>/epoch_XXXX.png`` and logs the image to W&B / TensorBoard when present; a test
    run writes ``<dirpath>/test.png`` (the first ``num_samples`` test images).
    """

    def __init__(self, dirpath: str, num_samples: int = 4, every_n_epochs: int = 1):
        self.dirpath = Path(dirpath)
        self.num_samples, self.every_n_epochs = num_samples, every_n_epochs
        self._batch = None

    def _fixed_batch(self, trainer: L.Trainer, split: str = "val"):
        if split != "val":
            return self._stack(trainer, split)
        if self._batch is None:
            self._batch = self._stack(trainer, split)
        return self._batch

    def _stack(self, trainer: L.Trainer, split: str):
        dataset = trainer.datamodule.datasets.get(split) if trainer.datamodule else None
        if dataset is None or len(dataset) == 0:
            return None
        items = [dataset[i] for i in range(min(self.num_samples, len(dataset)))]
        if "ffa" not in items[0]:  # a video dataset: VideoSamples and TestOutputs show those
            return None
        return [{k: it[k] for k in ("cf", "ffa")} for it in items]

    @staticmethod
    def render(pl_module: L.LightningModule, items: list[dict]) -> np.ndarray:
        """The titled grid of ``items``: each CF translated at its own size (evaluation images may differ in
        size, e.g. aspect-kept fields of view), then every row shown at the first image's size."""
        size = tuple(items[0]["cf"].shape[-2:])
        rows = {"cf": [], "ffa": [], "fake": []}
        for item in items:
            fake = pl_module.translate(item["cf"][None].to(pl_module.device)).float().cpu()
            for key, image in (("cf", item["cf"][None]), ("ffa", item["ffa"][None]), ("fake", fake)):
                if tuple(image.shape[-2:]) != size:
                    image = F.interpolate(image.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
                rows[key].append(image)
        return titled_grid(*(torch.cat(rows[key]) for key in ("cf", "ffa", "fake")))

    @staticmethod
    def fitting(trainer: L.Trainer) -> bool:
        """True inside ``trainer.fit`` (not its sanity check): the only validation that writes epoch grids."""
        return trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.fitting(trainer) or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        items = self._fixed_batch(trainer)
        if items is None:
            return
        image = self.render(pl_module, items)
        path = self.dirpath / f"epoch_{trainer.current_epoch:04d}.png"
        write_png(path, image)
        self._log_image(trainer, image)

    @torch.no_grad()
    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not hasattr(pl_module, "translate"):
            return
        items = self._fixed_batch(trainer, "test")
        if items is None:
            return
        write_png(self.dirpath / "test.png", self.render(pl_module, items))

    def _log_image(self, trainer: L.Trainer, image: np.ndarray) -> None:
        for logger in trainer.loggers:
            name = type(logger).__name__
            if name == "WandbLogger":
                logger.log_image(key="samples", images=[image], step=trainer.global_step)
            elif name == "TensorBoardLogger":
                logger.experiment.add_image("samples", image, trainer.global_step, dataformats="HWC")
