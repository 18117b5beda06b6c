"""The results page of a run: ``<run>/results/index.html``, one static file that opens from disk.

What pix2pix users expect after ``test.py`` (junyanz/pytorch-CycleGAN-and-pix2pix writes an HTML table of
input | output | target per test image), with what this framework measures beside each image:

- the summary table of ``metrics.json`` (val and test) with the trivial-baseline rows where
  ``metrics.json`` has them (key ``baselines``: name -> metrics, or name -> {stage: metrics}); the values the
  baselines were fitted with (``baselines.fit``: the training FFA mean, the linear map) in a line below it;
- training curves drawn from the run's own ``history.csv`` (:mod:`fundus2ffa.callbacks.progress`): G and D
  losses and validation metrics per epoch, small SVG files under ``results/curves/`` (:mod:`fundus2ffa.plots`);
- a strip of the per-epoch sample grids (``samples/epoch_XXXX.png``, linked, with that epoch's val PSNR);
- one row per test image: its id and metrics from ``test_per_image.csv`` first (the id column stays in view
  while scrolling sideways), then CF | real FFA | generated FFA | absolute error (video models: the CF, a strip
  of real over generated frames and the generated MP4 in a ``<video>`` player); a click on any column header
  sorts by it (a few lines of inline JavaScript);
- on real data, the FID/KID columns with a row for the real test FFA itself (``realism.real_test_ffa``: a
  perfect generator's value at this N) and the reference sets named under the table;
- the run's resolved configuration (``config_resolved.yaml``).

Images are written once by :class:`fundus2ffa.callbacks.test_outputs.TestOutputs` during the test step,
under ``results/images`` and ``results/videos``, and referenced by relative links, not inlined: a page
of a few hundred test images stays small and the PNGs stay usable on their own.

Regenerate a page: ``python -m fundus2ffa.results_page <run dir>``.
"""

import csv
import hashlib
import html
import json
import re
from pathlib import Path

from fundus2ffa.errors import DataError
from fundus2ffa.plots import curves_from_history, read_history
from fundus2ffa.writers import write_text

RESULTS_DIR = "results"
CURVES_DIR = "curves"
HISTORY_FILE = "history.csv"
IMAGE_KINDS = ("cf", "real", "fake", "error")
COLUMN_TITLES = {"cf": "CF", "real": "real FFA", "fake": "generated FFA", "error": "|generated - real|",
                 "strip": "frames: real (top) / generated (bottom)", "video": "generated video"}


def item_stem(item_id: str) -> str:
    """A file-name stem for a test item id (ids hold '/', e.g. ``abnormal/3``): readable and collision-free."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", item_id).strip("_.")[:60] or "item"
    return f"{readable}-{hashlib.sha1(item_id.encode()).hexdigest()[:6]}"


def result_files(results_dir: Path, item_id: str) -> dict[str, Path]:
    """Where the per-image outputs of ``item_id`` live under ``results_dir`` (one place for writer and page)."""
    stem = item_stem(item_id)
    files = {kind: Path(results_dir) / "images" / f"{stem}_{kind}.png" for kind in (*IMAGE_KINDS, "strip")}
    files["video"] = Path(results_dir) / "videos" / f"{stem}.mp4"
    return files


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN -> None


def _fmt(value) -> str:
    number = _number(value)
    return html.escape(str(value)) if number is None else f"{number:.4g}"


def summary_rows(metrics: dict) -> list[tuple[str, dict]]:
    """(label, {metric: value}) rows: val and test of this run, then every trivial baseline."""
    rows = [(f"this run ({stage})", metrics[stage]) for stage in ("val", "test") if isinstance(metrics.get(stage), dict)]
    for name, values in (metrics.get("baselines") or {}).items():
        if not isinstance(values, dict) or name == "fit":  # fit: what the baselines were fitted with, not a predictor
            continue
        staged = {k: v for k, v in values.items() if isinstance(v, dict)}
        if staged:
            rows += [(f"baseline {name} ({stage})", v) for stage, v in staged.items()]
        else:
            rows.append((f"baseline {name}", values))
    real = (metrics.get("realism") or {}).get("real_test_ffa")
    if isinstance(real, dict) and real:
        rows.append(("real test FFA (realism floor)", real))
    return rows


def realism_note(metrics: dict) -> str:
    """One line naming the FID/KID reference sets (or why realism was skipped); '' without realism."""
    realism = metrics.get("realism") or {}
    if realism.get("skipped"):
        return f"FID/KID not computed: {realism['skipped']}"
    references = realism.get("references") or {}
    named = {"test": "fid, kid", "train": "fid_train, kid_train", "frames": "fid_frames, kid_frames"}
    order = sorted(references, key=lambda k: (list(named).index(k) if k in named else len(named), k))
    parts = [f"{named.get(k, k)}: {references[k].get('source', k)} ({references[k].get('count', '?')} images)" for k in order]
    return "FID/KID reference sets (lower is better): " + "; ".join(parts) if parts else ""


def _metric_keys(dicts: list[dict], skip: tuple = ()) -> list[str]:
    keys = []
    for values in dicts:
        keys += [k for k, v in values.items() if k not in skip and k not in keys and _number(v) is not None]
    return sorted(keys, key=lambda k: ("/" in k, k))


def _link(path: Path, results_dir: Path) -> str:
    return html.escape(path.relative_to(results_dir).as_posix(), quote=True)


def _image_cells(results_dir: Path, item_id: str, video: bool) -> list[str]:
    files = result_files(results_dir, item_id)
    kinds = ("cf", "strip", "video") if video else IMAGE_KINDS
    cells = []
    for kind in kinds:
        path = files[kind]
        if not path.is_file():
            cells.append('<td class="missing">not written</td>')
        elif kind == "video":
            cells.append(f'<td><video src="{_link(path, results_dir)}" controls loop muted preload="metadata"></video></td>')
        else:
            cells.append(f'<td><a href="{_link(path, results_dir)}"><img src="{_link(path, results_dir)}" '
                         f'alt="{kind} {html.escape(item_id, quote=True)}"></a></td>')
    return cells


SORTER = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th[data-col]").forEach(function (th) {
    th.addEventListener("click", function () {
      var col = Number(th.dataset.col), asc = th.dataset.dir !== "asc";
      table.querySelectorAll("th[data-col]").forEach(function (o) { delete o.dataset.dir; });
      th.dataset.dir = asc ? "asc" : "desc";
      var body = table.tBodies[0], rows = Array.from(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        var nx = parseFloat(x), ny = parseFloat(y), numeric = !isNaN(nx) && !isNaN(ny);
        var c = numeric ? nx - ny : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

STYLE = """
body { font-family: sans-serif; margin: 1.5em; } table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 4px 6px; text-align: center; }
th[data-col] { cursor: pointer; background: #eef; } th[data-dir="asc"]::after { content: " \\25B2"; }
th[data-dir="desc"]::after { content: " \\25BC"; }
#per-image img, #per-image video { max-width: 128px; max-height: 128px; min-width: 64px; }
#per-image td:first-child, #per-image th:first-child { position: sticky; left: 0; background: #fff; z-index: 1; }
#per-image th:first-child { background: #eef; }
.scroll { overflow-x: auto; } .curves img { margin: 0 8px 8px 0; border: 1px solid #ddd; }
.strip { display: flex; gap: 8px; overflow-x: auto; padding-bottom: 6px; }
.strip figure { margin: 0; text-align: center; font-size: 12px; } .strip img { height: 220px; border: 1px solid #ddd; }
td.missing { color: #a00; } pre { background: #f6f6f6; padding: 1em; overflow: auto; max-height: 40em; }
p.note { color: #555; font-size: 13px; }
"""


def fitted_baselines_note(metrics: dict) -> str:
    """What the trivial baselines were fitted with (metrics.json ``baselines.fit``), in words; "" without it."""
    fit = (metrics.get("baselines") or {}).get("fit")
    if not isinstance(fit, dict):
        return ""
    parts = []
    mean = _number(fit.get("train_ffa_mean"))
    if mean is not None:
        parts.append(f"training FFA mean {mean:.4g} (in [-1, 1]; grey level {(mean + 1) * 127.5:.1f} of 255), the "
                     "constant baseline's value")
    weights = fit.get("linear_weights_rgb_bias")
    if isinstance(weights, list) and len(weights) == 4 and all(_number(w) is not None for w in weights):
        w = [float(x) for x in weights]
        parts.append(f"linear baseline FFA = {w[0]:.3g} R {w[1]:+.3g} G {w[2]:+.3g} B {w[3]:+.3g} (all in [-1, 1])")
    means = fit.get("train_frame_means")  # video baselines (metrics/video_baselines.py)
    if isinstance(means, list) and means and all(_number(m) is not None for m in means):
        parts.append("training frame means " + ", ".join(f"{float(m):.3g}" for m in means) + " (in [-1, 1], frame 1 first), "
                     "the constant baseline's frames; the linear baseline maps the CF once per frame index")
    return "Baselines fitted on the training data: " + "; ".join(parts) + "." if parts else ""


def curve_images(run_dir: Path, results_dir: Path) -> list[tuple[Path, str]]:
    """Write the run's training curves (from history.csv) as SVG files under ``results/curves``; returns
    (file, title) of each."""
    rows = read_history(Path(run_dir) / HISTORY_FILE)
    written = []
    for stem, title, svg in curves_from_history(rows):
        written.append((write_text(Path(results_dir) / CURVES_DIR / f"{stem}.svg", svg), title))
    return written


def sample_strip(run_dir: Path) -> list[tuple[Path, str]]:
    """The per-epoch sample grids (samples/epoch_XXXX.png), each with a caption (its val PSNR where known)."""
    samples = sorted((Path(run_dir) / "samples").glob("epoch_*.png"))
    history = {int(r["epoch"]): r for r in read_history(Path(run_dir) / HISTORY_FILE) if _number(r.get("epoch")) is not None}
    strip = []
    for path in samples:
        try:
            epoch = int(path.stem.split("_")[-1])
        except ValueError:
            continue
        psnr = _number((history.get(epoch) or {}).get("val/psnr"))
        strip.append((path, f"{path.stem}" + (f" · val psnr {psnr:.3g}" if psnr is not None else "")))
    return strip


def _relative(path: Path, results_dir: Path) -> str:
    import os

    return html.escape(Path(os.path.relpath(path, results_dir)).as_posix(), quote=True)


def render(results_dir: Path, metrics: dict, rows: list[dict], config_text: str, title: str,
           curves: list[tuple[Path, str]] = (), strip: list[tuple[Path, str]] = ()) -> str:
    """The page's HTML (pure: reads only the per-image files' existence)."""
    video = any(result_files(results_dir, str(r.get("id", "")))["video"].is_file() for r in rows)
    image_titles = [COLUMN_TITLES[k] for k in (("cf", "strip", "video") if video else IMAGE_KINDS)]
    row_keys = _metric_keys(rows, skip=("id", "category"))
    head = ['<th data-col="0">id</th>', '<th data-col="1">category</th>']
    head += [f'<th data-col="{2 + j}">{html.escape(k)}</th>' for j, k in enumerate(row_keys)]
    head += [f"<th>{t}</th>" for t in image_titles]
    body = []
    for row in rows:
        item_id = str(row.get("id", ""))
        cells = [f'<td data-v="{html.escape(item_id, quote=True)}">{html.escape(item_id)}</td>',
                 f'<td data-v="{html.escape(str(row.get("category") or ""), quote=True)}">{html.escape(str(row.get("category") or ""))}</td>']
        for key in row_keys:
            number = _number(row.get(key))
            cells.append(f'<td data-v="{"" if number is None else repr(number)}">{_fmt(row.get(key, ""))}</td>')
        cells += _image_cells(results_dir, item_id, video)
        body.append("<tr>" + "".join(cells) + "</tr>")
    curves_html = "".join(
        f'<img src="{_relative(path, results_dir)}" alt="{html.escape(name, quote=True)}" title="{html.escape(name, quote=True)}">'
        for path, name in curves)
    curves_section = (f'<h2>Training curves</h2><div class="curves" id="curves">{curves_html}</div>'
                      '<p class="note">Per epoch, from history.csv in the run folder (epochs counted from 0, as the '
                      'samples/epoch_XXXX.png files).</p>') if curves else ""
    strip_html = "".join(
        f'<figure><a href="{_relative(path, results_dir)}"><img src="{_relative(path, results_dir)}" '
        f'alt="{html.escape(caption, quote=True)}"></a><figcaption>{html.escape(caption)}</figcaption></figure>'
        for path, caption in strip)
    strip_section = (f'<h2>Samples per epoch</h2><p class="note">CF | real FFA | generated FFA for the same validation '
                     f'images each epoch.</p><div class="strip" id="samples">{strip_html}</div>') if strip else ""
    fitted = fitted_baselines_note(metrics)
    fitted_html = f'<p class="note" id="fitted">{html.escape(fitted)}</p>' if fitted else ""

    summary = summary_rows(metrics)
    summary_keys = _metric_keys([values for _, values in summary])
    summary_head = '<th data-col="0">run</th>' + "".join(
        f'<th data-col="{j + 1}">{html.escape(k)}</th>' for j, k in enumerate(summary_keys))
    summary_body = "".join(
        "<tr>" + f'<td data-v="{html.escape(label, quote=True)}">{html.escape(label)}</td>'
        + "".join(f'<td data-v="{"" if _number(v.get(k)) is None else repr(_number(v.get(k)))}">{_fmt(v.get(k, ""))}</td>'
                  for k in summary_keys) + "</tr>"
        for label, v in summary)
    facts = {k: metrics.get(k) for k in ("model", "checkpoint", "epoch", "global_step") if metrics.get(k) is not None}
    facts_html = "".join(f"<li>{html.escape(k)}: <code>{html.escape(str(v))}</code></li>" for k, v in facts.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<ul>{facts_html}</ul>
<h2>Summary</h2>
<table id="summary" class="sortable"><thead><tr>{summary_head}</tr></thead><tbody>{summary_body}</tbody></table>
{fitted_html}
{curves_section}
{strip_section}
<p id="realism">{html.escape(realism_note(metrics))}</p>
<h2>Test images ({len(rows)})</h2>
<p>Click a column header to sort. Error: |generated - real| on 8-bit images, black 0 to yellow at half the range.</p>
<div class="scroll"><table id="per-image" class="sortable"><thead><tr>{"".join(head)}</tr></thead><tbody>{"".join(body)}</tbody></table></div>
<h2>Configuration</h2>
<pre>{html.escape(config_text)}</pre>
<script>{SORTER}</script>
</body></html>
"""


def write_results_page(run_dir: Path, title: str | None = None) -> Path:
    """Write ``<run_dir>/results/index.html`` from the run's metrics.json, test_per_image.csv and config."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run folder {run_dir} does not exist; pass the folder that holds metrics.json")
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    rows_path = run_dir / "test_per_image.csv"
    rows = list(csv.DictReader(rows_path.open(newline=""))) if rows_path.is_file() else []
    config_path = run_dir / "config_resolved.yaml"
    config_text = config_path.read_text() if config_path.is_file() else "(config_resolved.yaml not found)"
    results_dir = run_dir / RESULTS_DIR
    results_dir.mkdir(parents=True, exist_ok=True)
    page = render(results_dir, metrics, rows, config_text, title or f"fundus2ffa results: {run_dir.name}",
                  curve_images(run_dir, results_dir), sample_strip(run_dir))
    return write_text(results_dir / "index.html", page)


def main(argv: list[str] | None = None) -> Path:
    import argparse

    from fundus2ffa.config import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="python -m fundus2ffa.results_page", formatter_class=HelpFormatter,
        description="Write (again) the results page of a run, <run dir>/results/index.html, from its metrics.json, "
                    "test_per_image.csv, history.csv, samples/ and config_resolved.yaml; prints its path.",
        epilog="example: python -m fundus2ffa.results_page outputs/train/runs/<time>_<id>")
    parser.add_argument("run_dir", type=Path, help="the run folder (the one holding metrics.json)")
    parser.add_argument("--title", default=None, help="the page's title (default: 'fundus2ffa results: <folder name>')")
    args = parser.parse_args(argv)
    try:
        page = write_results_page(args.run_dir, args.title)
    except DataError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(page)
    return page


if __name__ == "__main__":
    main()
