"""Prediction speed and memory per model family, size and mode, on this machine (issue 12, item 5).

    python -m fundus2ffa.inference.bench                          # the README table (all cases)
    python -m fundus2ffa.inference.bench --families pix2pix --sizes 4000x3000 --modes tiled

Each case runs in a fresh process: build the family's generator (untrained: speed and memory do not
depend on the weights) at the width given by ``--ngf``, make one synthetic input, translate it once to
warm up, then ``--repeats`` times. Reported: images/s and the peak resident memory the translation adds
above the process after warm-up setup (``ru_maxrss`` minus the RSS before the first call), in MB.
Modes as ``task=predict``: resize (to 256 and back), native (the whole image, padded), tiled (512 px
tiles, overlap 0.25, 4 tiles a batch). Fundus2Video: a 4-frame video per input.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

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


def one(family: str, size: str, mode: str, ngf: int, repeats: int, threads: int) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from fundus2ffa.config import config_dir, register_resolvers
    from fundus2ffa.inference.streaming import PredictSettings, StreamingPredictor
    from fundus2ffa.inference.tiled import TileSettings

    torch.set_num_threads(threads)
    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("run", overrides=[*FAMILIES[family], f"generator.ngf={ngf}"])
    model = instantiate(cfg.model, _recursive_=False).eval()
    video = ("png", 4, 4.0) if hasattr(model, "translate_video") else None
    multiple = 256 if family == "pix2pix" else 16
    settings = PredictSettings(mode, 256, multiple, TileSettings(size=512, overlap=0.25, batch=4, auto_above=None), video=video)
    from fundus2ffa.data.preprocess import Preprocess

    # predict.mode's overrides of the preprocessing (fundus2ffa.predict.prediction_preprocess)
    preprocess = {"resize": Preprocess(resize="square", size=256), "native": Preprocess(resize="native", multiple=multiple),
                  "tiled": Preprocess(resize="native")}[mode]
    runner = StreamingPredictor(model, settings, preprocess)
    width, height = (int(v) for v in size.split("x"))
    rng = np.random.default_rng(0)
    cf = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)

    def translate():
        from fundus2ffa.inference.streaming import Carried

        x, geometry = preprocess(cf)
        item = {"path": "x", "name": "x", "cf": x[0], "geometry": Carried(geometry)}
        return runner.predict_step([item], 0)

    before = rss_mb()
    translate()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        translate()
    seconds = (time.perf_counter() - start) / repeats
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"family": family, "size": size, "mode": mode, "ngf": ngf, "images_per_s": round(1 / seconds, 3),
            "seconds": round(seconds, 2), "peak_extra_mb": round(peak - before, 1), "threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--sizes", nargs="+", default=["512x512", "4000x3000"])
    parser.add_argument("--modes", nargs="+", default=list(MODES))
    parser.add_argument("--ngf", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", nargs=3, metavar=("FAMILY", "SIZE", "MODE"))
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(*args.one, args.ngf, args.repeats, args.threads)), flush=True)
        return
    print("| family | input | mode | images/s | s/image | peak extra MB |\n|---|---|---|---|---|---|", flush=True)
    for family in args.families:
        for size in args.sizes:
            for mode in args.modes:
                command = [sys.executable, "-m", "fundus2ffa.inference.bench", "--one", family, size, mode,
                           "--ngf", str(args.ngf), "--repeats", str(args.repeats), "--threads", str(args.threads)]
                result = subprocess.run(command, capture_output=True, text=True)
                lines = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")]
                if not lines:
                    reason = (result.stderr.strip().splitlines() or ["?"])[-1][:80]
                    print(f"| {family} | {size} | {mode} | failed: {reason} | | |", flush=True)
                    continue
                r = json.loads(lines[-1][7:])
                print(f"| {family} | {size} | {mode} | {r['images_per_s']} | {r['seconds']} | {r['peak_extra_mb']} |", flush=True)


if __name__ == "__main__":
    main()
