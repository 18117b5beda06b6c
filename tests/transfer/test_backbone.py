"""Backbones: trained generators from checkpoints (weights_only), encoders per family, explicit ImageNet weights."""

import pytest
import torch

from fundus2ffa.errors import WeightsError
from fundus2ffa.transfer.backbone import _output_layer, BackboneSource, GeneratorEncoder, GeneratorSegmenter, build_generator, load_generator


def test_checkpoint_round_trip_gives_the_trained_weights(global_checkpoint, tiny):
    path, original = global_checkpoint
    loaded, config = load_generator(path)
    assert config == tiny["global"]
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), original(x))
    fresh = BackboneSource(str(path)).generator_for("random")  # same architecture, new weights
    assert [p.shape for p in fresh.parameters()] == [p.shape for p in original.parameters()]
    assert not torch.equal(next(fresh.parameters()), next(original.parameters()))


def test_fundus2video_encoder_sees_cf_twice_and_applies_the_bottleneck_attention(video_checkpoint):
    path, generator = video_checkpoint
    encoder = GeneratorEncoder(load_generator(path)[0])
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    last_block = generator.layer_index("block", generator.n_blocks - 1)
    with torch.no_grad():
        plain = generator.encode(torch.cat([x, x], 1), [last_block])[0]
        expected = plain * (1 + generator.attention["bottleneck"](plain))
        assert torch.allclose(encoder(x), expected, atol=1e-6)
        assert encoder.pooled(x).shape == (2, encoder.out_channels) == (2, 32)
        grey = encoder.pooled(x[:, :1])  # an FFA enters as [ffa x3, ffa x3]
        assert torch.allclose(grey, encoder.pooled(x[:, :1].expand(-1, 3, -1, -1)))


@pytest.mark.parametrize("config", [
    "global", "video",
    {"_target_": "fundus2ffa.nets.generators.resnet.ResnetGenerator", "ngf": 4, "n_blocks": 1},
    {"_target_": "fundus2ffa.nets.generators.unet.UNetGenerator", "ngf": 4, "num_downs": 5},
    {"_target_": "fundus2ffa.nets.generators.fundus2angio.CoarseFineGenerator", "ngf": 4, "n_blocks_coarse": 1, "n_blocks_fine": 1},
])
def test_segmenter_replaces_the_output_layer_with_a_logit_head(config, tiny):
    config = tiny[config] if isinstance(config, str) else config
    net = GeneratorSegmenter(build_generator(config), num_classes=3)
    logits = net(torch.rand(1, 3, 32, 32) * 2 - 1)
    assert logits.shape == (1, 3, 32, 32)
    owner, name = _output_layer(net.generator)
    assert owner[int(name)].out_channels == 3 and isinstance(owner[int(name) + 1], torch.nn.Identity)  # logits, no tanh


def test_bad_weight_sources_are_named_errors(tmp_path, tiny):
    generator_config = tiny["global"]
    with pytest.raises(WeightsError, match="backbone.checkpoint=.*missing.ckpt: no such checkpoint"):
        BackboneSource(str(tmp_path / "missing.ckpt")).check(["pretrained"])
    with pytest.raises(WeightsError, match="backbone.imagenet.weights is not set"):
        BackboneSource(generator=generator_config).check(["random", "imagenet"])

    class Evil:
        def __reduce__(self):
            return (print, ("this ran",))

    bad = tmp_path / "code.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"generator": generator_config}, "payload": Evil()}, bad)
    with pytest.raises(WeightsError, match="backbone.checkpoint=.*refused to load checkpoint"):
        load_generator(bad)


def test_imagenet_weights_from_a_file_are_loaded(tmp_path, tiny):
    timm = pytest.importorskip("timm")
    reference = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    source = BackboneSource(generator=tiny["global"], imagenet={"model": "resnet18", "weights": str(path)})
    source.check(["imagenet"])
    encoder = source.encoder("imagenet")
    assert torch.equal(encoder.layers.conv1.weight, reference.conv1.weight)
    segmenter = source.segmenter("imagenet", 1)
    assert torch.equal(segmenter.encoder.conv1.weight, reference.conv1.weight)
    assert segmenter.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)
