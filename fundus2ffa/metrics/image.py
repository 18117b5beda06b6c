"""Per-image PSNR and SSIM, on the whole image and inside the field-of-view mask.

Standard definitions (reference_spec 6.2): images in [0, 1] with data_range 1, which on 8-bit images
is PSNR with a peak of 255 (Li et al. section 2.5); SSIM of Wang et al. (11x11 Gaussian, sigma 1.5,
K1 0.01, K2 0.03) from torchmetrics. The FOV variants average the squared error and the SSIM map
inside the mask only, so the black surround does not inflate the score. An image whose mask is empty
(a crop outside the field of view, e.g. the kamran2020 quadrant crops at 128 px) has no FOV score: NaN,
not the 100 dB / 0 that an empty average would give, and means leave it out and count it
(``fov_empty`` in :meth:`MetricTable.aggregate`).

A ``valid`` mask (the overlap of a registered pair, ``python -m fundus2ffa.register``) removes the
pixels where no real FFA exists from every score: ``psnr``/``ssim`` then average inside ``valid`` and
``psnr_fov``/``ssim_fov`` inside ``fov`` x ``valid``; without it nothing changes.

Scores are kept per image (:class:`MetricTable`) and averaged at the end: the mean of per-image PSNR,
as papers report it, and exact per-category breakdowns and DDP gathering (duplicates that a
distributed sampler pads in are dropped by image id).
"""

from collections import defaultdict

import math

import torch
import torch.distributed as dist
from torchmetrics.functional.image import structural_similarity_index_measure

from fundus2ffa.metrics.convert import to_unit
from fundus2ffa.metrics.full_precision import full_precision

MAX_PSNR = 100.0


def _psnr(mse: torch.Tensor) -> torch.Tensor:
    return (10.0 * torch.log10(1.0 / mse.clamp_min(10 ** (-MAX_PSNR / 10)))).clamp_max(MAX_PSNR)


@torch.no_grad()
@full_precision
def image_quality(
    fake: torch.Tensor,
    real: torch.Tensor,
    fov: torch.Tensor | None = None,
    quantize: bool = True,
    valid: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-image scores of N x C x H x W tensors in [-1, 1]: psnr, ssim (and psnr_fov, ssim_fov),
    restricted to ``valid`` (N x 1 x H x W, {0, 1}) when given."""
    f, r = to_unit(fake, quantize), to_unit(real, quantize)
    err = (f - r) ** 2
    ssim, ssim_map = structural_similarity_index_measure(
        f, r, data_range=1.0, reduction="none", return_full_image=True
    )
    if valid is None:
        out = {"psnr": _psnr(err.flatten(1).mean(1)), "ssim": ssim}
    else:
        weight = valid.float().expand_as(err)
        area = weight.flatten(1).sum(1).clamp_min(1.0)
        out = {
            "psnr": _psnr((err * weight).flatten(1).sum(1) / area),
            "ssim": (ssim_map * weight).flatten(1).sum(1) / area,
        }
        fov = valid if fov is None else fov * valid
    if fov is not None:
        weight = fov.float().expand_as(err)
        area = weight.flatten(1).sum(1)
        empty = area <= 0
        safe = area.clamp_min(1.0)
        nan = torch.full_like(area, float("nan"))
        out["psnr_fov"] = torch.where(empty, nan, _psnr((err * weight).flatten(1).sum(1) / safe))
        out["ssim_fov"] = torch.where(empty, nan, (ssim_map * weight).flatten(1).sum(1) / safe)
    return out


class MetricTable:
    """Rows of per-image scores, aggregated overall and per category (gathered across DDP ranks)."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, ids, categories, scores: dict[str, torch.Tensor]) -> None:
        values = {k: v.detach().float().cpu().tolist() for k, v in scores.items()}
        for i, sample_id in enumerate(ids):
            row = {"id": sample_id, "category": categories[i] if categories else ""}
            row.update({k: v[i] for k, v in values.items()})
            self.rows.append(row)

    def gathered(self) -> list[dict]:
        """All ranks' rows, one per image id, in id order."""
        rows = self.rows
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, rows)
            rows = [row for part in parts for row in part]
        unique = {row["id"]: row for row in rows}
        return [unique[k] for k in sorted(unique)]

    @staticmethod
    def aggregate(rows: list[dict]) -> dict[str, float]:
        """{'psnr': mean, ..., 'psnr/<category>': mean, ..., 'count': images[, 'fov_empty': n]} over rows.

        NaN scores (an empty field of view) are left out of each mean; ``fov_empty`` counts the images
        without a FOV score. A metric with no valid score at all is NaN."""
        if not rows:
            return {}
        keys = [k for k in rows[0] if k not in ("id", "category")]
        out = {k: nan_mean([r[k] for r in rows]) for k in keys}
        by_category = defaultdict(list)
        for r in rows:
            if r["category"]:
                by_category[r["category"]].append(r)
        if len(by_category) > 1:
            for category, part in sorted(by_category.items()):
                for k in keys:
                    out[f"{k}/{category}"] = nan_mean([r[k] for r in part])
        out["count"] = float(len(rows))
        fov_keys = [k for k in keys if k.endswith("_fov")]
        if fov_keys:
            out["fov_empty"] = float(sum(1 for r in rows if any(_is_nan(r[k]) for k in fov_keys)))
        return out


def _is_nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def nan_mean(values) -> float:
    """The mean of the values that are not NaN (NaN when none is)."""
    kept = [float(v) for v in values if not _is_nan(v)]
    return sum(kept) / len(kept) if kept else float("nan")
