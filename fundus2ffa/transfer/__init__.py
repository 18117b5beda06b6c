"""Downstream transfer of a trained CF -> FFA generator (Fundus2Video's journal follow-up, arXiv 2410.13242;
reference_spec 4.9): few-shot classification and segmentation, zero-shot CF <-> FFA retrieval, each beside
the same architecture from random initialisation and, when its weights are given, a timm ImageNet network.

    python -m fundus2ffa.transfer downstream=vessel_segmentation backbone.checkpoint=<run>/checkpoints/last.ckpt \
        downstream.data.root=/data/DRIVE
    python -m fundus2ffa.transfer.report outputs/transfer/runs/<time>

See experiments/zhang2024_transfer/README.md for the protocol and the tables.
"""

from fundus2ffa.transfer.backbone import BackboneSource, GeneratorEncoder, GeneratorSegmenter, load_generator
from fundus2ffa.transfer.fewshot import few_shot_indices, split_pool_test

__all__ = ["BackboneSource", "GeneratorEncoder", "GeneratorSegmenter", "few_shot_indices", "load_generator", "split_pool_test"]
