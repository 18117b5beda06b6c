"""Realism beside fidelity (issue 22 item 1): FID and KID of generated FFA against sets of real FFA.

PSNR and SSIM reward blur: on the ultra-widefield eyes pix2pix beat the constant and linear predictors on
both while drawing dark fields with faint strokes, and nothing measured whether its output looks like an
angiogram. FID and KID (metrics/fid.py, the offline FID Inception of metrics/inception.py) compare the
distribution of the generated images with real angiograms, so a blurred or grey output scores badly
whatever its PSNR.

Reference sets (each named, with its size and source, in metrics.json ``realism.references``):

* ``test``: the real FFA of the test pairs (the usual paired FID; keys ``fid``, ``kid``, ``kid_std``);
* ``train``: the FFA targets of the training split, at the evaluation size (keys ``fid_train``, ...): a
  reference the test images never entered;
* ``frames``: a folder of real FFA frames (``realism.reference_dir``, read recursively, grey, resized to
  the evaluation size; keys ``fid_frames``, ...), e.g. ../shared/data/ffa_frames/origin_data/01.phase_identification.

FID depends on the number of images (it is biased upwards for small sets), so every table also scores
the real test FFA itself against ``train`` and ``frames`` (metrics.json ``realism.real_test_ffa``): the
value a perfect generator would get at this N. KID is unbiased.
"""

import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from fundus2ffa.metrics.fid import frechet_distance, kernel_inception_distance

log = logging.getLogger(__name__)
REFERENCE_NAMES = ("test", "train", "frames")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def metric_keys(reference: str) -> tuple[str, str, str]:
    """(fid, kid, kid_std) key names for ``reference`` (the paired ``test`` set keeps the plain names)."""
    suffix = "" if reference == "test" else f"_{reference}"
    return f"fid{suffix}", f"kid{suffix}", f"kid_std{suffix}"


def frame_files(folder: str | Path, limit: int | None = None) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted; macOS ``._*`` files skipped), evenly thinned to
    ``limit``."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        from fundus2ffa.errors import DataError

        raise DataError(f"realism.reference_dir {root} is not a folder; give a folder of real FFA frames or set it to null")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in FRAME_SUFFIXES and not p.name.startswith("._"))
    if limit and len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, int(limit)).round().astype(int)]
    return files


def read_frames(files: list[Path], size: tuple[int, int]) -> torch.Tensor:
    """N x 1 x H x W uint8: the frames as grey (an RGB-stored grey frame: its mean), resized to ``size``
    (H, W) with area interpolation, as the generated images are at the evaluation size."""
    from fundus2ffa.data.io import read_grey

    out = []
    for path in files:
        grey = read_grey(path, where="realism.reference_dir")  # uint8 (16-bit files scaled)
        if grey.shape[:2] != tuple(size):
            grey = cv2.resize(grey, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        out.append(torch.from_numpy(np.ascontiguousarray(grey))[None])
    return torch.stack(out) if out else torch.zeros(0, 1, *size, dtype=torch.uint8)


class Realism:
    """Inception features of named reference sets, and the FID/KID of any feature set against each.

    ``extractor``: an :class:`~fundus2ffa.metrics.inception.InceptionFeatures` (uint8 in, N x 2048 out).
    """

    def __init__(self, extractor, kid_subsets: int = 100, kid_subset_size: int = 50, seed: int = 0):
        self.extractor = extractor
        self.kid_subsets, self.kid_subset_size, self.seed = int(kid_subsets), int(kid_subset_size), int(seed)
        self.references: dict[str, dict] = {}

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """N x 2048 float64 (CPU) features of N x C x H x W images: uint8, or [-1, 1] model-range tensors."""
        if images.dtype == torch.uint8:
            return self.extractor(images).double().cpu()
        return self.extractor.features_from_model_range(images.float()).double().cpu()

    def add_reference(self, name: str, features: torch.Tensor, source: str) -> None:
        self.references[name] = {"features": features.double().cpu(), "count": int(features.shape[0]), "source": source}

    def scores(self, features: torch.Tensor) -> dict[str, float]:
        """{fid[_ref], kid[_ref], kid_std[_ref]} of ``features`` against every reference of at least 2 images."""
        out = {}
        if features.shape[0] < 2:
            return out
        for name, reference in self.references.items():
            if reference["count"] < 2:
                continue
            fid, kid, kid_std = metric_keys(name)
            out[fid] = float(frechet_distance(reference["features"], features))
            mean, std = kernel_inception_distance(
                reference["features"], features, self.kid_subsets, self.kid_subset_size, seed=self.seed
            )
            out[kid], out[kid_std] = float(mean), float(std)
        return out

    def describe(self) -> dict[str, dict]:
        """{name: {'count', 'source'}} of the reference sets (metrics.json ``realism.references``)."""
        return {name: {"count": r["count"], "source": r["source"]} for name, r in self.references.items()}

    def real_test_scores(self) -> dict[str, float]:
        """The real test FFA against the other references: the value a perfect generator gets at this N."""
        test = self.references.get("test")
        if test is None:
            return {}
        others = {k: v for k, v in self.references.items() if k != "test"}
        saved, self.references = self.references, others
        try:
            return self.scores(test["features"])
        finally:
            self.references = saved
