"""Downstream transfer of a trained CF -> FFA generator (Fundus2Video's journal follow-up, arXiv 2410.13242;
reference_spec 4.9): few-shot classification and segmentation, zero-shot CF <-> FFA retrieval, each beside
the same architecture from random initialisation and, when its weights are given, a timm ImageNet network.

    python -m fundus2ffa.transfer downstream=vessel_segmentation backbone.checkpoint=<run>/checkpoints/last.ckpt \
        downstream.data.root=/data/DRIVE
    python -m fundus2ffa.transfer.report outputs/transfer/runs/<time>

See experiments/zhang2024_transfer/README.md for the protocol and the tables.
"""

import importlib

# imported when first used: ``python -m fundus2ffa.transfer --help`` loads this package, and torch need not come
_EXPORTS = {
    "BackboneSource": "fundus2ffa.transfer.backbone", "GeneratorEncoder": "fundus2ffa.transfer.backbone",
    "GeneratorSegmenter": "fundus2ffa.transfer.backbone", "load_generator": "fundus2ffa.transfer.backbone",
    "few_shot_indices": "fundus2ffa.transfer.fewshot", "split_pool_test": "fundus2ffa.transfer.fewshot",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fundus2ffa.transfer' has no attribute {name!r}")
