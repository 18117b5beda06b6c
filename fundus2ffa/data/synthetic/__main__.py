"""Export the synthetic retina in an on-disk layout, to try a data config before the real data arrives.

    python -m fundus2ffa.data.synthetic export --layout isfahan OUT         # data=isfahan* data.reader.root=OUT
    python -m fundus2ffa.data.synthetic export --layout video_csv OUT       # data=fundus2video_csv data.reader.csv=OUT/data.csv
    python -m fundus2ffa.data.synthetic export --layout paired_folder OUT   # data=paired_folder data.reader.root=OUT
    python -m fundus2ffa.data.synthetic export --layout paired_folder --geometry uwf --frame venous --count 200 OUT

Layouts: ``isfahan`` (Isfahan MISP's folders and naming quirks, :func:`export_isfahan`, with an identity
alignment file), ``video_csv`` (Fundus2Video's CSV of FA frames, :func:`export_video_csv`) and
``paired_folder`` (``cf/<id>.png`` and ``ffa/<id>.png`` matched by name). Eyes alternate abnormal /
normal and are deterministic by ``--seed``. OUT must be empty or new: nothing is overwritten.
"""

import argparse
import sys
from pathlib import Path

from fundus2ffa.config import HelpFormatter
from fundus2ffa.errors import ConfigError

LAYOUTS = ("isfahan", "video_csv", "paired_folder")
# What each layout needs next: the command line that trains on the export.
NEXT_STEP = {
    "isfahan": "python -m fundus2ffa.run data=isfahan data.reader.root={out}",
    "video_csv": "python -m fundus2ffa.run model=fundus2video data=fundus2video_csv data.reader.csv={out}/data.csv",
    "paired_folder": "python -m fundus2ffa.run data=paired_folder data.reader.root={out}",
}


def _pairs(count: int, height: int, width: int, seed: int):
    from fundus2ffa.data.synthetic.retina import synthesize_eye

    eyes = (synthesize_eye(seed + i, size=height, width=width, abnormal=i % 2 == 0) for i in range(count))
    return [(eye.cf, eye.late, eye.category) for eye in eyes]


def _reader_pairs(count: int, size: int, seed: int, geometry: str, frame: str):
    """The eyes of ``data=synthetic`` with this geometry and frame (the reader's own drawing, so an export
    trains like the in-memory data): (CF, FFA, category) for eyes 0 .. count-1."""
    from fundus2ffa.data.readers.synthetic import SyntheticPairs

    reader = SyntheticPairs(num_pairs=count, image_size=size, seed=seed, frame=frame, geometry=geometry, cache=False)
    for record in reader.records():
        sample = reader.load(record)
        yield sample.cf, sample.frames[0], sample.category


def export(layout: str, out: Path, count: int, size: int, width: int | None, seed: int, frames_per_phase: int = 2,
           geometry: str = "fundus", frame: str = "late") -> Path:
    """Write ``count`` synthetic eyes (or videos) in ``layout`` under ``out``; returns ``out``. ``geometry``
    and ``frame`` (paired_folder only, other than fundus / late): the reader's ``data.reader.geometry``
    (uwf: the ultra-widefield SLO view, ``size`` x 1.25 ``size``) and FFA phase (arterial | venous | late)."""
    out = Path(out)
    if layout not in LAYOUTS:
        raise ConfigError(f"--layout must be one of {'|'.join(LAYOUTS)}, got {layout!r}")
    if count < 1 or size < 16:
        raise ConfigError(f"--count must be at least 1 and --size at least 16, got {count} and {size}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder; choose a new OUT folder (nothing is overwritten)")
    width = width or size
    if (geometry, frame) != ("fundus", "late") and (layout != "paired_folder" or width != size):
        raise ConfigError("--geometry and --frame apply to --layout paired_folder without --width")
    if layout == "video_csv":
        from fundus2ffa.data.synthetic.export import export_video_csv

        if width != size:
            raise ConfigError("--layout video_csv writes square videos; leave --width unset")
        export_video_csv(out, num_eyes=count, size=size, frames_per_phase=frames_per_phase, seed=seed)
    elif layout == "isfahan":
        from fundus2ffa.data.synthetic.isfahan_export import export_isfahan

        export_isfahan(out, _pairs(count, size, width, seed), quirks=True, alignment=True)
    else:
        from fundus2ffa.writers import write_png

        pairs = _pairs(count, size, width, seed) if (geometry, frame) == ("fundus", "late") else \
            _reader_pairs(count, size, seed, geometry, frame)
        for i, (cf, ffa, _) in enumerate(pairs):
            write_png(out / "cf" / f"eye{i:03d}.png", cf)
            write_png(out / "ffa" / f"eye{i:03d}.png", ffa)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fundus2ffa.data.synthetic", description=__doc__, formatter_class=HelpFormatter,
                                     epilog="example: python -m fundus2ffa.data.synthetic export --layout paired_folder synthetic_pairs/")
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("export", help="write synthetic eyes in an on-disk layout")
    cmd.add_argument("--layout", required=True, choices=LAYOUTS)
    cmd.add_argument("out", type=Path, help="a new or empty folder")
    cmd.add_argument("--count", type=int, default=None, help="eyes (default 8; video_csv: 6 videos)")
    cmd.add_argument("--size", type=int, default=None, help="height in px (default 288 for isfahan, 256 otherwise)")
    cmd.add_argument("--width", type=int, default=None, help="width in px (isfahan default 360: Isfahan's 4:5; else = size)")
    cmd.add_argument("--frames-per-phase", type=int, default=2, help="video_csv: frames per phase (arterial, venous, late)")
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument("--geometry", choices=("fundus", "uwf"), default="fundus",
                     help="paired_folder: uwf draws the ultra-widefield SLO view (randomised style; width 1.25 x size)")
    cmd.add_argument("--frame", choices=("arterial", "venous", "late"), default="late", help="paired_folder: the FFA phase")
    args = parser.parse_args(argv)
    count = args.count or (6 if args.layout == "video_csv" else 8)
    size = args.size or (288 if args.layout == "isfahan" else 256)
    width = args.width or (360 if args.layout == "isfahan" and args.size is None else None)
    try:
        out = export(args.layout, args.out, count, size, width, args.seed, args.frames_per_phase, args.geometry, args.frame)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {count} synthetic {'videos' if args.layout == 'video_csv' else 'eyes'} ({args.layout}) to {out}")
    print("next: " + NEXT_STEP[args.layout].format(out=out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
