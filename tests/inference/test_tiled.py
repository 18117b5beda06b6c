"""Tiled full-resolution translation agrees with the whole-image pass, shows no seam, and tiles every
window step of a video model (issue 12, item 2)."""

import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_run, synthetic_pairs
from fundus2ffa.data.transforms import to_tensor_pm1
from fundus2ffa.errors import ConfigError
from fundus2ffa.inference.tiled import TileSettings, tiled_apply, tiled_translate_video
from fundus2ffa.nets.generators import ResnetGenerator

pytestmark = pytest.mark.usefixtures("one_thread")
GREY_LEVEL = 2.0 / 255.0  # one 8-bit level in [-1, 1]


def fully_convolutional(norm: str = "batch") -> torch.nn.Module:
    """A small ResNet generator (receptive field about +-22 px) in eval mode, Kaiming-initialised so
    its output spans the range (the pix2pix N(0, 0.02) init gives a near-constant output, which would
    make agreement trivial). BatchNorm in eval is a per-channel affine map: translation-equivariant."""
    torch.manual_seed(0)
    return ResnetGenerator(3, 1, ngf=8, n_blocks=1, norm=norm, init_type="kaiming").eval()


@pytest.fixture(scope="module")
def eye() -> torch.Tensor:
    """A synthetic fundus whose sides (202 x 262) are not multiples of the tile or the generator's 4."""
    return to_tensor_pm1(synthetic_pairs(1, 202, 262, seed=5)[0][0])[None]


def whole(net, x: torch.Tensor) -> torch.Tensor:
    from fundus2ffa.nets.padding import pad_to_multiple

    padded, crop = pad_to_multiple(x, 4)
    with torch.no_grad():
        out = net(padded)
    return out if crop is None else out[..., crop[0], crop[1]]


def test_tiled_matches_whole_image_on_a_fully_convolutional_generator(eye):
    net = fully_convolutional()
    reference = whole(net, eye)
    assert reference.std() > 0.2  # a real image, not a flat one
    tiled = tiled_apply(net, eye, TileSettings(size=128, overlap=0.5, blend="gaussian", batch=3), multiple=4)
    error = (tiled - reference).abs()
    # measured 1.1e-3 (0.14 grey levels) max, 5e-5 mean: the overlap (64 px) covers the receptive field
    assert error.max() < 0.5 * GREY_LEVEL, error.max()
    # the same tiles averaged without weights: the cut tile edges show (measured 0.29 max)
    plain = tiled_apply(net, eye, TileSettings(size=128, overlap=0.5, blend="constant"), multiple=4)
    assert (plain - reference).abs().max() > 20 * GREY_LEVEL


def test_no_visible_seam_on_a_constant_input():
    net = fully_convolutional()
    flat = torch.full((1, 3, 202, 262), 0.3)
    reference = whole(net, flat)
    tiled = tiled_apply(net, flat, TileSettings(size=128, overlap=0.5, blend="gaussian"), multiple=4)
    to8 = lambda t: ((t.clamp(-1, 1) + 1) * 127.5).round()  # noqa: E731
    # 8-bit outputs differ by at most one level anywhere, tile boundaries included
    assert (to8(tiled) - to8(reference)).abs().max() <= 1


def test_instance_norm_generators_are_not_tile_equivariant(eye):
    """The documented limitation: per-tile instance statistics change the output (a contrast change
    across the whole tile, not only at seams); tiling them is an approximation."""
    net = fully_convolutional("instance")
    reference = whole(net, eye)
    tiled = tiled_apply(net, eye, TileSettings(size=128, overlap=0.5), multiple=4)
    assert (tiled - reference).abs().mean() > 5 * GREY_LEVEL


def test_video_model_tiles_each_window_step():
    cfg = compose_run([
        "model=fundus2video", "data=synthetic_video", "pretrained.vgg19=random", "generator.ngf=4",
        "generator.n_blocks=1", "generator.kba=false", "generator.norm=batch", "generator.n_downsampling=2",
        "discriminator.ndf=4", "loss.patch_nce.num_patches=16", "loss.vgg.weight=0",
    ])
    model = instantiate(cfg.model, _recursive_=False).eval()
    torch.manual_seed(1)
    cf = torch.rand(1, 3, 48, 80) * 2 - 1
    shapes = []
    generator = model.generator
    model.generator.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
    settings = TileSettings(size=32, overlap=0.5, batch=16)
    video = tiled_translate_video(model, cf, 4, settings, multiple=4)
    assert video.shape == (1, 4, 1, 48, 80)
    # 4 window steps, each one batched call on the 2 x 4 tiles of 32 px (step 16) of the 6-channel input
    assert shapes == [(8, 6, 32, 32)] * 4
    # one tile covering the image is the plain window loop
    shapes.clear()
    single = tiled_translate_video(model, cf, 4, TileSettings(size=128), multiple=16)
    torch.testing.assert_close(single, model.translate_video(cf, 4), rtol=0, atol=1e-5)
    assert generator is model.generator


def test_settings_are_checked_and_switch_on_above_the_size():
    with pytest.raises(ConfigError, match="predict.tiled.overlap"):
        TileSettings(overlap=1.0)
    with pytest.raises(ConfigError, match="predict.tiled.blend"):
        TileSettings.from_config({"blend": "cosine"})
    with pytest.raises(ConfigError, match=r"unknown predict.tiled keys \['tile'\]"):
        TileSettings.from_config({"tile": 256})
    settings = TileSettings(auto_above=2048)
    assert settings.wants_tiles(3000, 4000) and not settings.wants_tiles(2048, 1536)
    assert not TileSettings(auto_above=None).wants_tiles(3000, 4000)
