"""Prediction speed and memory per model family, input size and mode, on this machine.

    python -m fundus2ffa.inference.bench                                  # the README table (all cases)
    python -m fundus2ffa.inference.bench --families pix2pix fundus2video --sizes 576x576 2048x1536 3900x3000 --modes native tiled
    python -m fundus2ffa.inference.bench --help

Each case runs in a fresh process: build the family's generator (untrained: speed and memory do not
depend on the weights) at the width given by ``--ngf``, make one random input, translate it once
through the one translator (:class:`fundus2ffa.inference.translator.Translator`, exactly as
``task=predict`` and the demo do) and report that call and ``--repeats`` more: images/s, CPU seconds per
image (user + system, all threads) and the peak resident memory the translation adds above the process
before the first call (``ru_maxrss`` minus the RSS before it), in MB. Modes as ``predict.mode``:
``resize`` (to ``--resize`` px square and back), ``native`` (the whole image, padded to the generator's
multiple, never tiled), ``tiled`` (``--tile`` px tiles at ``--overlap``, ``--tile-batch`` tiles a call, the
least-area grid). Fundus2Video: a ``--frames``-frame video per input. With ``--ratios`` the table gets
tiled / native columns of time and memory per family and size.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

# torch is imported by the case that runs (``one``): ``--help`` and the parent process need none of it

FAMILIES = {
    "pix2pix": ["model=pix2pix"],
    "pix2pixhd": ["model=pix2pixhd", "pretrained.vgg19=random", "loss.vgg.weight=0"],
    "saliency_cgan": ["model=saliency_cgan", "pretrained.vgg19=random", "loss.perceptual.weight=0"],
    "fundus2angio": ["model=fundus2angio"],
    "cyclegan": ["model=cyclegan"],
    "fundus2video": ["model=fundus2video", "data=synthetic_video", "pretrained.vgg19=random", "loss.vgg.weight=0"],
}
MODES = ("resize", "native", "tiled")


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def one(family: str, size: str, mode: str, args) -> dict:
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from fundus2ffa.config import config_dir, register_resolvers
    from fundus2ffa.inference.tiled import TileSettings
    from fundus2ffa.inference.translator import TranslateSettings, Translator

    torch.set_num_threads(args.threads)
    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("run", overrides=[*FAMILIES[family], f"generator.ngf={args.ngf}"])
    model = instantiate(cfg.model, _recursive_=False).eval()
    tiles = TileSettings(size=args.tile, overlap=args.overlap, batch=args.tile_batch, auto_above=None)
    settings = TranslateSettings(mode=mode, image_size=args.resize, tiled=tiles, num_frames=args.frames)
    translator = Translator.for_model(model, {"resize": "native"}, settings)  # a model trained at native scale
    width, height = (int(v) for v in size.split("x"))
    cf = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)

    before = rss_mb()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for _ in range(1 + args.repeats):
        translator(cf)
    seconds = (time.perf_counter() - start) / (1 + args.repeats)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = (after.ru_utime - cpu.ru_utime + after.ru_stime - cpu.ru_stime) / (1 + args.repeats)
    peak = after.ru_maxrss / 1024
    return {"family": family, "size": size, "mode": mode, "ngf": args.ngf, "images_per_s": round(1 / seconds, 3),
            "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2), "peak_extra_mb": round(peak - before, 1),
            "threads": args.threads}


def default_tile_batch() -> int:
    """predict.tiled.batch as task=predict has it (conf/run.yaml)."""
    from omegaconf import OmegaConf

    from fundus2ffa.config import config_dir

    return int(OmegaConf.load(config_dir() / "run.yaml").predict.tiled.batch)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fundus2ffa.inference.bench",
        description="Prediction speed and memory per model family, input size and mode (one fresh process per case).",
        epilog="example: python -m fundus2ffa.inference.bench --families pix2pix --sizes 2048x1536 --modes native tiled --ratios",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES), help="model families")
    parser.add_argument("--sizes", nargs="+", default=["512x512", "4000x3000"], help="input sizes, WIDTHxHEIGHT")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES), help="predict.mode of each case")
    parser.add_argument("--ngf", type=int, default=8, help="generator width (the papers use 64)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls after the first")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--resize", type=int, default=256, help="the square side of mode resize")
    parser.add_argument("--tile", type=int, default=512, help="predict.tiled.size")
    parser.add_argument("--overlap", type=float, default=0.25, help="predict.tiled.overlap")
    parser.add_argument("--tile-batch", type=int, default=default_tile_batch(), help="predict.tiled.batch: tiles per generator call")
    parser.add_argument("--frames", type=int, default=4, help="frames per video (Fundus2Video)")
    parser.add_argument("--ratios", action="store_true", help="add tiled/native time and memory ratios per family and size")
    parser.add_argument("--one", nargs=3, metavar=("FAMILY", "SIZE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(one(*args.one, args)), flush=True)
        return
    print(f"{len(args.families) * len(args.sizes) * len(args.modes)} cases, one process each (ngf {args.ngf}, {args.threads} threads)",
          file=sys.stderr, flush=True)
    print("| family | input | mode | images/s | s/image | CPU s/image | peak extra MB |\n|---|---|---|---|---|---|---|", flush=True)
    results = {}
    passed = [a for a in sys.argv[1:] if not a.startswith("--one")] if argv is None else list(argv)
    cases = [(f, s, m) for f in args.families for s in args.sizes for m in args.modes]
    started = time.perf_counter()
    for index, (family, size, mode) in enumerate(cases, 1):
        # one case: its progress on stderr (the table on stdout stays clean)
        print(f"case {index}/{len(cases)}: {family} {size} {mode} ... ({time.perf_counter() - started:.0f} s so far)",
              file=sys.stderr, flush=True)
        command = [sys.executable, "-m", "fundus2ffa.inference.bench", *passed, "--one", family, size, mode]
        result = subprocess.run(command, capture_output=True, text=True)
        lines = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")]
        if not lines:
            reason = (result.stderr.strip().splitlines() or ["?"])[-1][:80]
            print(f"| {family} | {size} | {mode} | failed: {reason} | | | |", flush=True)
            continue
        r = results[family, size, mode] = json.loads(lines[-1][7:])
        print(f"| {family} | {size} | {mode} | {r['images_per_s']} | {r['seconds']} | {r['cpu_seconds']} | {r['peak_extra_mb']} |", flush=True)
    if args.ratios:
        print("\n| family | input | tiled / native time | tiled / native CPU time | tiled / native peak memory |\n|---|---|---|---|---|")
        for family in args.families:
            for size in args.sizes:
                tiled, native = results.get((family, size, "tiled")), results.get((family, size, "native"))
                if tiled and native:
                    print(f"| {family} | {size} | {tiled['seconds'] / native['seconds']:.2f} | "
                          f"{tiled['cpu_seconds'] / native['cpu_seconds']:.2f} | {tiled['peak_extra_mb'] / native['peak_extra_mb']:.2f} |")


if __name__ == "__main__":
    main()
