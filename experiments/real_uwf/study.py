"""Real-data study (issue 11 item 6): the seven UWF eyes, pix2pix and the saliency cGAN, beside baselines.

    python experiments/real_uwf/study.py [--data ../shared/data] [--out outputs/real_uwf] [--phase early]
        [--models pix2pix saliency_cgan] [--alignment registered|published] [--steps 1200 [MODEL=N]] [--size 256]
        [--ngf 64] [--upsample transpose|resize_conv] [--vgg19 FILE] [--resume] [--extra key=value ...]

1. writes a manifest of the raw eyes (train 1-4, test 7, 8, 10; the SLO as CF, the early (``.1``) or
   late (``.2``) FA as target; group = eye);
2. ``--alignment registered`` (default) registers it with ``python -m fundus2ffa.register`` (defaults:
   global keypoints, then the correlation prior; a pair no estimate beats is kept as published, status
   identity) and trains on the registered pairs and their valid masks; pairs that fail are left out. ``published`` trains on the
   eyes as distributed (the SLO and FA grids taken as aligned), the control that says what the
   registration changes;
3. trains each model (``model=pix2pix``: unet_256; ``model=saliency_cgan``: Li et al.'s ResNet generator,
   PatchGAN, L1 100 + saliency loss) with ``data=paired_folder``: the field of view cropped to its box
   (data.preprocess, as at prediction), its shorter side resized to 9/8 of ``--size`` (aspect kept),
   random ``--size`` crops with flips, ``--steps``
   iterations of batch 1 at the papers' constant learning rate (2e-4, Adam (0.5, 0.999)); no validation
   and no model selection (``data.val_from=none``: the last checkpoint is tested; four eyes are too few
   to hold one out, and the test eyes are never used before the final test), test on the whole field of view at ``--size`` on its shorter side (aspect kept). The saliency cGAN's VGG19 perceptual
   term (weight 0.001) needs ImageNet weights that no package registry ships: with ``--vgg19 FILE``
   (torchvision's vgg19-dcbb9e9d.pth) it is used, without it its weight is 0 and the table says so;
4. ``metrics.json`` of each run holds the test metrics (PSNR/SSIM whole and FOV, vessel and leakage Dice,
   inside the valid mask when registered) and the trivial baselines on the same test images; this
   script prints them as one table (``results_<phase>_<alignment>.md`` in --out) and writes a figure of
   the test eyes (SLO | real FA | each model), ``samples_<phase>_<alignment>.png``.

``--resume`` continues each model's run from its ``last.ckpt`` (training spread over sessions); a run
that already reached ``--steps`` is only re-tested. No paper reports this data: the baselines are the
reference. Numbers depend on the budget: the table names the steps that produced them.
"""

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from fundus2ffa.registration import PipelineOptions, RegistrationOptions, register_pairs  # noqa: E402
from fundus2ffa.registration.bench import UWF_EYES, shared_data  # noqa: E402

METRICS = ("psnr", "ssim", "psnr_fov", "ssim_fov", "vessel_dice", "leakage_dice")
TRAIN_EYES = {"eye1", "eye2", "eye3", "eye4"}
MODELS = {
    # model-specific overrides; the generator width and depth follow --ngf / --size
    "pix2pix": lambda a: ["model=pix2pix", f"generator.num_downs={a.size.bit_length() - 1}"],
    "saliency_cgan": lambda a: ["model=saliency_cgan"]
    + ([f"pretrained.vgg19={a.vgg19}"] if a.vgg19 else ["loss.perceptual.weight=0"]),
}


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


def table(results: dict[str, dict]) -> str:
    rows = ["| predictor | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    baselines = {}
    for name, metrics in results.items():
        rows.append(f"| {name} | " + " | ".join(_cell(metrics.get("test", {}), m) for m in METRICS) + " |")
        baselines = metrics.get("baselines") or baselines
    for name, values in baselines.items():
        if name != "fit":
            rows.append(f"| baseline: {name} | " + " | ".join(_cell(values, m) for m in METRICS) + " |")
    return "\n".join(rows)


def _cell(values: dict, metric: str) -> str:
    value = values.get(metric)
    return "-" if value is None else f"{value:.4f}"


def _last_checkpoint(run_dir: Path) -> Path | None:
    path = run_dir / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


def train_and_test(model: str, args, manifest: Path, run_dir: Path) -> tuple[dict, float]:
    overrides = [
        *MODELS[model](args), "trainer=cpu", "logger=csv", "data=paired_folder", "data.reader.root=null",
        f"data.reader.manifest={manifest}", f"data.image_size={args.size}",
        "data.preprocess.resize=shorter_side", "data.preprocess.multiple=4",
        f"data.train_transform.load_size={args.size * 9 // 8}",
        f"generator.ngf={args.ngf}", f"discriminator.ndf={args.ngf}",
        f"+data.train_repeats={args.repeats}", "data.num_workers=0", "data.cache=true",
        # no validation: the last checkpoint is reported (nothing is selected), and four eyes are too few
        # to spare one; the test eyes are never looked at before the final test
        "data.val_from=none",
        # constant learning rate, stopped after --steps iterations (a G and a D step each)
        "model.schedule.constant_epochs=100000", "model.schedule.decay_epochs=0", "trainer.max_epochs=100000",
        f"trainer.max_steps={2 * args.steps_of[model]}",
        f"generator.upsample={args.upsample}", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=20",
        f"hydra.run.dir={run_dir}", f"paths.output_dir={run_dir}", f"seed={args.seed}",
        *args.extra,
    ]
    last = _last_checkpoint(run_dir) if args.resume else None
    if last is not None:
        overrides.append(f"ckpt_path={last}")
    start = time.time()
    subprocess.run([sys.executable, "-m", "fundus2ffa.run", *overrides], cwd=REPO, check=True)
    return json.loads((run_dir / "metrics.json").read_text()), (time.time() - start) / 60


def figure(run_dirs: dict[str, Path], path: Path, height: int = 192) -> None:
    """Test eyes as rows: SLO | real FA | each model's output (each run's results/images/<id>_*.png)."""
    rows = []
    first = next(iter(run_dirs.values())) / "results" / "images"
    for cf in sorted(first.glob("*_cf.png")):
        stem = cf.name[: -len("_cf.png")]
        files = [cf, first / f"{stem}_real.png"] + [d / "results" / "images" / f"{stem}_fake.png" for d in run_dirs.values()]
        tiles = [Image.open(f).convert("RGB") for f in files if f.is_file()]
        tiles = [t.resize((round(t.width * height / t.height), height)) for t in tiles]
        rows.append(np.hstack([np.asarray(t) for t in tiles]))
    if rows and len({r.shape for r in rows}) == 1:
        Image.fromarray(np.vstack(rows)).save(path)


def steps_per_model(values: list[str], models: list[str]) -> dict[str, int]:
    """``["1200", "saliency_cgan=800"]`` -> {model: steps}; a bare number applies to every model."""
    default, named = None, {}
    for value in values:
        model, _, number = value.rpartition("=")
        if model and model not in MODELS:
            raise SystemExit(f"--steps {value}: unknown model {model!r} (one of {', '.join(MODELS)})")
        if not number.isdigit() or int(number) < 1:
            raise SystemExit(f"--steps {value}: the number of iterations must be a positive integer")
        if model:
            named[model] = int(number)
        else:
            default = int(number)
    missing = [m for m in models if m not in named and default is None]
    if missing:
        raise SystemExit(f"--steps: no number of iterations for {', '.join(missing)}")
    return {m: named.get(m, default) for m in models}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data())
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "real_uwf")
    parser.add_argument("--phase", choices=("early", "late"), default="early")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--alignment", choices=("registered", "published"), default="registered")
    parser.add_argument(
        "--steps", nargs="+", default=["1200"],
        help="training iterations (batch 1): N for every model, and MODEL=N for one (e.g. 1200 saliency_cgan=800)",
    )
    parser.add_argument("--size", type=int, default=256, help="crop side (a power of 2); images keep their 5:4 aspect")
    parser.add_argument("--ngf", type=int, default=64, help="generator and discriminator width (papers: 64)")
    parser.add_argument("--repeats", type=int, default=25, help="random crops per eye per epoch")
    parser.add_argument("--upsample", choices=("transpose", "resize_conv"), default="transpose")
    parser.add_argument("--vgg19", help="ImageNet VGG19 weights file for the saliency cGAN's perceptual term")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--resume", action="store_true", help="continue each run from its last.ckpt")
    parser.add_argument("--reuse-registration", action="store_true", help="keep an earlier registration of --out")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--extra", nargs="*", default=[], help="more fundus2ffa.run overrides")
    args = parser.parse_args(argv)
    args.steps_of = steps_per_model(args.steps, args.models)

    out = args.out.resolve()
    raw = out / f"raw_{args.phase}.csv"
    write_manifest(args.data.resolve(), args.phase, raw)
    if args.alignment == "published":
        manifest, train_eyes = raw, len(TRAIN_EYES)
    else:
        registered = out / f"registered_{args.phase}"
        if args.reuse_registration and (registered / "registration.csv").is_file():
            rows = list(csv.DictReader((registered / "registration.csv").open()))
        else:
            rows = register_pairs(
                registered, manifest=raw, options=RegistrationOptions(),  # auto: keypoints, correlation prior, or as given
                pipeline=PipelineOptions(), workers=args.workers,
            )
        for row in rows:
            print(f"register {row['id']}: {row['status']} {row['reason']}")
        manifest = registered / "pairs.csv"
        train_eyes = sum(1 for r in rows if r["status"] in ("ok", "identity") and r["id"] in TRAIN_EYES)

    tag = f"{args.phase}_{args.alignment}_{args.size}px_ngf{args.ngf}_{args.upsample}"
    results, run_dirs, notes = {}, {}, []
    for model in args.models:
        run_dir = out / f"{model}_{tag}_{args.steps_of[model]}steps"
        metrics, minutes = train_and_test(model, args, manifest, run_dir)
        label = model + (" (no VGG term)" if model == "saliency_cgan" and not args.vgg19 else "")
        results[label], run_dirs[label] = metrics, run_dir
        notes.append(f"{label}: {metrics.get('global_step', 0) // 2} iterations, {minutes:.1f} min wall this call")
    text = (
        f"Real UWF study, {args.phase} phase, {args.alignment} pairs ({train_eyes} training eyes, no validation "
        "split), "
        f"{args.size} px crops, ngf {args.ngf}, upsample={args.upsample}, seed {args.seed}. "
        f"Test eyes: {int(next(iter(results.values())).get('test', {}).get('count', 0))}.\n"
        + "".join(f"- {n}\n" for n in notes) + f"\n{table(results)}\n"
    )
    (out / f"results_{args.phase}_{args.alignment}.md").write_text(text)
    figure(run_dirs, out / f"samples_{args.phase}_{args.alignment}.png")
    print(text)


if __name__ == "__main__":
    main()
