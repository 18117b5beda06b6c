"""Fundus2Video's autoregressive training procedure (reference_spec 4.6, 4.7) and its video prediction."""

import functools
import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from conftest import compose_run
from fundus2ffa.data.dataset import collate_videos
from fundus2ffa.errors import ConfigError
from fundus2ffa.graph_memory import SavedTensorMeter
from fundus2ffa.losses.feature_matching import FeatureMatching
from fundus2ffa.models.autoregressive_gan import AutoregressiveVideoGAN, window_indices

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.lru_cache(maxsize=None)
def model_config() -> str:
    """The real model config, shrunk: ngf/ndf 4, one residual block, random VGG (YAML, composed once)."""
    cfg = compose_run([
        "model=fundus2video", "data=synthetic_video", "pretrained.vgg19=random",
        "generator.ngf=4", "generator.n_blocks=1", "generator.kba_hidden=8", "discriminator.ndf=4",
        "loss.patch_nce.num_patches=16",
    ])
    return OmegaConf.to_yaml(cfg.model, resolve=True)


def make_model(**overrides) -> AutoregressiveVideoGAN:
    cfg = OmegaConf.create(model_config())
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return instantiate(cfg, _recursive_=False)


def videos(count: int, frames: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(count):
        frames_t = torch.rand(frames, 1, SIZE, SIZE, generator=g) * 2 - 1
        km = (torch.rand(1, SIZE, SIZE, generator=g) > 0.5).float()
        items.append({"cf": torch.rand(3, SIZE, SIZE, generator=g) * 2 - 1, "frames": frames_t, "knowledge_mask": km,
                      "fov": torch.ones(1, SIZE, SIZE), "id": f"v{i}", "category": ""})
    return items


def fit(model, items, **trainer_kwargs) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    trainer.fit(model, DataLoader(items, batch_size=1, collate_fn=collate_videos))
    return trainer


# ----------------------------------------------------------------- scheduled sampling
def test_sampling_probability_follows_the_schedule():
    model = make_model()
    expected = {0: 1 / 2, 99: 1 / 2, 100: 2 / 3, 250: 3 / 4, 999: 10 / 11, 1000: 1.0, 5000: 1.0}
    for seen, pi in expected.items():
        assert model.sampling_probability(seen) == pytest.approx(pi), seen
    custom = make_model(**{"scheduled_sampling.step": 10, "scheduled_sampling.always_after": 30})
    assert [custom.sampling_probability(s) for s in (0, 10, 29, 30)] == pytest.approx([1 / 2, 2 / 3, 3 / 4, 1.0])  # k = 0, 1, 2
    assert make_model(**{"scheduled_sampling.mode": "real"}).sampling_probability(5000) == 0.0
    assert make_model(**{"scheduled_sampling.mode": "generated"}).sampling_probability(0) == 1.0


@pytest.mark.parametrize("count_current", [True, False])
def test_the_first_video_counts_itself_as_the_code_does(count_current):
    # train.py: total_steps += batchSize before the forward pass, so video 1 has s = 1. With step 1 that is
    # k = 1, pi = 2/3 for the first video and 3/4 for the second (count_current=false: 1/2, then 2/3).
    torch.manual_seed(0)
    model = make_model(**{"scheduled_sampling.step": 1, "scheduled_sampling.always_after": 100,
                          "scheduled_sampling.count_current": count_current})
    used = []
    original = model.choose_previous

    def choose_previous(generated, real, probability):
        used.append(probability)
        return original(generated, real, probability)

    model.choose_previous = choose_previous
    fit(model, videos(2, 2))
    expected = [2 / 3, 3 / 4] if count_current else [1 / 2, 2 / 3]
    assert used == pytest.approx(expected)  # one previous-window draw per video (frame 1 of 2)
    assert int(model.videos_seen) == 2


def test_generated_previous_windows_are_drawn_with_probability_pi():
    model = make_model()
    torch.manual_seed(0)
    draws, pi = 4000, model.sampling_probability(150)  # 2/3
    generated, real = torch.ones(draws, 3, 1, 1), torch.zeros(draws, 3, 1, 1)
    chosen, flags = model.choose_previous(generated, real, pi)
    assert torch.equal(chosen[:, 0, 0, 0].bool(), flags)  # the flag says which window was fed
    fraction = flags.float().mean().item()
    assert abs(fraction - pi) < 4 * math.sqrt(pi * (1 - pi) / draws)  # binomial 4-sigma bound


def test_window_indices_clamp_to_the_last_frame():
    assert [window_indices(n, 4) for n in range(4)] == [[0, 1, 2], [1, 2, 3], [2, 3, 3], [3, 3, 3]]


# ----------------------------------------------------------------- inference
class StubGenerator(nn.Module):
    """Window k (k-th call) is the constant 100 k + j in channel j; records its inputs."""

    in_channels, out_channels = 6, 3

    def __init__(self):
        super().__init__()
        self.inputs = []

    def encode(self, x, layers):  # pragma: no cover - not used at inference
        raise AssertionError

    def forward(self, x):
        self.inputs.append(x.clone())
        k = len(self.inputs) - 1
        values = torch.tensor([100.0 * k + j for j in range(3)]).view(1, 3, 1, 1)
        return values.expand(x.shape[0], 3, *x.shape[-2:]).clone()


@pytest.mark.parametrize("frames", [1, 2, 5])
def test_inference_averages_the_overlapping_window_predictions_exactly(frames):
    model = make_model()
    model.generator = StubGenerator()
    cf = torch.rand(2, 3, 16, 16)
    video = model.translate_video(cf, frames)
    assert video.shape == (2, frames, 1, 16, 16)
    for t in range(frames):
        covering = [n for n in range(frames) if n <= t <= n + 2]  # windows n = t-2, t-1, t that exist
        expected = sum(100.0 * n + (t - n) for n in covering) / len(covering)
        assert torch.all(video[:, t] == expected), (t, video[0, t, 0, 0, 0].item(), expected)
    inputs = model.generator.inputs
    assert torch.equal(inputs[0], torch.cat([cf, cf], 1))  # step 0: [CF, CF]
    for n in range(1, frames):  # afterwards the previous generated window, always
        assert torch.all(inputs[n][:, 3:] == torch.tensor([100.0 * (n - 1) + j for j in range(3)]).view(1, 3, 1, 1))
    model.generator = StubGenerator()
    last = model.translate(cf)  # the still-image view: the last of num_frames (12) frames
    assert last.shape == (2, 1, 16, 16) and torch.all(last == (100 * 9 + 2 + 100 * 10 + 1 + 100 * 11) / 3)


# ----------------------------------------------------------------- training
def step_counter(trainer, counts: dict) -> None:
    for name, opt in zip(("g", "d", "f"), trainer.optimizers):
        counts[name] = 0

        def hook(optimizer, args, kwargs, name=name):
            counts[name] += 1

        opt.register_step_post_hook(hook)


def test_one_generator_head_and_discriminator_step_per_window_and_everything_trains():
    torch.manual_seed(0)
    model = make_model()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    counts = {}

    class Count(L.Callback):
        def on_train_start(self, trainer, pl_module):
            step_counter(trainer, counts)

    frames, num_videos = 3, 2
    trainer = fit(model, videos(num_videos, frames), callbacks=[Count()])
    assert counts == {"g": frames * num_videos, "d": frames * num_videos, "f": frames * num_videos}
    assert int(model.videos_seen) == num_videos  # the scheduled-sampling counter
    after = model.state_dict()
    changed = lambda prefix: any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))  # noqa: E731
    assert changed("generator.model.") and changed("generator.attention.") and changed("discriminator.")
    assert changed("losses.patch_nce.heads.")  # F1 fixed: the projection heads train
    assert trainer.global_step == 3 * frames * num_videos


def test_frozen_nce_heads_reproduce_the_code_and_do_not_change():
    torch.manual_seed(0)
    model = make_model(**{"losses.patch_nce.freeze_head": True})
    heads = {k: v.clone() for k, v in model.losses["patch_nce"].heads.state_dict().items()}
    trainer = fit(model, videos(1, 2))
    assert len(trainer.optimizers) == 2  # no optimiser for a frozen head: G and D steps only
    assert all(torch.equal(v, model.losses["patch_nce"].heads.state_dict()[k]) for k, v in heads.items())
    assert trainer.global_step == 2 * 2


def graph_memory(frames: int) -> tuple[int, list[int]]:
    torch.manual_seed(0)
    model = make_model()
    meter = SavedTensorMeter()
    at_window_start = []
    original = model.generator_step

    def spy(*args, **kwargs):
        at_window_start.append(meter.live)
        return original(*args, **kwargs)

    model.generator_step = spy
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        fit(model, videos(1, frames))
    return meter.peak, at_window_start


def test_graph_memory_is_flat_in_the_number_of_frames():
    """Memory measure (robust on CPU): the bytes autograd saves for backward, tracked with saved-tensor
    hooks. No graph may survive into the next window (0 bytes held when a window starts), so the peak
    is that of one window and the same for 2 and 5 frames."""
    peak_2, starts_2 = graph_memory(2)
    peak_5, starts_5 = graph_memory(5)
    assert peak_2 > 0 and len(starts_5) == 5
    assert starts_2 == [0, 0] and starts_5 == [0] * 5
    assert peak_5 == peak_2


def test_feature_matching_real_features_come_from_the_unmasked_pass_unless_fm_bug_compat():
    seen = {}
    original = FeatureMatching.forward

    def spy(self, inputs):
        if "masked" not in seen:
            model = seen["model"]
            real_pair = torch.cat([inputs.cf, inputs.real], 1)
            km = inputs.extra["knowledge_mask"]
            with torch.no_grad():
                unmasked, masked = model.discriminator(real_pair), model.discriminator(real_pair * km)
            got = inputs.pred_real[0][0]
            seen["masked"] = torch.allclose(got, masked[0][0]) and not torch.allclose(got, unmasked[0][0])
            seen["unmasked"] = torch.allclose(got, unmasked[0][0])
        return original(self, inputs)

    results = {}
    for compat in (False, True):
        torch.manual_seed(0)
        seen.clear()
        seen["model"] = make_model(fm_bug_compat=compat)
        FeatureMatching.forward = spy
        try:
            fit(seen["model"], videos(1, 1))
        finally:
            FeatureMatching.forward = original
        results[compat] = (seen["unmasked"], seen["masked"])
    assert results == {False: (True, False), True: (False, True)}


def test_oracle_train_boosts_with_the_downsampled_knowledge_mask_in_training_only():
    torch.manual_seed(0)
    model = make_model(kba_mode="oracle_train")
    calls = []
    original = model.generator.forward

    def spy(x, return_attention=False, oracle=None):
        calls.append(oracle)
        return original(x, return_attention=return_attention, oracle=oracle)

    model.generator.forward = spy
    items = videos(1, 1)
    fit(model, items)
    km = items[0]["knowledge_mask"][None]
    assert len(calls) == 1 and set(calls[0]) == {"bottleneck"}
    torch.testing.assert_close(calls[0]["bottleneck"], torch.nn.functional.avg_pool2d(km, 16))  # area, 32 -> 2 px
    model.translate_video(items[0]["cf"][None], 2)
    assert calls[1:] == [None, None]  # inference uses the predicted attention


def test_counter_is_in_the_checkpoint_state_and_still_image_data_is_refused():
    model = make_model()
    model.videos_seen += 437
    clone = make_model()
    clone.load_state_dict(model.state_dict())
    assert int(clone.videos_seen) == 437 and clone.sampling_probability(int(clone.videos_seen)) == pytest.approx(5 / 6)
    model._trainer = SimpleNamespace(datamodule=SimpleNamespace())  # a still-image datamodule has no kind
    with pytest.raises(ConfigError, match="add data=synthetic_video"):
        model.setup("fit")
    model._trainer = None


def test_ablations_remove_their_terms():
    assert "gan_km" not in make_model(**{"losses.gan_km.weight": 0}).active_terms
    assert "patch_nce" not in make_model(**{"losses.patch_nce.weight": 0}).active_terms
    no_att = make_model(**{"generator.kba": False})
    assert "attention" not in no_att.active_terms and not no_att.has_attention
    no_km = make_model(knowledge_mask=False)
    assert not {"attention", "gan_km"} & set(no_km.active_terms) and "patch_nce" in no_km.active_terms
    with pytest.raises(InstantiationException, match="model.km_disc must be one of shared|separate"):
        make_model(km_disc="twin")  # run.py unwraps the ConfigError from Hydra's wrapper
    separate = make_model(km_disc="separate")
    assert separate.km_net is not separate.discriminator


# ----------------------------------------------------------------- prediction
def test_predict_writes_one_video_per_cf_in_every_format(tmp_path):
    import imageio.v2 as imageio
    import imageio.v3 as iio

    from fundus2ffa.writers import write_png
    from fundus2ffa.run import run

    torch.manual_seed(0)
    model = make_model()
    trainer = fit(model, videos(1, 1))
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    inputs = tmp_path / "cf"
    rng = np.random.default_rng(0)
    for name, (h, w) in {"eye_a": (45, 37), "eye_b": (32, 32)}.items():
        write_png(inputs / f"{name}.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))

    def predict(fmt: str, out: Path):
        cfg = compose_run(["model=fundus2video", "data=synthetic_video", "task=predict", f"ckpt_path={ckpt}",
                           f"predict.input_dir={inputs}", f"predict.output_dir={out}", f"predict.video_format={fmt}",
                           "predict.num_frames=4", f"predict.image_size={SIZE}", "trainer=cpu"], tmp_path)
        return run(cfg)

    written = predict("mp4", tmp_path / "mp4")
    assert sorted(Path(p).name for p in written) == ["eye_a.mp4", "eye_b.mp4"]
    reader = imageio.get_reader(tmp_path / "mp4" / "eye_a.mp4", format="FFMPEG")
    frames = [f for f in reader]
    reader.close()
    assert len(frames) == 4 and frames[0].shape[:2] == (46, 38)  # odd sides padded to even for H.264
    gif = iio.imread(predict("gif", tmp_path / "gif")[0])
    assert gif.shape[0] == 4 and gif.shape[1:3] == (45, 37)
    png_dir = Path(predict("png", tmp_path / "png")[0])
    assert sorted(p.name for p in png_dir.iterdir()) == [f"frame_{t:03d}.png" for t in range(4)]
    with pytest.raises(ConfigError, match="predict.video_format"):
        predict("avi", tmp_path / "avi")
    assert not (tmp_path / "avi").exists()  # nothing written before the check
