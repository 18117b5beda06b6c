"""Register a folder (or manifest) of CF/FFA pairs into a layout ``data=paired_folder`` trains on.

    OUT_DIR/cf/<id>.png      the CF, unchanged (PNG)
    OUT_DIR/ffa/<id>.png     the FFA warped into the CF frame
    OUT_DIR/mask/<id>.png    the valid overlap (255 inside both fields of view after warping)
    OUT_DIR/qc/<id>.png      checkerboard + vessel overlay, to judge the registration at a glance; written
                             for every pair whose images could be read, failed ones included (the pair as
                             given, and the refused estimate below it when there was one)
    OUT_DIR/video/<id>/<frame>.png   every frame of an FFA video (FFA_DIR/<id>/ a folder of frames),
                             registered to the reference frame and with it into the CF frame
    OUT_DIR/registration.csv one row per pair (and video frame): id, model, init, matrix, inliers, inlier
                             ratio, residual px, scale, vessel agreement as given and after, status, reason
    OUT_DIR/pairs.csv        manifest of the usable pairs, status ok or identity (cf, ffa, mask, id,
                             category, group, split, status)

Status (estimate.register_images): ``ok``: registered, the estimate beats the pair as given on vessel
agreement; ``identity``: no estimate beats the pair as given, which is written unwarped (the FFA
stretched onto the CF grid: the pairs of a folder already aligned stay a training set; the refused
estimate is described in ``reason``); ``failed``: neither (too few inliers, degenerate transform,
implausible scale, too little overlap, an FFA without vessels, images of other aspect ratios, unreadable
image): a row with every reason, and of the pair only its qc/ image is written (stale files of an
earlier run under its id are removed). The matrix, inliers, residual and scale of a row are those of
the matrix that was written (ok, identity: no inliers, no residual) or refused (failed). Files are
written atomically (temporary name, then rename), so an interrupted run never leaves a half-written
image.

An OUT_DIR that already holds files is refused unless ``overwrite`` (``--overwrite``): registering into it
replaces the outputs of the pairs registered now (files of other pairs are kept). CF_DIR and FFA_DIR must
be different folders, and pairs of byte-identical files are refused (all) or warned about (some).
"""

import json
import logging
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fundus2ffa.data.io import list_images, read_cf, read_grey
from fundus2ffa.data.readers.folder import PairedFolder, check_distinct_pairs, stem_pairs
from fundus2ffa.data.records import PairRecord
from fundus2ffa.errors import DataError, Fundus2FFAError
from fundus2ffa.priors.fov import fov_mask
from fundus2ffa.registration.estimate import RegistrationOptions, estimate_transform, keep_as_given, register_images, stretch_matrix
from fundus2ffa.registration.outputs import qc_image, qc_panels, valid_mask, warp_into
from fundus2ffa.writers import write_csv, write_json, write_png

log = logging.getLogger(__name__)
OUTPUT_DIRS = ("cf", "ffa", "mask", "qc")
CSV_COLUMNS = ("id", "model", "init", "matrix", "inliers", "matches", "inlier_ratio", "residual_px", "scale", "level",
               "agreement_before", "agreement_after", "status", "reason")
USABLE = ("ok", "identity")  # statuses whose pairs are written and listed in pairs.csv


@dataclass
class PipelineOptions:
    """Options beyond the estimate: ``min_overlap`` (fraction of the CF field of view the warped FFA
    must cover), ``reference_frame`` (index of the video frame registered to the CF), ``allow_grey_cf``,
    ``ffa_channel`` (luma | green)."""

    min_overlap: float = 0.3
    reference_frame: int = 0
    allow_grey_cf: bool = False
    ffa_channel: str = "luma"


def _row(pair_id: str, model: str, estimate=None, status: str = "failed", reason: str = "") -> dict:
    row = {column: "" for column in CSV_COLUMNS}
    row.update(id=pair_id, model=model, status=status, reason=reason)
    if estimate is not None:
        identity = status == "identity"  # the pair as given: no keypoints, no residual
        agreement = {k: round(float(estimate.extra[k]), 4) for k in ("agreement_before", "agreement_after") if k in estimate.extra}
        if identity:
            agreement.pop("agreement_after", None)  # that of the refused estimate, not of the written pair
        row.update(
            init=estimate.extra.get("init", ""),
            matrix=json.dumps(np.round(estimate.matrix, 8).tolist()) if estimate.matrix is not None else "",
            inliers="" if identity else estimate.inliers,
            matches="" if identity else estimate.matches,
            inlier_ratio="" if identity else round(estimate.inlier_ratio, 4),
            residual_px=round(estimate.residual_px, 3) if np.isfinite(estimate.residual_px) else "",
            scale=round(estimate.scale, 4) if np.isfinite(estimate.scale) else "",
            level=estimate.level,
            **agreement,
        )
    return row


def _remove_outputs(out_dir: Path, pair_id: str) -> None:
    for sub in OUTPUT_DIRS:
        for stale in (out_dir / sub).glob(f"{pair_id}.*"):
            stale.unlink()
    video = out_dir / "video" / pair_id
    if video.is_dir():
        for frame in video.iterdir():
            frame.unlink()
        video.rmdir()


def _write_all(out_dir: Path, pair_id: str, files: dict[str, np.ndarray]) -> None:
    """Write every image of a pair (relative path -> array); on any error remove them all."""
    try:
        for relative, array in files.items():
            write_png(out_dir / relative, array)
    except Exception:
        _remove_outputs(out_dir, pair_id)
        raise


def failed_qc(cf: np.ndarray, moving: np.ndarray, estimate) -> np.ndarray:
    """The QC of a pair that was not written: the pair as given, and below it the refused estimate when
    there was an invertible one (so "check the pair in qc/" can be done)."""
    panels = [("as given (not registered)", stretch_matrix(cf.shape, moving.shape))]
    matrix = estimate.matrix
    if matrix is not None and np.all(np.isfinite(matrix)) and abs(np.linalg.det(matrix[:2, :2])) > 1e-6:
        panels.append(("refused estimate", matrix))
    return qc_panels(cf, moving, panels)


def register_record(record: PairRecord, out_dir: Path, options: RegistrationOptions, pipeline: PipelineOptions) -> list[dict]:
    """Register one pair (or one CF and an FFA video folder) and write its outputs; returns CSV rows."""
    out_dir = Path(out_dir)
    model = options.model
    try:
        cf = read_cf(record.cf, allow_grey=pipeline.allow_grey_cf, where="CF_DIR or the manifest")
        video = Path(record.ffa).is_dir()
        frames = list_images(record.ffa, "FFA_DIR") if video else [Path(record.ffa)]
        if not 0 <= pipeline.reference_frame < len(frames):
            raise DataError(
                f"--reference-frame {pipeline.reference_frame} is out of range for {record.ffa} ({len(frames)} frames)"
            )
        reference_path = frames[pipeline.reference_frame]
        reference = read_grey(reference_path, channel=pipeline.ffa_channel, where="FFA_DIR or the manifest")
    except Fundus2FFAError as exc:
        _remove_outputs(out_dir, record.id)
        return [_row(record.id, model, reason=str(exc))]

    estimate = register_images(cf, reference, "cf", "ffa", options)
    mask = None
    for _ in range(2):  # the estimate, then (when it leaves too little overlap) the pair as given
        if estimate.status not in USABLE:
            break
        mask = valid_mask(cf, reference, estimate.matrix)
        overlap = mask.sum() / max(1, int(fov_mask(cf).sum()))
        if overlap >= pipeline.min_overlap:
            break
        estimate.ok, estimate.status = False, "failed"
        estimate.reason = f"overlap {overlap:.2f} of the CF field of view < --min-overlap {pipeline.min_overlap}" + (
            f" ({estimate.reason})" if estimate.reason else "")
        if estimate.level != "identity":
            estimate = keep_as_given(cf, reference, estimate, options)
    if estimate.status not in USABLE:
        _remove_outputs(out_dir, record.id)
        _write_all(out_dir, record.id, {f"qc/{record.id}.png": failed_qc(cf, reference, estimate)})
        return [_row(record.id, model, estimate, "failed", estimate.reason)]

    warped = warp_into(reference, estimate.matrix, cf.shape)
    files = {
        f"cf/{record.id}.png": cf,
        f"ffa/{record.id}.png": warped,
        f"mask/{record.id}.png": mask * 255,
        f"qc/{record.id}.png": qc_image(cf, warped, mask),
    }
    rows = [_row(record.id, model, estimate, estimate.status, estimate.reason if estimate.status == "identity" else "")]
    if video:
        for index, frame_path in enumerate(frames):
            frame_id = f"{record.id}/{frame_path.stem}"
            if index == pipeline.reference_frame:
                files[f"video/{frame_id}.png"] = warped
                rows.append(_row(frame_id, model, estimate, estimate.status, "reference frame"))
                continue
            frame = read_grey(frame_path, channel=pipeline.ffa_channel, where="FFA_DIR")
            to_reference = estimate_transform(reference, frame, "ffa", "ffa", options)
            if not to_reference.ok:
                rows.append(_row(frame_id, model, to_reference, "failed", f"to the reference frame: {to_reference.reason}"))
                continue
            to_reference.matrix = estimate.matrix @ to_reference.matrix
            files[f"video/{frame_id}.png"] = warp_into(frame, to_reference.matrix, cf.shape)
            rows.append(_row(frame_id, model, to_reference, "ok", "via the reference frame"))
    _remove_outputs(out_dir, record.id)
    _write_all(out_dir, record.id, files)
    return rows


def _records(cf_dir, ffa_dir, manifest) -> list[PairRecord]:
    if manifest is not None:
        if not Path(manifest).is_file():
            raise DataError(f"--manifest {manifest} is not a file; give a CSV with columns cf, ffa [, id, category, group, split].")
        return PairedFolder(manifest=manifest).records()
    if cf_dir is None or ffa_dir is None:
        raise DataError("give CF_DIR and FFA_DIR (pairs matched by file name) or --manifest CSV")
    for folder, name in ((cf_dir, "CF_DIR"), (ffa_dir, "FFA_DIR")):
        if not Path(folder).is_dir():
            raise DataError(f"{name} {folder} is not a folder; give the folder of the {name[:-4]} images.")
    if Path(cf_dir).resolve() == Path(ffa_dir).resolve():
        raise DataError(
            f"CF_DIR and FFA_DIR are the same folder ({Path(cf_dir).resolve()}): every CF would be registered to itself. "
            "Give the folder of colour photographs and the folder of angiograms."
        )
    records = stem_pairs(Path(cf_dir), Path(ffa_dir), videos=True, where=("CF_DIR", "FFA_DIR"))
    return check_distinct_pairs(records, f"CF_DIR {cf_dir} and FFA_DIR {ffa_dir}", "give the folder of angiograms as FFA_DIR")


def check_out_dir(out_dir: Path, overwrite: bool = False) -> None:
    """OUT_DIR must be a new or empty folder, unless ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"OUT_DIR {out_dir} is a file; give a folder for the registered pairs.")
    entries = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if entries and not overwrite:
        shown = ", ".join(entries[:6]) + (f" and {len(entries) - 6} more" if len(entries) > 6 else "")
        raise DataError(
            f"OUT_DIR {out_dir} already holds files ({shown}); registering into it would replace them, so nothing was "
            "written. Choose a new OUT_DIR, or add --overwrite to replace the outputs of the pairs registered now "
            "(registration.csv and pairs.csv are rewritten; files of other pairs are kept)."
        )


def register_pairs(
    out_dir: str | Path,
    cf_dir: str | Path | None = None,
    ffa_dir: str | Path | None = None,
    manifest: str | Path | None = None,
    options: RegistrationOptions | None = None,
    pipeline: PipelineOptions | None = None,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> list[dict]:
    """Register every pair (see the module docstring); returns the rows of registration.csv.

    ``overwrite``: register into an OUT_DIR that already holds files (refused otherwise)."""
    options, pipeline = options or RegistrationOptions(), pipeline or PipelineOptions()
    options.check()
    out_dir = Path(out_dir)
    records = _records(cf_dir, ffa_dir, manifest)
    if Path(out_dir).resolve() in {Path(r.cf).parent.resolve() for r in records}:
        raise DataError(f"OUT_DIR {out_dir} is an input folder; choose a new output folder.")
    check_out_dir(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    bar = tqdm(total=len(records), desc="register", unit="pair", disable=not progress)
    if workers <= 1:
        for record in records:
            results[record.id] = register_record(record, out_dir, options, pipeline)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(register_record, r, out_dir, options, pipeline): r.id for r in records}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    bar.close()
    rows = [row for record in records for row in results[record.id]]
    write_csv(out_dir / "registration.csv", rows, list(CSV_COLUMNS))
    by_id = {r.id: r for r in records}
    manifest_rows = [
        {
            "id": row["id"], "cf": f"cf/{row['id']}.png", "ffa": f"ffa/{row['id']}.png", "mask": f"mask/{row['id']}.png",
            "category": by_id[row["id"]].category, "group": by_id[row["id"]].group, "split": by_id[row["id"]].split,
            "status": row["status"],
        }
        for row in rows if row["status"] in USABLE and row["id"] in by_id
    ]
    write_csv(out_dir / "pairs.csv", manifest_rows, ["id", "cf", "ffa", "mask", "category", "group", "split", "status"])
    write_json(out_dir / "registration_options.json", {**asdict(options), **asdict(pipeline)}, sort_keys=False)
    return rows
