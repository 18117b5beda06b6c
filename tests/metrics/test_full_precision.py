"""Scores are float32 whatever the training precision: under bf16 autocast SSIM's variance terms cancel."""

import torch
from hydra.utils import instantiate

from conftest import compose_run
from fundus2ffa.builders import build_trainer
from fundus2ffa.metrics.image import MetricTable, image_quality


def _grey_pair():
    torch.manual_seed(0)
    real = 0.3 + 0.1 * torch.rand(2, 1, 64, 64)  # mid-grey, low contrast: E[x^2] - E[x]^2 cancels in bf16
    return (real + 0.03 * torch.randn_like(real)).clamp(-1, 1), real


def test_image_quality_ignores_an_enclosing_bf16_autocast():
    fake, real = _grey_pair()
    fov = torch.ones_like(real)
    plain = image_quality(fake, real, fov)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = image_quality(fake, real, fov)
    assert 0.8 < float(plain["ssim"].mean()) < 0.9  # bf16 scored this pair about -1.2
    for key in plain:
        torch.testing.assert_close(inside[key], plain[key], rtol=0, atol=1e-6)


def test_bf16_mixed_validation_logs_the_float32_scores_of_its_own_translations(tmp_path):
    """A real Trainer.validate at precision=bf16-mixed: val/ssim and val/psnr are the float32 scores of the
    images the generator made under the same autocast."""
    cfg = compose_run(["logger=csv", "trainer=cpu", "trainer.precision=bf16-mixed", "data.reader.num_pairs=8",
                       "data.image_size=64", "generator.ngf=4", "generator.num_downs=6", "discriminator.ndf=4",
                       "trainer.enable_progress_bar=false", "~callbacks.samples"], tmp_path)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, _recursive_=False)
    logged = build_trainer(cfg, [], []).validate(model, datamodule=datamodule, verbose=False)[0]
    model.eval()
    table = MetricTable()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for batch in datamodule.val_dataloader():
            fake = model.translate(batch["cf"])
            with torch.autocast("cpu", enabled=False):
                table.add(batch["id"], batch.get("category"), image_quality(fake.float(), batch["ffa"], batch.get("fov")))
    expected = MetricTable.aggregate(table.gathered())
    for key in ("psnr", "ssim", "ssim_fov"):
        assert abs(logged[f"val/{key}"] - expected[key]) < 1e-4, (key, logged[f"val/{key}"], expected[key])
