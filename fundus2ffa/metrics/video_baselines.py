"""Trivial predictors scored beside every video evaluation (issue 22 item 1).

The still-image baselines (metrics/baselines.py) say what a PSNR/SSIM means for a translation model; a
video table (Fundus2Video, the ultra-widefield phases) had nothing of the kind, so a generated sequence
that only brightens over time could not be told from one that draws the angiogram. Two predictors that
know nothing about angiography beyond the training videos' brightness, fitted on the training videos
(under the evaluation transform, grey frames as the model is scored) and scored on the same test videos
with :func:`fundus2ffa.metrics.video.video_quality` and the model's own settings (quantize, compat_mode,
the released code's ``*_compat`` scores beside the standard ones, the field-of-view mask):

* ``constant``: frame t of every video is the mean intensity of frame t over the training videos (the
  dye's rise and fall over the sequence, nothing about the eye);
* ``linear``: frame t is a per-pixel affine map of the CF channels, ``w_r r + w_g g + w_b b + c``, fitted
  by least squares on frame t of the training videos (the still-image ``linear`` baseline, once per
  frame index).

A test video longer than every training video takes the last fitted frame index for its later frames.
"""

import torch
from torch.utils.data import DataLoader

from fundus2ffa.data.dataset import collate
from fundus2ffa.metrics.baselines import training_split_at_eval
from fundus2ffa.metrics.image import MetricTable
from fundus2ffa.metrics.video import video_quality

VIDEO_BASELINES = ("constant", "linear")


def _grey(frames: torch.Tensor) -> torch.Tensor:
    """T x C x H x W (or N x T x C x H x W) frames -> the same with one grey channel (the channel mean)."""
    return frames.mean(-3, keepdim=True)


def fit_video_baselines(datamodule) -> dict:
    """{'means': [T floats], 'weights': [T x [w_r, w_g, w_b, c]]} from the training videos."""
    dataset = training_split_at_eval(datamodule)
    grams, moments = [], []  # per frame index; the design's ones row makes gram[3, 3] the pixel count, moment[3] the sum
    for index in range(len(dataset)):
        item = dataset[index]
        design = torch.cat([item["cf"].reshape(3, -1).double(), torch.ones(1, item["cf"][0].numel(), dtype=torch.float64)])
        gram = design @ design.T  # the same CF for every frame of the video
        frames = _grey(item["frames"]).flatten(1).double()  # T x P
        for t, moment in enumerate(frames @ design.T):
            if t == len(grams):
                grams.append(torch.zeros(4, 4, dtype=torch.float64))
                moments.append(torch.zeros(4, dtype=torch.float64))
            grams[t] += gram
            moments[t] += moment
    if not grams:
        raise ValueError("no training videos to fit the video baselines on (empty train split)")
    weights = [torch.linalg.lstsq(g, m[:, None]).solution[:, 0].tolist() for g, m in zip(grams, moments)]
    return {"means": [float(m[3] / g[3, 3]) for g, m in zip(grams, moments)], "weights": weights}


def predict_video_baseline(name: str, fitted: dict, cf: torch.Tensor, num_frames: int) -> torch.Tensor:
    """N x T x 1 x H x W prediction in [-1, 1] of baseline ``name`` for CF N x 3 x H x W."""
    last = len(fitted["means"]) - 1
    frames = []
    for t in range(num_frames):
        index = min(t, last)
        if name == "constant":
            frames.append(torch.full_like(cf[:, :1], fitted["means"][index]))
        else:
            w = torch.as_tensor(fitted["weights"][index], dtype=cf.dtype, device=cf.device)
            frames.append((torch.einsum("nchw,c->nhw", cf, w[:3]) + w[3])[:, None])
    return torch.stack(frames, 1).clamp(-1.0, 1.0)


@torch.no_grad()
def score_video_baselines(datamodule, metrics: dict | None = None, stage: str = "test") -> dict:
    """{'constant': {psnr: ..., ...}, 'linear': {...}, 'fit': {...}} on ``stage``'s videos, aggregated as the
    video model's metrics are (``metrics``: the model's quantize / compat_mode / report_compat)."""
    m = {"quantize": True, "compat_mode": False, "report_compat": True, **dict(metrics or {})}
    fitted = fit_video_baselines(datamodule)
    tables = {name: MetricTable() for name in VIDEO_BASELINES}
    loader = DataLoader(datamodule.datasets[stage], batch_size=datamodule.eval_batch_size, shuffle=False, num_workers=0,
                        collate_fn=collate)
    for batch in loader:
        real = _grey(batch["frames"])
        for name in VIDEO_BASELINES:
            fake = predict_video_baseline(name, fitted, batch["cf"], real.shape[1])
            scores = video_quality(fake, real, batch.get("fov"), compat_mode=bool(m["compat_mode"]), quantize=bool(m["quantize"]))
            if m["report_compat"] and not m["compat_mode"]:
                compat = video_quality(fake, real, compat_mode=True)
                scores.update({f"{k}_compat": v for k, v in compat.items()})
            tables[name].add(batch["id"], batch.get("category"), scores)
    out = {name: MetricTable.aggregate(table.rows) for name, table in tables.items()}
    out["fit"] = {"train_frame_means": fitted["means"], "linear_weights_rgb_bias_per_frame": fitted["weights"]}
    return out
