"""Does the saliency loss help where it is meant to? "proposed" vs "without saliency" on the synthetic retina.

Li et al. (MIDL 2020) add L_sal so that the bright local structures of the late FFA (vessels, leakage)
are reproduced better (reference_spec 2.2, 2.4). The synthetic retina (fundus2ffa.data.synthetic) knows
where those are: its readers give ``vessel`` and ``lesion`` masks with every pair. This script trains
columns of the paper's table (by default the ablation pair; ``--variants`` takes all five) with the same
budget, data and seeds and measures, on the held-out test eyes:

* the mean absolute error (8-bit grey levels) of the generated FFA inside the vessel mask, inside the
  lesion mask (microaneurysms, haemorrhages, exudates, leakage; abnormal eyes only) and over the field of
  view;
* the same for the saliency maps (in grey levels, with the paper's filters scaled to the image);
* PSNR and SSIM (the paper's metrics).

Every number is pooled over the test pixels of a run, then reported as mean +- std over seeds, with the
paired difference proposed - without_saliency per seed.

Budget (a CPU in minutes, not the paper's 200 epochs at 512 px): 128 px images, generator/discriminator
widths 16, 3 residual blocks, 24 eyes (18 train, 6 test; --pairs), 10 epochs at Adam 5e-4 (the paper's
2e-4 learns too little in so few steps); every column gets exactly the same budget, data and seeds. The
saliency filters are scaled with the image (51 and 7 px are for 512 px patches, where vessels are ~15 px
wide): median 13, Gaussian 3 at 128 px. The perceptual term has weight 0 (PerceptualLoss then builds no
VGG19: no download, and random VGG features would not be the paper's loss), so "proposed" and "without
saliency" differ in L_sal alone: L = GAN + 100 L1 (+ 1 L_sal). ``--contrast`` sets the factor a of the map.

    python experiments/li2020/saliency_check.py --seeds 0 1 2 3 4 --pairs 32       # the ablation pair
    python experiments/li2020/saliency_check.py --seeds 0 1 2 3 4 --pairs 32 --contrast 16
    python experiments/li2020/saliency_check.py --seeds 0 1 2 --pairs 32 \
        --variants cyclegan pix2pix without_saliency without_patchgan proposed     # the five columns
    python -m fundus2ffa.report experiments/li2020/saliency_check                 # PSNR/SSIM table

Writes <out>/<variant>/seed<N>/ (metrics.json, masked.json, checkpoints) and <out>/summary.{json,md}.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from fundus2ffa.config import config_dir, register_resolvers
from fundus2ffa.losses.saliency import SaliencyLoss
from fundus2ffa.metrics.convert import to_unit
from fundus2ffa.builders import build, build_callbacks, build_loggers, build_trainer
from fundus2ffa.run import evaluate

VARIANTS = ("without_saliency", "proposed")
COLUMNS = ("cyclegan", "pix2pix", "without_saliency", "without_patchgan", "proposed")  # the paper's table
REGIONS = ("vessel", "lesion", "fov")


def odd(value: float, minimum: int = 1) -> int:
    """The odd integer nearest to ``value``, at least ``minimum``."""
    n = max(minimum, int(round(value)))
    return n if n % 2 else n + 1


def make_config(variant: str, seed: int, args, out: Path):
    scale = args.size / 512
    overrides = [
        f"experiment=li2020/{variant}",
        "data=synthetic",
        "trainer=cpu",
        "logger=csv",
        f"seed={seed}",
        f"data.image_size={args.size}",
        f"data.reader.num_pairs={args.pairs}",
        "data.split.train=0.75",
        "data.split.val=0.0",
        "data.split.test=0.25",
        "data.val_from=none",  # every training eye trains, as the paper's presets (issue 20 item 5); nothing is selected
        "data.num_workers=0",
        f"generator.ngf={args.width}",
        f"discriminator.ndf={args.width}",
        f"model.schedule.constant_epochs={args.epochs // 2}",
        f"model.schedule.decay_epochs={args.epochs - args.epochs // 2}",
        f"model.optimizer_g.lr={args.lr}",
        f"model.optimizer_d.lr={args.lr}",
        "trainer.enable_progress_bar=false",
        "trainer.num_sanity_val_steps=0",
        f"trainer.check_val_every_n_epoch={args.epochs}",
        "~callbacks.samples",
    ]
    # settings of the terms and nets a column has (pix2pix has no saliency term, a U-Net no residual blocks)
    optional = {
        "generator.n_blocks": args.blocks,
        "loss.perceptual.weight": 0,
        "loss.saliency.median_size": odd(51 * scale),
        "loss.saliency.gaussian_size": odd(7 * scale, 3),
        "loss.saliency.contrast": args.contrast,
    }
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("run", overrides=overrides)
        present = [f"{key}={value}" for key, value in optional.items() if OmegaConf.select(cfg, key) is not None]
        cfg = compose("run", overrides=overrides + present)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


@torch.no_grad()
def masked_errors(model, datamodule, saliency: SaliencyLoss) -> dict[str, float]:
    """Pooled mean absolute errors (grey levels 0-255) of images and saliency maps inside each mask."""
    model.eval()
    sums = {f"{kind}_{region}": 0.0 for kind in ("mae", "sal_mae") for region in REGIONS}
    pixels = {region: 0.0 for region in REGIONS}
    for batch in datamodule.test_dataloader():
        batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        fake = model.translate(batch["cf"])
        real = batch["ffa"]
        # 8-bit images, as the saved files and the paper's PSNR see them
        fake8, real8 = to_unit(fake, quantize=True) * 255, to_unit(real, quantize=True) * 255
        image_error = (fake8 - real8).abs()
        sal_error = (saliency.saliency(fake, "detach") - saliency.saliency(real, "detach")).abs() * 127.5
        for region in REGIONS:
            mask = batch[region].float()
            pixels[region] += float(mask.sum())
            sums[f"mae_{region}"] += float((image_error * mask).sum())
            sums[f"sal_mae_{region}"] += float((sal_error * mask).sum())
    return {key: value / max(pixels[key.rsplit("_", 1)[-1]], 1.0) for key, value in sums.items()} | {
        f"pixels_{region}": pixels[region] for region in REGIONS
    }


def train_one(variant: str, seed: int, args, root: Path) -> dict:
    out = root / variant / f"seed{seed}"
    cfg = make_config(variant, seed, args, out)
    import lightning as L

    L.seed_everything(seed, workers=True)
    datamodule = build(cfg.data, "data")
    datamodule.setup("fit")
    model = build(cfg.model, "model", _recursive_=False)
    trainer = build_trainer(cfg, build_callbacks(cfg), build_loggers(cfg))
    out.mkdir(parents=True, exist_ok=True)
    (out / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    seconds = time.perf_counter() - start
    results = evaluate(cfg, trainer, model, datamodule, trainer.checkpoint_callback.last_model_path or None)
    # the maps are measured in grey levels with the (scaled) paper filters whatever the column's loss
    scale = args.size / 512
    saliency = SaliencyLoss(median_size=odd(51 * scale), gaussian_size=odd(7 * scale, 3))
    row = {
        "variant": variant,
        "seed": seed,
        "train_seconds": seconds,
        "psnr": results["test"]["psnr"],
        "ssim": results["test"]["ssim"],
        **masked_errors(model, datamodule, saliency),
    }
    (out / "masked.json").write_text(json.dumps(row, indent=2))
    return row


KEYS = ["psnr", "ssim", "mae_vessel", "mae_lesion", "mae_fov", "sal_mae_vessel", "sal_mae_lesion", "sal_mae_fov"]
NAMES = {
    "psnr": "PSNR dB (test, 8-bit) ↑",
    "ssim": "SSIM ↑",
    "mae_vessel": "MAE in vessels (grey levels) ↓",
    "mae_lesion": "MAE in lesions (grey levels) ↓",
    "mae_fov": "MAE in field of view ↓",
    "sal_mae_vessel": "saliency-map MAE in vessels ↓",
    "sal_mae_lesion": "saliency-map MAE in lesions ↓",
    "sal_mae_fov": "saliency-map MAE in field of view ↓",
}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(rows: list[dict]) -> tuple[dict, str]:
    """Mean +- std over seeds of every column run; the paired difference proposed - without_saliency."""
    by = {(r["variant"], r["seed"]): r for r in rows}
    columns = [c for c in COLUMNS if any(r["variant"] == c for r in rows)]
    summary = {
        column: {k: _mean_std([r[k] for r in rows if r["variant"] == column]) for k in KEYS} for column in columns
    }
    lines = ["| metric | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for key in KEYS:
        digits = 4 if key == "ssim" else 2
        cells = [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in (summary[c][key] for c in columns)]
        lines.append(f"| {NAMES[key]} | " + " | ".join(cells) + " |")
    seeds = sorted({s for (_, s) in by if all((v, s) in by for v in VARIANTS)})
    if seeds:
        differences = {k: [by["proposed", s][k] - by["without_saliency", s][k] for s in seeds] for k in KEYS}
        better = {k: sum((d > 0) if NAMES[k].endswith("↑") else (d < 0) for d in v) for k, v in differences.items()}
        summary["difference"] = {k: _mean_std(v) for k, v in differences.items()}
        summary["proposed_better_seeds"] = better
        summary["paired_seeds"] = seeds
        lines += ["", "| metric | proposed - without_saliency (paired) | seeds proposed better |", "|---|---|---|"]
        for key in KEYS:
            digits = 4 if key == "ssim" else 2
            m, s = summary["difference"][key]
            lines.append(f"| {NAMES[key]} | {m:+.{digits}f} ± {s:.{digits}f} | {better[key]}/{len(seeds)} |")
    return summary, "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (divisible by 4)")
    parser.add_argument("--pairs", type=int, default=24, help="synthetic eyes (75 %% train, 25 %% test)")
    parser.add_argument("--epochs", type=int, default=10, help="half constant, half linear decay")
    parser.add_argument("--width", type=int, default=16, help="ngf and ndf")
    parser.add_argument("--blocks", type=int, default=3, help="residual blocks of the generator (paper layout: 9)")
    parser.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate of G and D (paper: 2e-4)")
    parser.add_argument("--contrast", type=float, default=1.0, help="loss.saliency.contrast, the factor a")
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=COLUMNS,
        help="columns to train (default: the ablation pair; all five give the paper's table on synthetic data)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "saliency_check")
    args = parser.parse_args(argv)
    register_resolvers()
    rows = []
    for seed in args.seeds:
        for variant in args.variants:
            row = train_one(variant, seed, args, args.out)
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary, table = summarise(rows)
    header = (
        f"{len(args.seeds)} seeds {args.seeds}, {args.size} px, {args.pairs} synthetic eyes, {args.epochs} epochs, "
        f"width {args.width}, {args.blocks} residual blocks, lr {args.lr}, saliency contrast a = {args.contrast}; "
        "perceptual weight 0"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)}, "runs": rows, "summary": summary}, indent=2))
    (args.out / "summary.md").write_text(header + "\n\n" + table + "\n")
    print(header)
    print(table)
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
