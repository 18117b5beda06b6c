"""Sample grids (CF | real FFA | generated FFA), written as PNG and sent to every logger.

The same validation samples are shown every time, so grids of successive epochs compare directly.
"""

from pathlib import Path

import lightning as L
import numpy as np
import torch

from fundus2ffa.data.io import write_png
from fundus2ffa.metrics.convert import to_uint8


def grid_rows(cf: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> np.ndarray:
    """N rows of CF | real | generated as one H*N x W*3 x 3 uint8 image (grey replicated to RGB)."""
    def rgb(x):
        x = to_uint8(x).cpu()
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]

    rows = torch.cat([rgb(cf), rgb(real), rgb(fake)], dim=3)  # N x 3 x H x 3W
    return rows.permute(0, 2, 3, 1).reshape(-1, rows.shape[3], 3).numpy()


class SampleGrid(L.Callback):
    """Every ``every_n_epochs`` validation epochs, translate ``num_samples`` fixed validation CFs.

    Writes ``<dirpath>/epoch_XXXX.png`` and logs the image to W&B / TensorBoard when present.
    """

    def __init__(self, dirpath: str, num_samples: int = 4, every_n_epochs: int = 1):
        self.dirpath = Path(dirpath)
        self.num_samples, self.every_n_epochs = num_samples, every_n_epochs
        self._batch = None

    def _fixed_batch(self, trainer: L.Trainer):
        if self._batch is None:
            dataset = trainer.datamodule.datasets.get("val") if trainer.datamodule else None
            if dataset is None or len(dataset) == 0:
                return None
            items = [dataset[i] for i in range(min(self.num_samples, len(dataset)))]
            self._batch = {k: torch.stack([it[k] for it in items]) for k in ("cf", "ffa")}
        return self._batch

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        batch = self._fixed_batch(trainer)
        if batch is None:
            return
        fake = pl_module.translate(batch["cf"].to(pl_module.device)).float()
        image = grid_rows(batch["cf"], batch["ffa"], fake)
        path = self.dirpath / f"epoch_{trainer.current_epoch:04d}.png"
        write_png(path, image)
        for logger in trainer.loggers:
            name = type(logger).__name__
            if name == "WandbLogger":
                logger.log_image(key="samples", images=[image], step=trainer.global_step)
            elif name == "TensorBoardLogger":
                logger.experiment.add_image("samples", image, trainer.global_step, dataformats="HWC")
