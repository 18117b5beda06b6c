"""Side by side with the reference pix2pixHD: one training iteration, interleaved rounds, ratios of medians
(issue 24). ``make bench-reference`` runs it; it is not part of ``make test``.

    python experiments/perf/bench_reference.py                      # pix2pixHD: reference, ours plain, ours with levers
    python experiments/perf/bench_reference.py --family fundus2video # the Fundus2Video window: plain vs levers
    python experiments/perf/bench_reference.py --rounds 5 --iterations 3 --warmup 1 --threads 1

It needs ../shared/perf beside the checkout (the reference pix2pixHD code, BSD, and its timing driver
``ref_pix2pixhd.py``, with ``ours_bench.py`` around ``python -m fundus2ffa.bench``; see its README) and
says so and exits 0 where it is missing. Each round runs every variant once, one process each, one
thread (OMP/MKL_NUM_THREADS=1), in the same order: compare ratios from one run on a quiet machine,
never times from different runs. Reported per variant: median seconds per iteration (wall and CPU),
peak resident memory (MB) and GFLOP per iteration; then the ratios ours / reference (pix2pixHD) or
levers / plain (Fundus2Video). The levers: ``model.step_in_backward=true`` (G's Adam step inside
backward, gradients freed at once), ``model.d_real_once=true`` (pix2pixHD's one D pass on the real
pair) and, as their own rows, the residual blocks' 3 x 3 convolutions as one matrix product each
(``generator.block_conv=gemm``, nets/blocks/gemm_conv.py) or by Winograd F(2x2, 3x3)
(``generator.block_conv=winograd``, nets/blocks/winograd_conv.py, with ``loss.vgg.conv=winograd``: the
VGG's convolutions of 256+ channels too, and ``generator.output_conv=taps``: the 7 x 7 output convolution
as one matrix product to its tap maps, nets/blocks/tap_conv.py) and, for memory, the lean backward
(``loss.vgg.lean_backward=true``: the frozen VGG keeps ReLU masks, pool positions and L1 signs instead of
activations, nets/blocks/frozen_backward.py and losses/sign_l1.py; ``generator.recompute_pointwise=true``:
the generator keeps only convolution outputs and recomputes norm / ReLU / padding in backward,
nets/blocks/recompute_pointwise.py; ``loss.feature_matching.lean_backward=true``: L1 signs), the reordering
levers (``model.d_free_terms_first=true``: the VGG's term before D's passes, models/paired_gan.py;
``generator.recompute_full_resolution=true``: the stem and the last upsampling recomputed too), the CPU
matrix products of those convolutions by oneDNN (``cpu_matmul=onednn``, nets/blocks/matmul.py) and, for the
host allocator, ``host_allocator.keep_freed=true`` (glibc keeps freed memory instead of faulting it in
afresh every step, fundus2ffa/host_allocator.py) or ``host_allocator.library=tcmalloc`` (the process runs on
gperftools' tcmalloc, preloaded with LD_PRELOAD; the reference gets a row of its own on tcmalloc too, so
that the allocator's share of a ratio shows); all leave the maths unchanged (tests/models/test_step_in_backward.py,
tests/losses/test_perceptual.py; the allocator computes nothing). The GFLOP column counts what runs: Winograd's products are fewer
multiplications for the same convolutions.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from fundus2ffa.host_allocator import LIBRARIES, find_library

REPO = Path(__file__).resolve().parents[2]
PIX2PIXHD = ["model=pix2pixhd", "pretrained.vgg19=random", "loss.vgg.imagenet_norm=false",
             "data.reader.num_pairs=16"]
FUNDUS2VIDEO = ["model=fundus2video", "data=synthetic_video", "pretrained.vgg19=random",
                "data.reader.num_eyes=8", "data.batch_size=1"]
PLAIN = ["model.step_in_backward=false", "model.d_real_once=false", "generator.block_conv=native"]
LEVERS = ["model.step_in_backward=true", "model.d_real_once=true", "generator.block_conv=native"]
GEMM = ["model.step_in_backward=true", "model.d_real_once=true", "generator.block_conv=gemm"]
WINOGRAD = ["model.step_in_backward=true", "model.d_real_once=true", "generator.block_conv=winograd", "loss.vgg.conv=winograd",
            "generator.output_conv=taps"]
#: the same without the VGG's Winograd convolutions (with oneDNN's products its direct convolutions are faster there)
BLOCKS_TAPS = [o for o in WINOGRAD if o != "loss.vgg.conv=winograd"]
LEAN = WINOGRAD + ["loss.vgg.lean_backward=true", "generator.recompute_pointwise=true", "loss.feature_matching.lean_backward=true"]
#: memory levers that change only when things are computed: the VGG before D's passes, full-resolution convolutions recomputed
REORDERED = ["model.d_free_terms_first=true", "generator.recompute_full_resolution=true"]
#: the CPU matrix products of the Winograd / im2col / tap convolutions by oneDNN (AVX-512) instead of MKL
ONEDNN = ["cpu_matmul=onednn"]
KEEP_FREED = ["host_allocator.keep_freed=true"]
TCMALLOC = ["host_allocator.library=tcmalloc"]
REFERENCE = "reference"  # first entry of a reference row; the rest name only its malloc (TCMALLOC)


def run_reference(perf: Path, overrides: list[str], args) -> dict:
    out = subprocess.run([sys.executable, str(perf / "ref_pix2pixhd.py"), "--output_nc", "1", "--iterations", str(args.iterations),
                          "--warmup", str(args.warmup), "--threads", str(args.threads), "--size", str(args.size)],
                         cwd=REPO, env=_env(overrides), capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"the reference run failed:\n{out.stderr[-2000:]}")
    r = json.loads(lines[-1][7:])
    return {"s": r["s_per_iteration"], "cpu_s": r["cpu_s_per_iteration"], "peak_mb": r["peak_rss_mb"], "gflop": r["gflop_per_iteration"]}


def run_ours(perf: Path, overrides: list[str], args) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        result_file = Path(folder) / "bench.json"
        out = subprocess.run([sys.executable, str(perf / "ours_bench.py"), "--threads", str(args.threads), "--no-bare",
                              "--iterations", str(args.iterations), "--warmup", str(args.warmup), "--json", str(result_file),
                              *overrides, f"data.image_size={args.size}"], cwd=REPO, env=_env(overrides), capture_output=True, text=True)
        if not result_file.is_file():
            raise SystemExit(f"fundus2ffa's run failed ({' '.join(overrides)}):\n{out.stderr[-2000:]}")
        r = next(iter(json.loads(result_file.read_text()).values()))
    cpu = [line for line in out.stdout.splitlines() if line.startswith("CPU_TIMES ")]
    cpu_s = float(cpu[-1].rsplit("median", 1)[1]) if cpu else float("nan")
    return {"s": r["seconds_per_iteration"], "cpu_s": cpu_s, "peak_mb": r["peak_memory_mb"], "gflop": r["gflops_per_iteration"]}


def _env(overrides: list[str]) -> dict:
    """One thread; LD_PRELOAD for a row that names a malloc library (``host_allocator.library=...``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    env.pop("LD_PRELOAD", None)
    library = next((o.split("=", 1)[1] for o in overrides if o.startswith("host_allocator.library=")), "null")
    if library not in ("null", "system"):
        path = find_library(library)
        if path is None:
            raise SystemExit(f"a row runs on {library}, which is not installed here ({LIBRARIES[library][2]}); "
                             "leave that row out with --variants")
        env["LD_PRELOAD"] = path
    return env


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python experiments/perf/bench_reference.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--family", choices=("pix2pixhd", "fundus2video"), default="pix2pixhd")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (both codes; the issue's ratios are at 256)")
    parser.add_argument("--perf-dir", type=Path, default=REPO.parent / "shared" / "perf")
    parser.add_argument("--variants", nargs="+", help="run only these rows (names as printed; the baseline row is always run)")
    parser.add_argument("--bf16", action="store_true",
                        help="add the last row (every lever) under trainer.precision=bf16-mixed (its own row: not the fp32 ratio)")
    args = parser.parse_args(argv)
    perf = args.perf_dir
    if not (perf / "ours_bench.py").is_file():
        print(f"no reference benchmark at {perf} (../shared/perf beside the checkout): nothing to compare; give --perf-dir")
        return 0
    if args.family == "pix2pixhd":
        variants = {"reference": [REFERENCE], "reference + tcmalloc": [REFERENCE] + TCMALLOC,
                    "ours plain": PIX2PIXHD + PLAIN, "ours levers": PIX2PIXHD + LEVERS,
                    "ours levers + gemm blocks": PIX2PIXHD + GEMM,
                    "ours levers + winograd blocks": PIX2PIXHD + WINOGRAD[:3], "ours levers + winograd + taps": PIX2PIXHD + WINOGRAD,
                    "ours levers + winograd + taps + lean backward": PIX2PIXHD + LEAN,
                    "ours levers + winograd + taps + keep freed": PIX2PIXHD + WINOGRAD + KEEP_FREED,
                    "ours levers + winograd + taps + lean backward + keep freed": PIX2PIXHD + LEAN + KEEP_FREED,
                    "ours levers + winograd + taps + tcmalloc": PIX2PIXHD + WINOGRAD + TCMALLOC,
                    "ours levers + winograd + taps + lean backward + tcmalloc": PIX2PIXHD + LEAN + TCMALLOC,
                    "ours levers + winograd + taps + lean backward + reordered + tcmalloc": PIX2PIXHD + LEAN + REORDERED + TCMALLOC,
                    "ours levers + winograd + taps + onednn + tcmalloc": PIX2PIXHD + WINOGRAD + ONEDNN + TCMALLOC,
                    "ours levers + winograd + taps + lean backward + reordered + onednn + tcmalloc":
                        PIX2PIXHD + LEAN + REORDERED + ONEDNN + TCMALLOC,
                    "ours levers + winograd blocks + taps + onednn + tcmalloc": PIX2PIXHD + BLOCKS_TAPS + ONEDNN + TCMALLOC}
        baseline = "reference"
    else:  # its model has no d_real_once (the window's discriminator passes differ)
        rows = {"plain": PLAIN, "levers": LEVERS, "levers + gemm blocks": GEMM,
                "levers + winograd blocks": WINOGRAD[:3], "levers + winograd + taps": WINOGRAD,
                "levers + winograd + taps + lean backward": LEAN, "levers + winograd + taps + keep freed": WINOGRAD + KEEP_FREED,
                "levers + winograd + taps + lean backward + keep freed": LEAN + KEEP_FREED,
                "plain + tcmalloc": PLAIN + TCMALLOC, "levers + winograd + taps + tcmalloc": WINOGRAD + TCMALLOC,
                "levers + winograd + taps + lean backward + tcmalloc": LEAN + TCMALLOC,
                "levers + winograd + taps + lean backward + full-resolution recompute + tcmalloc":
                    LEAN + REORDERED[1:] + TCMALLOC,
                "levers + winograd + taps + onednn + tcmalloc": WINOGRAD + ONEDNN + TCMALLOC,
                "levers + winograd + taps + lean backward + full-resolution recompute + onednn + tcmalloc":
                    LEAN + REORDERED[1:] + ONEDNN + TCMALLOC,
                "levers + winograd blocks + taps + onednn + tcmalloc": BLOCKS_TAPS + ONEDNN + TCMALLOC}
        variants = {name: FUNDUS2VIDEO + [o for o in levers if not o.startswith("model.d_real_once=")]
                    for name, levers in rows.items()}
        baseline = "plain"
    if args.bf16:
        name = next(reversed(variants))
        variants[f"{name}, bf16-mixed"] = variants[name] + ["trainer.precision=bf16-mixed"]
    if args.variants:
        unknown = [v for v in args.variants if v not in variants]
        if unknown:
            raise SystemExit(f"--variants: unknown {unknown}; the rows are {list(variants)}")
        variants = {k: v for k, v in variants.items() if k == baseline or k in args.variants}
    results = {name: [] for name in variants}
    for round_ in range(1, args.rounds + 1):
        for name, overrides in variants.items():
            r = run_reference(perf, overrides, args) if overrides[:1] == [REFERENCE] else run_ours(perf, overrides, args)
            results[name].append(r)
            print(f"round {round_}/{args.rounds} {name}: {r['s']:.2f} s/it wall, {r['cpu_s']:.2f} s CPU, "
                  f"{r['peak_mb']:.0f} MB peak, {r['gflop']:.1f} GFLOP", flush=True)
    median = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in results.items()}
    print(f"\n| {args.family} ({args.size} px, {args.rounds} rounds, medians, {args.threads} thread) | s/iteration | CPU s/iteration | "
          f"peak MB | GFLOP | time / {baseline} | CPU time / {baseline} | peak / {baseline} |\n|---|---|---|---|---|---|---|---|")
    base = median[baseline]
    for name, m in median.items():
        print(f"| {name} | {m['s']:.2f} | {m['cpu_s']:.2f} | {m['peak_mb']:.0f} | {m['gflop']:.1f} | {m['s'] / base['s']:.3f} | "
              f"{m['cpu_s'] / base['cpu_s']:.3f} | {m['peak_mb'] / base['peak_mb']:.3f} |")
    print(f"\nper round, time / {baseline} (interleaved pairs; their median beside the ratio of medians above):")
    for name, rs in results.items():
        ratios = [r["s"] / b["s"] for r, b in zip(rs, results[baseline])]
        print(f"  {name}: {', '.join(f'{x:.3f}' for x in ratios)} (median {statistics.median(ratios):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
