"""Does the EMA generator change validation PSNR/SSIM at a fixed training budget? (issue 12, item 4)

One pix2pix run per seed on the synthetic retina with ``model.ema.enabled=true``; the EMA does not feed
back into training, so the raw and the EMA generator of the same run are evaluated on the same
validation set at the same step: a paired comparison, one training per seed.

    python experiments/ema/ema_vs_raw.py --seeds 0 1 2 --epochs 12 --size 128

Prints one row per seed and the mean paired difference (EMA - raw); README.md holds the numbers.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import open_dict

from fundus2ffa.config import config_dir, register_resolvers
from fundus2ffa.builders import build_trainer


def config(seed: int, args):
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("run", overrides=[
            "logger=csv", "trainer=cpu", f"seed={seed}", f"data.image_size={args.size}", f"data.reader.num_pairs={args.pairs}",
            f"data.reader.seed={seed}", f"generator.ngf={args.ngf}", f"generator.num_downs={args.num_downs}", f"discriminator.ndf={args.ngf}",
            f"model.schedule.constant_epochs={args.epochs}", "model.schedule.decay_epochs=0",
            "model.ema.enabled=true", f"model.ema.decay={args.decay}", f"model.ema.start_step={args.start_step}",
            "trainer.enable_progress_bar=false", "trainer.num_sanity_val_steps=0", "trainer.check_val_every_n_epoch=1000",
            "~callbacks.samples",
        ])
    with open_dict(cfg):
        cfg.paths.output_dir = str(Path(args.out) / f"seed{seed}")
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--ngf", type=int, default=16)
    parser.add_argument("--num_downs", type=int, default=7)
    parser.add_argument("--decay", type=float, default=0.99)
    parser.add_argument("--start_step", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="outputs/ema_vs_raw")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for seed in args.seeds:
        start = time.time()
        cfg = config(seed, args)
        torch.manual_seed(seed)
        datamodule, model = instantiate(cfg.data), instantiate(cfg.model, _recursive_=False)
        trainer = build_trainer(cfg, [], [])
        trainer.fit(model, datamodule=datamodule)
        ema_scores = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
        ema = model.ema
        model.ema = None  # the same run's raw generator
        raw_scores = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
        model.ema = ema
        row = {"seed": seed, "batches": int(model.ema_batches), "seconds": round(time.time() - start, 1)}
        for key in ("psnr", "ssim"):
            row[f"raw_{key}"], row[f"ema_{key}"] = raw_scores[f"val/{key}"], ema_scores[f"val/{key}"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    for key in ("psnr", "ssim"):
        diffs = [r[f"ema_{key}"] - r[f"raw_{key}"] for r in rows]
        mean = sum(diffs) / len(diffs)
        print(f"{key}: EMA - raw per seed {[round(d, 4) for d in diffs]}, mean {mean:+.4f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
