"""Tiny generators saved as training checkpoints (the layout the GAN modules write), for transfer tests."""

import pytest
import torch

from fundus2ffa.transfer.backbone import build_generator

GLOBAL = {"_target_": "fundus2ffa.nets.generators.pix2pixhd.GlobalGenerator", "in_channels": 3, "out_channels": 1,
          "ngf": 4, "n_downsampling": 3, "n_blocks": 2}
VIDEO = {"_target_": "fundus2ffa.nets.generators.fundus2video.Fundus2VideoGenerator", "ngf": 4, "n_downsampling": 3,
         "n_blocks": 2, "kba": True, "kba_hidden": 8}


def save_checkpoint(path, config, prefix="generator.", seed=0):
    torch.manual_seed(seed)
    generator = build_generator(config)
    torch.save({"state_dict": {prefix + k: v for k, v in generator.state_dict().items()},
                "hyper_parameters": {"generator": dict(config)}, "epoch": 1}, path)
    return generator


@pytest.fixture
def tiny():
    """Generator configs: ``global`` (pix2pixHD global, 3 -> 1) and ``video`` (Fundus2Video with attention)."""
    return {"global": dict(GLOBAL), "video": dict(VIDEO)}


@pytest.fixture
def global_checkpoint(tmp_path):
    path = tmp_path / "global.ckpt"
    return path, save_checkpoint(path, GLOBAL)


@pytest.fixture
def video_checkpoint(tmp_path):
    path = tmp_path / "video.ckpt"
    return path, save_checkpoint(path, VIDEO)
