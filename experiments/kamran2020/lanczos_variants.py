"""How much the two Lanczos-3 halvings of nets/resample.py differ on real angiograms (issue 10, item 4).

    python experiments/kamran2020/lanczos_variants.py [FOLDER_OF_FFA_IMAGES] [--limit N]

Halves every image (grey, [-1, 1], as the Fundus2Angio loader does) with TensorFlow's default kernel
(antialias=False, 6 taps: the official code) and with the antialiased one (12 taps: PIL, the SZU
reproduction), and prints the mean and maximum absolute difference in grey levels (0-255).
Default folder: ../shared/data/ffa_frames (FUNDUS2FFA_SHARED_DATA overrides ../shared/data).
"""

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fundus2ffa.nets.resample import lanczos_halve

SHARED = Path(os.environ.get("FUNDUS2FFA_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default=str(SHARED / "ffa_frames" / "origin_data" / "01.phase_identification"))
    parser.add_argument("--limit", type=int, default=20)
    args = parser.parse_args()
    paths = sorted(p for p in Path(args.folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.limit]
    if not paths:
        raise SystemExit(f"no images under {args.folder}")
    means, maxima = [], []
    for path in paths:
        grey = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
        grey = grey[: grey.shape[0] // 2 * 2, : grey.shape[1] // 2 * 2]
        x = torch.from_numpy(grey / 127.5 - 1.0)[None, None]
        diff = (lanczos_halve(x) - lanczos_halve(x, antialias=True)).abs() * 127.5
        means.append(float(diff.mean()))
        maxima.append(float(diff.max()))
    print(f"{len(paths)} images from {args.folder}")
    print(f"6-tap (TF default) vs 12-tap (antialiased) halving, grey levels: mean {np.mean(means):.2f}, max {max(maxima):.1f}")


if __name__ == "__main__":
    main()
