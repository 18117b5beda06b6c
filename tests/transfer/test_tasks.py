"""Downstream tasks on tiny synthetic eyes: a linear probe trains only the head, segmentation learns vessels."""

import copy

import pytest
import torch

from fundus2ffa.errors import ConfigError
from fundus2ffa.transfer.backbone import BackboneSource, GeneratorEncoder, GeneratorSegmenter, build_generator
from fundus2ffa.transfer.readers import SyntheticEyes
from fundus2ffa.transfer.tasks import fit_classifier, fit_segmenter, retrieve, segmentation_scores

CPU = {"_target_": "lightning.Trainer", "accelerator": "cpu", "devices": 1, "precision": "32-true"}


def test_linear_probe_trains_only_the_head(tiny):
    generator_config = tiny["global"]
    data = SyntheticEyes(num_eyes=8, image_size=32, target="lesion").load()
    for mode in ("linear_probe", "finetune"):
        encoder = GeneratorEncoder(build_generator(generator_config))
        before = copy.deepcopy(encoder.state_dict())
        model, _ = fit_classifier(encoder, data, mode, {"steps": 5, "batch_size": 4, "lr": 1e-2}, CPU, seed=0)
        after = model.encoder.state_dict()
        unchanged = all(torch.equal(before[k], after[k]) for k in before)
        assert unchanged == (mode == "linear_probe"), mode
        assert model.head.weight.abs().sum() > 0


def test_frozen_encoder_segmentation_keeps_the_encoder(tiny):
    generator_config = tiny["global"]
    data = SyntheticEyes(num_eyes=4, image_size=32, target="vessel").load()
    net = GeneratorSegmenter(build_generator(generator_config), 1)
    encoder_before = copy.deepcopy(net.encoder.layers.state_dict())
    head_before = net.generator.model[-2].weight.clone()
    fit_segmenter(net, data, "frozen_encoder", {"steps": 3, "batch_size": 2, "lr": 1e-2}, CPU, seed=0)
    assert all(torch.equal(v, net.encoder.layers.state_dict()[k]) for k, v in encoder_before.items())
    assert not torch.equal(head_before, net.generator.model[-2].weight)


def test_segmentation_dice_rises_on_synthetic_vessels(tiny):
    generator_config = tiny["global"]
    torch.manual_seed(0)
    data = SyntheticEyes(num_eyes=10, image_size=64, target="vessel").load()
    train, test = data.subset(range(7)), data.subset(range(7, 10))
    assert 0.02 < float(test.masks.float().mean()) < 0.2  # vessels are there to be found
    config = {**generator_config, "ngf": 8}
    net = GeneratorSegmenter(build_generator(config), 1)
    before = segmentation_scores(net, test, torch.device("cpu"))["dice"]
    fit_segmenter(net, train, "finetune", {"steps": 60, "batch_size": 4, "lr": 5e-3}, CPU, seed=0)
    after = segmentation_scores(net, test, torch.device("cpu"))["dice"]
    assert after > before + 0.15 and after > 0.3, (before, after)


def test_retrieval_runs_zero_shot_and_matches_a_constructed_gallery(tiny):
    generator_config = tiny["global"]
    data = SyntheticEyes(num_eyes=6, image_size=32, target="pairs").load()
    source = BackboneSource(generator=generator_config)
    for query in ("cf", "generated"):
        m = retrieve(source, "random", data, query, CPU, seed=0)
        assert 0.0 <= m["recall@1"] <= m["recall@5"] <= m["recall@10"] == 1.0 and m["num_queries"] == 6
    data.images = data.paired.expand(-1, 3, -1, -1).clone()  # each query is its partner, replicated: it must rank first
    assert retrieve(source, "random", data, "cf", CPU, seed=0)["recall@1"] == 1.0


def test_symmetries_move_image_and_mask_together():
    """hflip / vflip / transpose at probability 1 compose to the anti-transpose, on every tensor of the batch."""
    from fundus2ffa.transfer.module import DownstreamModule

    image = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    mask = image[:, 0] > 30
    module = DownstreamModule(torch.nn.Identity(), "segmentation", hflip=1.0, vflip=1.0, transpose=1.0)
    out_image, out_mask = module._augment([image, mask])
    expected = image.flip(-1).flip(-2).transpose(-1, -2)
    assert torch.equal(out_image, expected) and torch.equal(out_mask, expected[:, 0] > 30)
    wide = torch.zeros(1, 3, 4, 6)  # no transpose of a non-square image
    assert module._augment([wide])[0].shape == wide.shape


def test_cosine_schedule_reaches_zero_in_a_real_fit(tiny):
    data = SyntheticEyes(num_eyes=4, image_size=32, target="vessel").load()
    net = GeneratorSegmenter(build_generator(tiny["global"]), 1)
    settings = {"steps": 6, "batch_size": 2, "lr": 1e-2, "lr_schedule": "cosine", "vflip": 0.5, "transpose": 0.5}
    trainer = fit_segmenter(net, data, "finetune", settings, CPU, seed=0)
    assert trainer.global_step == 6
    assert trainer.optimizers[0].param_groups[0]["lr"] < 1e-9  # cosine to zero at max_steps
    with pytest.raises(ConfigError, match="lr_schedule must be one of constant[|]cosine"):
        fit_segmenter(net, data, "finetune", {**settings, "lr_schedule": "step"}, CPU, seed=0)
