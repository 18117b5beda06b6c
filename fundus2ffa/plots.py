"""Small line charts as standalone SVG text (no plotting library, no server): the loss and validation curves
of a run's results page and of a sweep's report (issue 23 item 3).

:func:`curves_from_history` turns the rows of a run's ``history.csv`` (:mod:`fundus2ffa.callbacks.progress`)
into named charts; :func:`line_chart` draws one chart, one polyline per series, with axes, ticks, a legend
and a title. The SVG carries its size (``width`` / ``height``), so an ``<img>`` shows it at that size.
"""

from __future__ import annotations

import csv
import html
import math
from pathlib import Path

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
# what each chart of a run shows: (file stem, title, y label, predicate over history columns)
CHARTS = (
    ("loss_g_total", "G loss (weighted total)", "loss", lambda k: k == "train/g_total"),
    ("loss_g_terms", "G loss terms (unweighted)", "loss", lambda k: k.startswith("train/g_") and k != "train/g_total"),
    ("loss_d", "D loss (total and terms)", "loss", lambda k: k.startswith("train/d_")),
    ("val_psnr", "validation PSNR", "dB", lambda k: k.startswith("val/psnr") and k.count("/") == 1),
    ("val_ssim_dice", "validation SSIM and Dice", "", lambda k: k.startswith("val/") and k.count("/") == 1
     and k.split("/", 1)[1].split("_")[0] in ("ssim", "vessel", "leakage")),
)
# per-category metrics (val/psnr/abnormal) stay in history.csv: the charts show the overall ones


def read_history(path: str | Path) -> list[dict]:
    """The rows of a history.csv (values as floats where they parse); [] when there is none."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            parsed = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value)
                except (TypeError, ValueError):
                    parsed[key] = value
            rows.append(parsed)
    return rows


def _nice_step(span: float, count: int = 5) -> float:
    raw = span / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        pad = abs(low) * 0.05 or 1.0
        low, high = low - pad, high + pad
    step = _nice_step(high - low, count)
    start = math.floor(low / step) * step
    ticks, value = [], start
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks and ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _label(value: float) -> str:
    return f"{value:.4g}"


def line_chart(series: dict[str, list[tuple[float, float]]], title: str, x_label: str = "epoch", y_label: str = "",
               width: int = 420, height: int = 260) -> str:
    """One SVG chart: ``series`` maps a legend name to (x, y) points (NaN and None points are skipped)."""
    clean = {name: [(float(x), float(y)) for x, y in points if x is not None and y is not None
                    and math.isfinite(float(x)) and math.isfinite(float(y))]
             for name, points in series.items()}
    clean = {name: sorted(points) for name, points in clean.items() if points}
    left, right, top, bottom = 58, 12, 28, 40
    legend_rows = len(clean)
    bottom += 14 * legend_rows
    height = max(height, top + bottom + 80)
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for points in clean.values() for x, _ in points]
    ys = [y for points in clean.values() for _, y in points]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2:.1f}" y="16" text-anchor="middle" font-size="13" font-weight="bold">{html.escape(title)}</text>']
    if not xs:
        parts.append(f'<text x="{width / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle" fill="#777">no data</text></svg>')
        return "".join(parts)
    x_ticks, y_ticks = _ticks(min(xs), max(xs)), _ticks(min(ys), max(ys))
    if len(set(xs)) == 1:
        x_ticks = [min(xs) - 1, min(xs), min(xs) + 1]
    x_lo, x_hi = x_ticks[0], x_ticks[-1]
    y_lo, y_hi = y_ticks[0], y_ticks[-1]

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo or 1.0) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y - y_lo) / (y_hi - y_lo or 1.0) * plot_h

    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
    for y in y_ticks:
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 4}" y="{py(y) + 4:.1f}" text-anchor="end">{_label(y)}</text>')
    integer_x = all(float(x).is_integer() for x in xs)
    for x in x_ticks:
        if integer_x and not float(x).is_integer():
            continue
        parts.append(f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" stroke="#999"/>')
        parts.append(f'<text x="{px(x):.1f}" y="{top + plot_h + 15}" text-anchor="middle">{_label(x)}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 29}" text-anchor="middle">{html.escape(x_label)}</text>')
    if y_label:
        parts.append(f'<text x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
                     f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">{html.escape(y_label)}</text>')
    for index, (name, points) in enumerate(clean.items()):
        colour = PALETTE[index % len(PALETTE)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        parts.append(f'<polyline class="series" data-name="{html.escape(name, quote=True)}" points="{coords}" fill="none" '
                     f'stroke="{colour}" stroke-width="1.8"/>')
        if len(points) <= 40:
            parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{colour}"/>' for x, y in points]
        legend_y = top + plot_h + 44 + 14 * index
        parts.append(f'<line x1="{left}" x2="{left + 18}" y1="{legend_y - 4}" y2="{legend_y - 4}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{left + 24}" y="{legend_y}">{html.escape(name)} (last {_label(points[-1][1])})</text>')
    parts.append("</svg>")
    return "".join(parts)


def curves_from_history(rows: list[dict], x_key: str = "epoch") -> list[tuple[str, str, str]]:
    """(file stem, title, SVG) for each chart of :data:`CHARTS` that ``rows`` (history.csv) has data for."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    charts = []
    for stem, title, y_label, wanted in CHARTS:
        keys = [k for k in columns if wanted(k)]
        series = {k: [(row.get(x_key), row.get(k)) for row in rows if isinstance(row.get(k), (int, float))] for k in keys}
        series = {k: v for k, v in series.items() if v}
        if series:
            charts.append((stem, title, line_chart(series, title, x_label=x_key, y_label=y_label)))
    return charts
