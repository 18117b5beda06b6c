"""Register raw CF/FFA pairs so that ``data=paired_folder data.reader.root=OUT_DIR`` trains on them.

    python -m fundus2ffa.register CF_DIR FFA_DIR OUT_DIR [--model similarity|affine|homography] [--workers N]
    python -m fundus2ffa.register --manifest pairs.csv OUT_DIR
    python -m fundus2ffa.register CF_DIR FFA_DIR OUT_DIR --overwrite    # OUT_DIR already holds files

Pairs are matched by file stem (as data=paired_folder does), or listed in a CSV manifest (columns cf,
ffa [, id, category, group, split], paths relative to the CSV). An FFA partner that is a folder
``FFA_DIR/<name>/`` holds the frames of a video: every frame is registered to the reference frame
(``--reference-frame``), which is registered to the CF. Outputs and failure handling:
fundus2ffa/registration/pipeline.py. An OUT_DIR that already holds files is refused unless ``--overwrite``
(as predict's ``predict.overwrite``). The exit status is 1 when no pair is usable (registered or kept as
given), 2 on an error.
"""

import argparse
import sys
from collections import Counter

from fundus2ffa.config import HelpFormatter
from fundus2ffa.errors import Fundus2FFAError
from fundus2ffa.registration.estimate import DETECTORS, INITS, MODELS, RegistrationOptions
from fundus2ffa.registration.pipeline import PipelineOptions, register_pairs


def parse_args(argv=None) -> argparse.Namespace:
    defaults, pipeline = RegistrationOptions(), PipelineOptions()
    parser = argparse.ArgumentParser(prog="python -m fundus2ffa.register", description=__doc__, formatter_class=HelpFormatter,
                                     epilog="example: python -m fundus2ffa.register raw/cf raw/ffa registered/ --workers 2")
    parser.add_argument("paths", nargs="+", metavar="CF_DIR FFA_DIR OUT_DIR", help="CF_DIR FFA_DIR OUT_DIR, or OUT_DIR with --manifest")
    parser.add_argument("--manifest", help="CSV with columns cf, ffa [, id, category, group, split]")
    parser.add_argument("--model", choices=MODELS, default=defaults.model, help="RANSAC transform model")
    parser.add_argument("--init", choices=INITS, default=defaults.init,
                        help="auto: global keypoints, then the correlation prior when they fail; correlation: pairs already roughly aligned")
    parser.add_argument("--no-identity", action="store_true",
                        help="fail a pair that no estimate beats instead of keeping it as given (status identity)")
    parser.add_argument("--detector", choices=DETECTORS, default=defaults.detector)
    parser.add_argument("--coarse-size", type=int, default=defaults.coarse_size, help="longer side of the coarse level (px)")
    parser.add_argument("--fine-size", type=int, default=defaults.fine_size, help="longer side of the fine level (px, 0: none)")
    parser.add_argument("--ratio", type=float, default=defaults.ratio, help="Lowe's ratio test threshold")
    parser.add_argument("--ransac-px", type=float, default=defaults.ransac_px, help="RANSAC threshold (px of the level)")
    parser.add_argument("--min-inliers", type=int, default=defaults.min_inliers)
    parser.add_argument("--min-inlier-ratio", type=float, default=defaults.min_inlier_ratio)
    parser.add_argument("--scale-range", type=float, nargs=2, default=defaults.scale_range, metavar=("MIN", "MAX"))
    parser.add_argument("--max-anisotropy", type=float, default=defaults.max_anisotropy)
    parser.add_argument("--min-agreement-gain", type=float, default=defaults.min_agreement_gain,
                        help="vessel-agreement rise an estimate needs to beat the pair as given")
    parser.add_argument("--min-overlap", type=float, default=pipeline.min_overlap, help="fraction of the CF field of view")
    parser.add_argument("--reference-frame", type=int, default=pipeline.reference_frame, help="video frame index registered to the CF")
    parser.add_argument("--allow-grey-cf", action="store_true")
    parser.add_argument("--ffa-channel", choices=("luma", "green"), default=pipeline.ffa_channel)
    parser.add_argument("--workers", type=int, default=1, help="parallel processes over pairs")
    parser.add_argument("--overwrite", action="store_true", help="register into an OUT_DIR that already holds files")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    expected = 1 if args.manifest else 3
    if len(args.paths) != expected:
        parser.error("give CF_DIR FFA_DIR OUT_DIR, or --manifest CSV OUT_DIR")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    options = RegistrationOptions(
        model=args.model, init=args.init, detector=args.detector, coarse_size=args.coarse_size, fine_size=args.fine_size,
        ratio=args.ratio, ransac_px=args.ransac_px, min_inliers=args.min_inliers,
        min_inlier_ratio=args.min_inlier_ratio, scale_range=tuple(args.scale_range), max_anisotropy=args.max_anisotropy,
        keep_identity=not args.no_identity, min_agreement_gain=args.min_agreement_gain,
    )
    pipeline = PipelineOptions(
        min_overlap=args.min_overlap, reference_frame=args.reference_frame,
        allow_grey_cf=args.allow_grey_cf, ffa_channel=args.ffa_channel,
    )
    cf_dir, ffa_dir, out_dir = (None, None, args.paths[0]) if args.manifest else args.paths
    try:
        rows = register_pairs(
            out_dir, cf_dir, ffa_dir, args.manifest, options, pipeline, workers=args.workers, progress=not args.no_progress,
            overwrite=args.overwrite,
        )
    except Fundus2FFAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = Counter(row["status"] for row in rows)
    for row in rows:
        if row["status"] != "ok" and row["reason"] not in ("", "reference frame"):
            print(f"{row['status']} {row['id']}: {row['reason']}", file=sys.stderr)
    print(
        f"registered {counts['ok']}, kept as given (identity) {counts['identity']}, failed {counts['failed']} of {len(rows)} "
        f"-> {out_dir} (pairs.csv: the usable pairs; registration.csv; qc/: every pair, failed ones included)"
    )
    return 0 if counts["ok"] + counts["identity"] else 1


if __name__ == "__main__":
    sys.exit(main())
