"""Collect the runs of a sweep into a results table in a paper's form, with the paper's numbers beside ours.

    python -m fundus2ffa.report outputs/train/multiruns/<time>                 # markdown on stdout
    python -m fundus2ffa.report outputs/train/multiruns/<time> --format csv --output table.csv
    python -m fundus2ffa.report runs/ --metrics psnr,ssim --stage test

Every folder under the given one that holds a ``metrics.json`` (written by ``fundus2ffa.run``) is a run.
A run is placed by

* its column: ``report.column`` of its config (an experiment variant such as ``without_saliency``), else
  its ``experiment`` choice, else its model class;
* its dataset: its ``data`` config choice (from ``.hydra/hydra.yaml``), else the data reader's class.

Runs of one column and dataset (seeds) are averaged: mean +- sample standard deviation, and the number of
runs. Metrics are whatever the runs report (PSNR/SSIM here, FID or FVD for other experiments): every key
of the stage's metrics, per-category keys (``psnr/abnormal``) as their own rows; where metrics.json has no
per-category keys, they are computed from ``test_per_image.csv``. When the experiment names the paper's
numbers for the dataset (``report.reported.<data config>.<metric>.<column>``, e.g.
conf/experiment/li2020.yaml), a "(paper)" row follows each of our rows. Column order: ``report.columns``
(the paper's order), then any others in the order the runs were found (sweep job order).
"""

import argparse
import csv
import io
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

METRIC_ORDER = ("psnr", "ssim", "psnr_fov", "ssim_fov", "lpips", "lpips_compat", "fid", "kid", "fvd")
SKIPPED = ("count",)
FORMATS = ("markdown", "csv", "json")


@dataclass
class Run:
    """One run directory: where it goes in the table and what it measured."""

    path: Path
    column: str
    dataset: str
    metrics: dict[str, float]
    seed: int | None = None
    paper: str | None = None
    columns: list[str] = field(default_factory=list)
    reported: dict = field(default_factory=dict)
    dataset_label: str | None = None


def _natural_key(path: Path):
    """Sort multirun job folders 0, 1, 2, ..., 10 numerically."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_runs(root: Path) -> list[Path]:
    """Folders under ``root`` (itself included) that hold a metrics.json, in natural order."""
    return sorted((p.parent for p in Path(root).rglob("metrics.json")), key=_natural_key)


def _load_yaml(path: Path):
    return OmegaConf.load(path) if path.is_file() else None


def _plain(node):
    return OmegaConf.to_container(node, resolve=False) if node is not None else None


def _category_means(csv_path: Path) -> dict[str, float]:
    """Per-category means ``metric/category`` from a per-image CSV with a category column (two or more)."""
    if not csv_path.is_file():
        return {}
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_category = defaultdict(list)
    for row in rows:
        if row.get("category"):
            by_category[row["category"]].append(row)
    if len(by_category) < 2:
        return {}
    out = {}
    for category, part in sorted(by_category.items()):
        for key in part[0]:
            if key in ("id", "category"):
                continue
            try:
                values = [float(r[key]) for r in part]
            except (TypeError, ValueError):
                continue
            out[f"{key}/{category}"] = sum(values) / len(values)
    return out


def load_run(path: Path, stage: str = "test") -> Run | None:
    """The run in ``path``; None when its metrics.json holds no ``stage`` metrics."""
    payload = json.loads((path / "metrics.json").read_text())
    metrics = {k: float(v) for k, v in (payload.get(stage) or {}).items() if k not in SKIPPED}
    if not metrics:
        return None
    if stage == "test" and not any("/" in k for k in metrics):
        metrics.update(_category_means(path / "test_per_image.csv"))
    config = _load_yaml(path / "config_resolved.yaml") or _load_yaml(path / ".hydra" / "config.yaml")
    hydra = _load_yaml(path / ".hydra" / "hydra.yaml")
    choices = _plain(OmegaConf.select(hydra, "hydra.runtime.choices")) if hydra is not None else {}
    choices = choices or {}
    report = (_plain(OmegaConf.select(config, "report")) if config is not None else None) or {}
    model_target = OmegaConf.select(config, "model._target_", default="") if config is not None else ""
    model_target = str(model_target or payload.get("model") or "model")
    column = report.get("column") or choices.get("experiment") or model_target.rsplit(".", 1)[-1]
    reader = str(OmegaConf.select(config, "data.reader._target_", default="") or "") if config is not None else ""
    dataset = choices.get("data") or (reader.rsplit(".", 1)[-1] if reader else "data")
    reported = (report.get("reported") or {}).get(dataset) or {}
    seed = OmegaConf.select(config, "seed", default=None) if config is not None else None
    return Run(
        path=path,
        column=str(column),
        dataset=str(dataset),
        metrics=metrics,
        seed=seed,
        paper=report.get("paper"),
        columns=[str(c) for c in report.get("columns") or []],
        reported={k: v for k, v in reported.items() if k != "dataset"},
        dataset_label=reported.get("dataset"),
    )


def _metric_rank(name: str):
    base, _, category = name.partition("/")
    order = METRIC_ORDER.index(base) if base in METRIC_ORDER else len(METRIC_ORDER)
    return (order, base, category)


def _decimals(value: float) -> int:
    return 4 if abs(value) < 10 else 2


def fmt(value: float | None, decimals: int | None = None) -> str:
    """Four decimals below 10 (SSIM, LPIPS, KID), two above (PSNR dB, FID, FVD)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{_decimals(value) if decimals is None else decimals}f}"


@dataclass
class Cell:
    mean: float
    std: float | None
    n: int

    def text(self) -> str:
        if self.n > 1 and self.std is not None:
            decimals = _decimals(self.mean)
            return f"{fmt(self.mean, decimals)} ± {fmt(self.std, decimals)}"
        return fmt(self.mean)


def summarise(runs: list[Run], metrics: list[str] | None = None) -> list[dict]:
    """One table per dataset: {'dataset', 'label', 'paper', 'columns', 'counts', 'rows': [(name, {col: Cell|float})]}."""
    tables = []
    for dataset in dict.fromkeys(r.dataset for r in runs):
        part = [r for r in runs if r.dataset == dataset]
        preferred = next((r.columns for r in part if r.columns), [])
        found = list(dict.fromkeys(r.column for r in part))
        columns = [c for c in preferred if c in found] + [c for c in found if c not in preferred]
        names = sorted({k for r in part for k in r.metrics}, key=_metric_rank)
        if metrics:
            names = [n for n in names if n.partition("/")[0] in metrics]
        reported = next((r.reported for r in part if r.reported), {})
        rows, counts = [], {}
        for column in columns:
            counts[column] = sum(1 for r in part if r.column == column)
        for name in names:
            cells = {}
            for column in columns:
                values = [r.metrics[name] for r in part if r.column == column and name in r.metrics]
                if values:
                    std = statistics.stdev(values) if len(values) > 1 else None
                    cells[column] = Cell(statistics.fmean(values), std, len(values))
            rows.append((name, cells))
            if name in reported:
                rows.append((f"{name} (paper)", {c: float(v) for c, v in reported[name].items() if c in columns}))
        tables.append({
            "dataset": dataset,
            "label": next((r.dataset_label for r in part if r.dataset_label), None),
            "paper": next((r.paper for r in part if r.paper), None),
            "columns": columns,
            "counts": counts,
            "rows": rows,
        })
    return tables


def _cell_text(cell) -> str:
    if cell is None:
        return "-"
    return cell.text() if isinstance(cell, Cell) else fmt(cell)


def to_markdown(tables: list[dict], stage: str) -> str:
    out = []
    for table in tables:
        title = f"{table['label']} (data={table['dataset']})" if table["label"] else f"data={table['dataset']}"
        out.append(f"### {title}, {stage} split")
        has_paper = any(name.endswith(" (paper)") for name, _ in table["rows"])
        if table["paper"] and has_paper:
            out.append(f"Ours: mean ± std over runs; (paper): {table['paper']}.")
        elif table["paper"]:
            out.append(f"Ours: mean ± std over runs. {table['paper']} report no numbers for data={table['dataset']}.")
        else:
            out.append("Mean ± std over runs.")
        out.append("")
        columns = table["columns"]
        out.append("| metric | " + " | ".join(columns) + " |")
        out.append("|---|" + "---|" * len(columns))
        out.append("| runs | " + " | ".join(str(table["counts"][c]) for c in columns) + " |")
        for name, cells in table["rows"]:
            out.append(f"| {name} | " + " | ".join(_cell_text(cells.get(c)) for c in columns) + " |")
        out.append("")
    return "\n".join(out)


def to_records(tables: list[dict]) -> list[dict]:
    records = []
    for table in tables:
        for name, cells in table["rows"]:
            source = "paper" if name.endswith(" (paper)") else "ours"
            metric = name.removesuffix(" (paper)")
            for column, cell in cells.items():
                record = {"dataset": table["dataset"], "metric": metric, "column": column, "source": source}
                if isinstance(cell, Cell):
                    record.update(mean=cell.mean, std=cell.std, n=cell.n)
                else:
                    record.update(mean=cell, std=None, n=None)
                records.append(record)
    return records


def render(tables: list[dict], output_format: str, stage: str) -> str:
    if output_format == "markdown":
        return to_markdown(tables, stage)
    records = to_records(tables)
    if output_format == "json":
        return json.dumps(records, indent=2)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["dataset", "metric", "column", "source", "mean", "std", "n"])
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m fundus2ffa.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a multirun folder (or any folder holding run folders)")
    parser.add_argument("--format", choices=FORMATS, default="markdown")
    parser.add_argument("--stage", default="test", help="metrics.json section: test (default) or val")
    parser.add_argument("--metrics", default=None, help="comma-separated metric names to keep, e.g. psnr,ssim")
    parser.add_argument("--output", type=Path, default=None, help="write here instead of stdout")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a folder; give a multirun folder such as outputs/train/multiruns/<time>")
    paths = find_runs(args.root)
    runs = [run for run in (load_run(p, args.stage) for p in paths) if run is not None]
    if not runs:
        parser.error(
            f"no run with '{args.stage}' metrics under {args.root} ({len(paths)} metrics.json found); runs write "
            "metrics.json when they finish. Check the folder or --stage."
        )
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    text = render(summarise(runs, metrics), args.format, args.stage)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    else:
        sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))
    return text


if __name__ == "__main__":
    main()
