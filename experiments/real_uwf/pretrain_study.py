"""Synthetic-to-real pretraining on the real UWF eyes (issue 22, item 2): scratch vs synthetic-pretrained at
the same number of training iterations, per seed, beside the trivial, blur and structure baselines.

    python experiments/real_uwf/pretrain_study.py [--data ../shared/data] [--out outputs/real_uwf_pretrain]
        [--arms scratch pretrained] [--seeds 0 1] [--pretrain-steps 500] [--finetune-steps 500]
        [--synthetic-eyes 200] [--size 256] [--ngf 64] [--resume] [--table-only]

For each seed:

* ``scratch``: pix2pix (unet_256, PatchGAN, L1 100, Adam 2e-4) on the four real training eyes for
  ``pretrain + finetune`` iterations (study.py's recipe: SLO -> early-phase FA, published alignment, the
  field of view cropped, shorter side 9/8 of --size, random --size crops and flips, batch 1, constant
  learning rate, no validation, the last checkpoint tested);
* ``pretrained``: ``--synthetic-eyes`` synthetic ultra-widefield eyes (``python -m fundus2ffa.data.synthetic
  export --layout paired_folder --geometry uwf --frame venous``: the SLO pseudo-colour, eyelids and lashes,
  an elliptical field and a randomised style per eye, FA at the venous phase) drawn with the seed, the
  same model and recipe pretrained on them for ``--pretrain-steps`` iterations, then fine-tuned
  (``init_from``: its networks, a fresh optimizer) on the real training eyes for ``--finetune-steps``.

Both arms therefore take the same number of iterations of the same network at the same size: the same
CPU budget up to data loading (each run's CPU seconds are in the table). Test: the three real test eyes
whole (aspect kept), PSNR/SSIM inside the field of view, vessel and leakage Dice, FID/KID against the 20
real venous-phase FFA frames of ../shared/data and against the training targets (fundus2ffa/metrics/realism.py),
beside the baselines of the same run (constant, linear, blur, structure); ``samples_pretrain_seed<first>.png``
shows the test eyes (SLO | real FA | scratch | pretrained). ``--resume`` continues every run
from its ``last.ckpt`` (the runs can be spread over sittings); a finished run is only re-read.
"""

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from study import figure, train_and_test, write_manifest  # noqa: E402

from fundus2ffa.registration.bench import shared_data  # noqa: E402

COLUMNS = (("psnr_fov", "PSNR fov"), ("ssim_fov", "SSIM fov"), ("vessel_dice", "vessel Dice"), ("leakage_dice", "leakage Dice"),
           ("fid_frames", "FID frames"), ("kid_frames", "KID frames"), ("kid_train", "KID train"))
LOWER_IS_BETTER = {"fid_frames", "kid_frames", "kid_train"}
FRAMES = "ffa_frames/origin_data/01.phase_identification/venous_phase"


def synthetic_manifest(out: Path, eyes: int, size: int, seed: int) -> Path:
    """Export the seed's synthetic UWF eyes once (a folder of cf/ and ffa/) and list them as training pairs
    (the last 4 as a small test split, so the pretraining run's own test stays cheap)."""
    folder = out / f"synthetic_uwf_seed{seed}"
    if not (folder / "ffa").is_dir() or len(list((folder / "ffa").iterdir())) < eyes:
        subprocess.run([sys.executable, "-m", "fundus2ffa.data.synthetic", "export", "--layout", "paired_folder", str(folder),
                        "--count", str(eyes), "--size", str(size * 9 // 8), "--geometry", "uwf", "--frame", "venous",
                        "--seed", str(1000 + seed)], cwd=REPO, check=True)
    manifest = out / f"synthetic_uwf_seed{seed}.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "cf", "ffa", "group", "split"])
        writer.writeheader()
        for i, ffa in enumerate(sorted((folder / "ffa").glob("*.png"))):
            writer.writerow({"id": ffa.stem, "cf": str(folder / "cf" / ffa.name), "ffa": str(ffa), "group": ffa.stem,
                             "split": "test" if i >= eyes - 4 else "train"})
    return manifest


def run_args(args, seed: int, steps: int, extra: list[str]) -> argparse.Namespace:
    """The namespace study.py's ``train_and_test`` reads, for pix2pix at ``steps`` iterations."""
    return argparse.Namespace(size=args.size, ngf=args.ngf, repeats=args.repeats, upsample="transpose", vgg19=None,
                              steps_of={"pix2pix": steps}, seed=seed, resume=args.resume, extra=extra)


def realism_overrides(args) -> list[str]:
    return ["realism.enabled=true", f"realism.reference_dir={args.data.resolve() / FRAMES}"]


def one_seed(args, seed: int, real: Path) -> dict[str, dict]:
    """Train (or re-read) both arms of one seed; returns {arm: metrics.json}."""
    total = args.pretrain_steps + args.finetune_steps
    results = {}
    if "scratch" in args.arms:
        run_dir = args.out / f"scratch_seed{seed}_{total}steps"
        results["scratch"] = _train(run_args(args, seed, total, realism_overrides(args)), real, run_dir)
    if "pretrained" in args.arms:
        synthetic = synthetic_manifest(args.out, args.synthetic_eyes, args.size, seed)
        pre_dir = args.out / f"pretrain_seed{seed}_{args.pretrain_steps}steps"
        _train(run_args(args, seed, args.pretrain_steps, ["realism.enabled=false"]), synthetic, pre_dir)
        tune_dir = args.out / f"finetune_seed{seed}_{args.pretrain_steps}+{args.finetune_steps}steps"
        extra = [f"init_from={pre_dir / 'checkpoints' / 'last.ckpt'}", *realism_overrides(args)]
        results["pretrained"] = _train(run_args(args, seed, args.finetune_steps, extra), real, tune_dir)
        results["pretrained"]["pretrain_cpu_s"] = _cpu_seconds(pre_dir)
    return results


def _train(run_args_: argparse.Namespace, manifest: Path, run_dir: Path) -> dict:
    done = run_dir / "metrics.json"
    if done.is_file() and json.loads(done.read_text()).get("global_step", 0) >= 2 * run_args_.steps_of["pix2pix"]:
        return {**json.loads(done.read_text()), "cpu_s": _cpu_seconds(run_dir)}
    before = _cpu_seconds(run_dir) or 0.0  # a resumed run adds this sitting's CPU to the earlier ones'
    children = _children_cpu()
    metrics, _ = train_and_test("pix2pix", run_args_, manifest, run_dir)
    cpu = before + _children_cpu() - children
    (run_dir / "cpu_seconds.txt").write_text(f"{cpu:.1f}\n")
    return {**metrics, "cpu_s": cpu}


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu_seconds(run_dir: Path) -> float | None:
    path = run_dir / "cpu_seconds.txt"
    return float(path.read_text()) if path.is_file() else None


def scores(metrics: dict) -> dict[str, dict]:
    """metrics.json -> {predictor: {column: value}}: the model (``test``: FID/KID sit beside PSNR there), each
    baseline of that run, and the real test FA's own realism (what a perfect generator would score)."""
    rows = {"model": dict(metrics.get("test") or {})}
    for name, values in (metrics.get("baselines") or {}).items():
        if name != "fit" and isinstance(values, dict):
            rows[f"baseline: {name}"] = values
    real = (metrics.get("realism") or {}).get("real_test_ffa")
    if isinstance(real, dict):
        rows["real test FA"] = real
    return rows


def table(per_seed: dict[int, dict[str, dict]]) -> str:
    """Mean +- sd over seeds for each arm, then the baselines (identical across arms: fitted on the same eyes)."""
    lines = ["| predictor | seeds | " + " | ".join(label for _, label in COLUMNS) + " | CPU s (per run) |",
             "|---|---|" + "---|" * (len(COLUMNS) + 1)]
    arms = sorted({arm for runs in per_seed.values() for arm in runs}, key=("scratch", "pretrained").index)
    baselines = {}
    for arm in arms:
        runs = [runs[arm] for runs in per_seed.values() if arm in runs]
        rows = [scores(m)["model"] for m in runs]
        cpu = [(m.get("cpu_s") or 0) + (m.get("pretrain_cpu_s") or 0) for m in runs]
        label = "pix2pix, scratch (real eyes only)" if arm == "scratch" else "pix2pix, synthetic-pretrained + fine-tuned"
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(_mean_sd([r.get(k) for r in rows]) for k, _ in COLUMNS)
                     + f" | {_mean_sd(cpu, 0)} |")
        for name, values in scores(runs[0]).items():
            if name != "model":
                baselines.setdefault(name, values)
    for name, values in baselines.items():
        lines.append(f"| {name} | - | " + " | ".join(_mean_sd([values.get(k)]) for k, _ in COLUMNS) + " | - |")
    return "\n".join(lines)


def _mean_sd(values: list, digits: int = 3) -> str:
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data())
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "real_uwf_pretrain")
    parser.add_argument("--arms", nargs="+", choices=("scratch", "pretrained"), default=["scratch", "pretrained"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--pretrain-steps", type=int, default=500)
    parser.add_argument("--finetune-steps", type=int, default=500)
    parser.add_argument("--synthetic-eyes", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=25, help="random crops per eye per epoch")
    parser.add_argument("--resume", action="store_true", help="continue each run from its last.ckpt")
    parser.add_argument("--table-only", action="store_true", help="print the table of the finished runs in --out")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    real = args.out / "raw_early.csv"
    write_manifest(args.data.resolve(), "early", real)
    per_seed = {}
    for seed in args.seeds:
        if args.table_only:
            per_seed[seed] = _finished(args, seed)
        else:
            per_seed[seed] = one_seed(args, seed, real)
    text = (f"Synthetic-to-real pretraining, real UWF eyes (4 training, 3 test), early phase, published alignment, "
            f"{args.size} px crops, ngf {args.ngf}; scratch {args.pretrain_steps + args.finetune_steps} real iterations; "
            f"pretrained {args.pretrain_steps} synthetic ({args.synthetic_eyes} eyes) + {args.finetune_steps} real; "
            f"seeds {' '.join(map(str, args.seeds))}.\n\n{table(per_seed)}\n")
    (args.out / "results_pretrain.md").write_text(text)
    first = args.seeds[0]
    runs = {"scratch": args.out / f"scratch_seed{first}_{args.pretrain_steps + args.finetune_steps}steps",
            "pretrained": args.out / f"finetune_seed{first}_{args.pretrain_steps}+{args.finetune_steps}steps"}
    runs = {arm: path for arm, path in runs.items() if (path / "results" / "images").is_dir()}
    if runs:  # SLO | real FA | scratch | pretrained, one test eye a row
        figure(runs, args.out / f"samples_pretrain_seed{first}.png")
    print(text)


def _finished(args, seed: int) -> dict[str, dict]:
    total = args.pretrain_steps + args.finetune_steps
    found = {}
    for arm, run_dir in (("scratch", args.out / f"scratch_seed{seed}_{total}steps"),
                         ("pretrained", args.out / f"finetune_seed{seed}_{args.pretrain_steps}+{args.finetune_steps}steps")):
        if (run_dir / "metrics.json").is_file():
            found[arm] = {**json.loads((run_dir / "metrics.json").read_text()), "cpu_s": _cpu_seconds(run_dir)}
            if arm == "pretrained":
                found[arm]["pretrain_cpu_s"] = _cpu_seconds(args.out / f"pretrain_seed{seed}_{args.pretrain_steps}steps")
    return found


if __name__ == "__main__":
    main()
