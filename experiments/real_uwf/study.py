"""Real-data study (issue 11 item 6): register the seven UWF eyes, train pix2pix, score beside baselines.

    python experiments/real_uwf/study.py [--data ../shared/data] [--out outputs/real_uwf] [--phase early]
                                         [--steps 300] [--upsample transpose] [--extra key=value ...]

1. writes a manifest of the raw eyes (train 1-4, test 7, 8, 10; the SLO as CF, the early (``.1``) or
   late (``.2``) FA as target; group = eye) and registers it with ``python -m fundus2ffa.register
   --init correlation`` (the eyes are published roughly aligned); pairs that fail are left out;
2. trains pix2pix (``model=pix2pix``, unet_256, paper losses and optimiser) on the registered pairs with
   ``data=paired_folder`` and their valid masks: the 682x853 images resized to 9/8 of ``--size`` high
   (aspect kept; 288x360 for 256), random ``--size`` crops with flips, ``--steps`` iterations (epochs of
   ``train_repeats`` crops per eye); validation and test on the whole image at ``--size`` high (256x320);
3. ``metrics.json`` of the run holds the test metrics (PSNR/SSIM whole and FOV, vessel and leakage Dice
   inside the valid mask) and the trivial baselines; this script prints them as one table
   (results_<phase>.md in --out).

Numbers depend on the budget: say which ``--steps`` produced them.
"""

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from fundus2ffa.registration import PipelineOptions, RegistrationOptions, register_pairs  # noqa: E402
from fundus2ffa.registration.bench import UWF_EYES, shared_data  # noqa: E402

METRICS = ("psnr", "ssim", "psnr_fov", "ssim_fov", "vessel_dice", "leakage_dice")


def write_manifest(data: Path, phase: str, path: Path) -> None:
    suffix = {"early": 1, "late": 2}[phase]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "cf", "ffa", "group", "split"])
        writer.writeheader()
        for eye in UWF_EYES:
            split, name = eye.split("/")
            root = data / "uwf_slo_fa_phases"
            writer.writerow({
                "id": f"eye{name}", "cf": str(root / f"{eye}.png"), "ffa": str(root / f"{eye}.{suffix}.png"),
                "group": f"eye{name}", "split": split,
            })


def table(metrics: dict) -> str:
    rows = ["| predictor | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    sources = [("pix2pix", metrics.get("test", {}))]
    sources += [(f"baseline: {k}", v) for k, v in (metrics.get("baselines") or {}).items() if k != "fit"]
    for name, values in sources:
        rows.append(f"| {name} | " + " | ".join(f"{values[m]:.4f}" if m in values else "-" for m in METRICS) + " |")
    return "\n".join(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data())
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "real_uwf")
    parser.add_argument("--phase", choices=("early", "late"), default="early")
    parser.add_argument("--steps", type=int, default=300, help="training iterations (batch 1)")
    parser.add_argument("--size", type=int, default=256, help="crop side (a power of 2); images keep their 5:4 aspect")
    parser.add_argument("--ngf", type=int, default=64, help="generator and discriminator width (pix2pix: 64)")
    parser.add_argument("--repeats", type=int, default=25, help="random crops per eye per epoch")
    parser.add_argument("--upsample", choices=("transpose", "resize_conv"), default="transpose")
    parser.add_argument("--reuse-registration", action="store_true", help="keep an earlier registration of --out")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--extra", nargs="*", default=[], help="more fundus2ffa.run overrides")
    args = parser.parse_args(argv)

    out = args.out.resolve()
    manifest = out / f"raw_{args.phase}.csv"
    write_manifest(args.data.resolve(), args.phase, manifest)
    registered = out / f"registered_{args.phase}"
    if args.reuse_registration and (registered / "registration.csv").is_file():
        rows = list(csv.DictReader((registered / "registration.csv").open()))
    else:
        rows = register_pairs(
            registered, manifest=manifest, options=RegistrationOptions(init="correlation"),
            pipeline=PipelineOptions(), workers=args.workers,
        )
    for row in rows:
        print(f"register {row['id']}: {row['status']} {row['reason']}")

    run_dir = out / f"pix2pix_{args.phase}_{args.size}px_ngf{args.ngf}_{args.upsample}_{args.steps}steps"
    trained_eyes = sum(1 for r in rows if r["status"] == "ok" and r["id"] in {"eye1", "eye2", "eye3", "eye4"})
    epochs = max(1, round(args.steps / max(1, trained_eyes * args.repeats)))
    overrides = [
        "model=pix2pix", "trainer=cpu", "logger=csv", "data=paired_folder", "data.reader.root=null",
        f"data.reader.manifest={registered / 'pairs.csv'}", f"data.image_size={args.size}",
        f"data.train_transform.load_size=[{args.size * 9 // 8},{args.size * 45 // 32}]",
        f"data.eval_transform.load_size=[{args.size},{args.size * 5 // 4}]",
        f"generator.num_downs={args.size.bit_length() - 1}", f"generator.ngf={args.ngf}", f"discriminator.ndf={args.ngf}",
        f"+data.train_repeats={args.repeats}", "data.num_workers=0", "data.cache=true",
        f"model.schedule.constant_epochs={epochs}", "model.schedule.decay_epochs=0",
        f"generator.upsample={args.upsample}", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=10",
        f"hydra.run.dir={run_dir}", f"paths.output_dir={run_dir}",
        *args.extra,
    ]
    start = time.time()
    subprocess.run([sys.executable, "-m", "fundus2ffa.run", *overrides], cwd=REPO, check=True)
    minutes = (time.time() - start) / 60
    metrics = json.loads((run_dir / "metrics.json").read_text())
    text = (
        f"Real UWF study, {args.phase} phase: pix2pix ({args.size} px crops, ngf {args.ngf}), "
        f"{metrics.get('global_step', 0) // 2} iterations "
        f"({epochs} epochs x {trained_eyes} eyes x {args.repeats} crops), upsample={args.upsample}, "
        f"{minutes:.1f} min wall on this machine. Test eyes: "
        f"{int(metrics.get('test', {}).get('count', 0))}.\n\n{table(metrics)}\n"
    )
    (out / f"results_{args.phase}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
