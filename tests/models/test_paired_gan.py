"""PairedGAN learns: validation PSNR rises on the synthetic retina, and each step updates what it should."""

import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_run
from fundus2ffa.builders import build, build_trainer
from fundus2ffa.errors import ConfigError


def test_val_psnr_rises_on_synthetic_retina(tmp_path):
    cfg = compose_run(
        [
            "logger=csv",
            "trainer=cpu",
            "data.reader.num_pairs=16",
            "generator.ngf=8",
            "discriminator.ndf=8",
            "model.schedule.constant_epochs=5",
            "model.schedule.decay_epochs=0",
            "model.optimizer_g.lr=1e-3",
            "trainer.enable_progress_bar=false",
            "trainer.num_sanity_val_steps=0",
            "~callbacks.samples",
        ],
        tmp_path,
    )
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, _recursive_=False)
    trainer = build_trainer(cfg, [], [])
    before = trainer.validate(model, datamodule=datamodule, verbose=False)[0]["val/psnr"]
    trainer.fit(model, datamodule=datamodule)
    after = trainer.validate(model, datamodule=datamodule, verbose=False)[0]["val/psnr"]
    print(f"val PSNR before {before:.2f} dB, after {after:.2f} dB")
    assert after > before + 5.0


def test_discriminator_step_leaves_generator_alone_and_vice_versa(tmp_path):
    cfg = compose_run(["debug=smoke", "data.reader.num_pairs=4"], tmp_path)
    model = instantiate(cfg.model, _recursive_=False)
    batch = {"cf": torch.rand(1, 3, 256, 256) * 2 - 1, "ffa": torch.rand(1, 1, 256, 256) * 2 - 1}
    opt_g, opt_d = model.configure_optimizers()[0]
    model.trainer = None
    g0 = [p.detach().clone() for p in model.generator.parameters()]
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    model.manual_backward = lambda loss: loss.backward()
    model.toggle_optimizer = model.untoggle_optimizer = lambda opt: None
    model.log_terms = lambda *a, **k: None
    fake = model.generator(batch["cf"])
    model._discriminator_step(opt_d, batch["cf"], batch["ffa"], fake, 1)
    assert all(torch.equal(a, b) for a, b in zip(g0, model.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters()))
    d1 = [p.detach().clone() for p in model.discriminator.parameters()]
    model._generator_step(opt_g, batch, fake, 1)
    assert all(torch.equal(a, b) for a, b in zip(d1, model.discriminator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g0, model.generator.parameters()))


def test_li2020_pix2pix_runs_its_unet_256_on_256_squares_and_scores_native_patches():
    # issue 10, item 12: the baseline's generator sees the 256x256 input it was designed for, not a 288x360
    # patch reflection-padded to 512x512; evaluation maps back to the native patch.
    cfg = compose_run(["experiment=li2020/pix2pix", "debug=smoke", "generator.ngf=4", "discriminator.ndf=4"])
    assert list(cfg.model.generator_input_size) == [256, 256] and cfg.generator.num_downs == 8
    assert compose_run(["experiment=li2020/pix2pix_padded"]).model.generator_input_size is None
    model = build(cfg.model, "model", _recursive_=False)
    seen = []
    model.generator.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape[-2:])))
    cf = torch.rand(1, 3, 288, 360) * 2 - 1
    with torch.no_grad():
        out = model.eval().translate(cf)
    assert seen == [(256, 256)] and out.shape == (1, 1, 288, 360) and out.abs().max() <= 1
    batch = {"cf": cf, "ffa": torch.rand(1, 1, 288, 360) * 2 - 1, "fov": torch.ones(1, 1, 288, 360, dtype=torch.bool)}
    small = model.generator_batch(batch)
    assert small["cf"].shape[-2:] == small["ffa"].shape[-2:] == small["fov"].shape[-2:] == (256, 256)
    assert small["fov"].dtype == torch.bool


def test_li2020_pix2pix_trains_on_pix2pix_resize_and_crop_and_tests_on_a_pil_256_input(isfahan_root):
    """Issue 20 item 3: pix2pix's default --preprocess resize_and_crop loads each training image at 286x286
    (PIL bicubic on 8 bits) and random-crops 256 (one crop for A and B); test.py resizes to 256x256 the
    same way. Each training sample must be exactly such a crop of the PIL-resized quadrant patch, and the
    generator's evaluation input exactly the PIL-resized CF."""
    import numpy as np
    from PIL import Image

    from conftest import data_overrides

    cfg = compose_run(["experiment=li2020/pix2pix", "debug=smoke", "generator.ngf=4", "discriminator.ndf=4",
                       *data_overrides("isfahan_li2020", isfahan_root, isfahan_root)])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    dataset = datamodule.datasets["train"]
    raw = dataset.reader.load(dataset.records[0])
    patch_cf, patch_ffa = raw.cf[:288, :360], raw.frames[0][:288, :360]  # view 0: the top-left quadrant

    def pil(image, size):
        return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size[::-1], Image.BICUBIC))

    for seed in range(4):
        sample = dataset.draw(0, seed=seed, view=0)
        assert sample.cf.shape == (256, 256, 3) and sample.frames[0].shape == (256, 256)
        found = [
            (flip, top, left)
            for flip in (False, True)
            for resized in [pil(patch_cf[:, ::-1] if flip else patch_cf, (286, 286))]
            for top in range(31) for left in range(31)
            if np.array_equal(resized[top : top + 256, left : left + 256], sample.cf)
        ]
        assert len(found) == 1, (seed, found)
        flip, top, left = found[0]
        ffa = pil(patch_ffa[:, ::-1] if flip else patch_ffa, (286, 286))
        assert np.array_equal(ffa[top : top + 256, left : left + 256], sample.frames[0])  # the same crop

    model = build(cfg.model, "model", _recursive_=False)
    seen = []
    model.generator.register_forward_hook(lambda module, args, out: seen.append(args[0].clone()))
    cf = np.random.default_rng(0).integers(0, 256, (288, 360, 3), dtype=np.uint8)
    x = torch.from_numpy(cf).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        out = model.eval().translate(x)
    expected = torch.from_numpy(pil(cf, (256, 256)).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=1e-6)
    assert out.shape == (1, 1, 288, 360)
    with pytest.raises(ConfigError, match="model.generator_input_resize"):
        build(compose_run(["experiment=li2020/pix2pix", "model.generator_input_resize=area"]).model, "model", _recursive_=False)
