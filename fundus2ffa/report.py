"""Collect the runs of a sweep into a results table in a paper's form, with the paper's numbers beside ours.

    python -m fundus2ffa.report outputs/train/multiruns/<time>                 # markdown on stdout
    python -m fundus2ffa.report outputs/train/multiruns/<time> --format csv --output table.csv
    python -m fundus2ffa.report runs/ --metrics psnr,ssim --stage test
    python -m fundus2ffa.report outputs/train/multiruns/<time> --curves curves/   # + training curves (SVG)

Every folder under the given one that holds a ``metrics.json`` (written by ``fundus2ffa.run``) is a run.
A run is placed by

* its dataset (one table each): its ``data`` config choice (from ``.hydra/hydra.yaml``), else the data
  reader's class;
* its column, which is one configuration: runs share a column only when everything that identifies a
  configuration is equal (:func:`run_identity`): the config group choices (``model=pix2pixhd``), every
  value of the composed config (``.hydra/config.yaml``, so swept overrides such as ``loss.l1.weight=10``
  and values set inside experiment files count) and the overrides in ``.hydra/overrides.yaml``; minus
  what only names a seed, a path or the machine (:data:`IGNORED`, extended with ``--ignore``). A class
  name alone never groups runs: pix2pix, pix2pixHD and the saliency cGAN are all ``PairedGAN``.
  A column is named by ``report.column`` (an experiment variant such as ``without_saliency``), else its
  ``experiment`` choice, else its ``model`` choice, else its model class; columns sharing that name get
  the values that tell them apart, ``pix2pix (loss.l1.weight=10)``. Each table says which keys its
  columns differ in.

Runs of one column and dataset (seeds) are averaged: mean +- sample standard deviation, and the number of
runs. A NaN score (e.g. psnr_fov of an image with an empty field of view) is left out of the means. Metrics are whatever the runs report (PSNR/SSIM here, FID or FVD for other experiments): every key
of the stage's metrics, per-category keys (``psnr/abnormal``) as their own rows; where metrics.json has no
per-category keys, they are computed from ``test_per_image.csv``. When the experiment names the paper's
numbers for the dataset (``report.reported.<data config>.<metric>.<column>``, e.g.
conf/experiment/li2020.yaml), a "(paper)" row follows each of our rows. Column order: ``report.columns``
(the paper's order), then any others in the order the runs were found (sweep job order).

A column holding a run whose checkpoint was selected on the split being reported (metrics.json
``selected_on``, e.g. ``data.val_from=test`` with ``eval_ckpt=best``), or that validated on the test split
when test is reported, is marked ``(!)`` with a note under the table: such a number is not an independent
result (issue 15).

``--curves <folder>`` also draws the sweep's training curves from each run's ``history.csv`` (written by
``fundus2ffa.callbacks.progress.EpochLog``): one SVG per quantity (validation PSNR and SSIM, the G and D
totals, every other ``val/*`` the runs logged), one line per configuration (the table's columns, the mean
over its seeds at each epoch), and an ``index.html`` showing them all (:mod:`fundus2ffa.plots`).

Test metrics of the trivial baselines that ``fundus2ffa.run`` scores beside every model (metrics.json
``baselines``: a constant image at the training FFA mean, a per-pixel linear map of the CF, that map
blurred to its best training PSNR, and the CF's top-hat vessel map rendered as bright vessels,
metrics/baselines.py; for videos the per-frame constant and linear map, metrics/video_baselines.py) follow each
quality metric as rows ``<metric> (baseline: constant|linear|blur|structure)``;
a model cell that does not beat the best baseline is marked ``(!)`` and listed under the table (issue 11).
The realism metrics (FID/KID against the test, training and frame reference sets, issue 22) are lower
is better: a model must be below the best baseline, and a row ``<metric> (real test FFA)`` gives the
real angiograms' own value at this N.
"""

import argparse
import csv
import fnmatch
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

from fundus2ffa.config import HelpFormatter
from fundus2ffa.plots import line_chart, read_history
from fundus2ffa.writers import write_text

METRIC_ORDER = ("psnr", "ssim", "psnr_fov", "ssim_fov", "vessel_dice", "leakage_dice", "lpips", "lpips_compat", "fid", "kid",
                "fid_train", "kid_train", "fid_frames", "kid_frames", "fvd")
#: metrics (higher is better) on which a model must beat the trivial baselines
BASELINE_CHECKED = ("psnr", "ssim", "psnr_fov", "ssim_fov", "vessel_dice", "leakage_dice")
#: realism metrics (lower is better, metrics/realism.py) on which a model must beat (be below) them
BASELINE_CHECKED_LOWER = ("fid", "kid", "fid_train", "kid_train", "fid_frames", "kid_frames")
SKIPPED = ("count",)
FORMATS = ("markdown", "csv", "json")
IGNORED = (
    # seeds: runs differing only in these are repeats of one configuration, averaged
    "seed", "*_seed",
    # where things are written or read from, and which weights file holds a pretrained network
    "paths", "paths.*", "hydra", "hydra.*", "ckpt_path", "task", "pretrained.*", "*.root", "*.csv", "*.manifest", "*_dir", "*dirpath",
    # the machine and bookkeeping, not the experiment
    "trainer", "trainer.accelerator", "trainer.devices", "trainer.strategy", "trainer.num_nodes",
    "trainer.enable_progress_bar", "trainer.log_every_n_steps", "data.num_workers", "*.cache",
    "logger", "logger.*", "callbacks", "callbacks.*", "realism", "realism.*", "local", "hydra/*",
    # the report's own settings (report.column names the column and stays)
    "report.paper", "report.columns", "report.reported", "report.reported.*",
)
"""Identity keys (fnmatch patterns over dotted config keys and group names) that do not make a new
configuration. ``callbacks`` are left out because they observe training (samples, FID) rather than shape it."""
CHOICE = "choice:"


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
    selection_note: str | None = None
    identity: dict[str, str] = field(default_factory=dict)
    overridden: frozenset = frozenset()
    baselines: dict = field(default_factory=dict)
    realism_floor: dict = field(default_factory=dict)  # the real test FFA's FID/KID (metrics.json realism.real_test_ffa)


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


def _ignored(key: str, ignore: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in ignore)


def _flatten(node, prefix: str = "") -> dict[str, str]:
    """Dotted key -> value (JSON text) of every leaf of a plain config."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or ({prefix[:-1]: "{}"} if prefix else {})
    return {prefix[:-1]: json.dumps(node, sort_keys=True, default=str)}


def _overrides(path: Path) -> dict[str, str]:
    """``key -> value`` of a run's command-line overrides (``.hydra/overrides.yaml``), ``+``/``++`` dropped."""
    items = _plain(_load_yaml(path)) or []
    out = {}
    for item in items if isinstance(items, list) else []:
        key, sep, value = str(item).partition("=")
        if sep and not key.startswith("~"):
            out[key.lstrip("+")] = value
    return out


def run_identity(path: Path, ignore: tuple[str, ...] = IGNORED) -> tuple[dict[str, str], frozenset]:
    """What makes the run in ``path`` a configuration: ``{key: value}`` over its group choices
    (``choice:model``), its composed config's values and its command-line overrides, minus ``ignore``;
    and the keys that were set on the command line (named first when columns are labelled).

    The unresolved ``.hydra/config.yaml`` is preferred: its interpolations (``${paths.output_dir}/...``)
    are equal across runs where their resolved values are not."""
    config = _load_yaml(path / ".hydra" / "config.yaml") or _load_yaml(path / "config_resolved.yaml")
    hydra = _load_yaml(path / ".hydra" / "hydra.yaml")
    choices = (_plain(OmegaConf.select(hydra, "hydra.runtime.choices")) if hydra is not None else None) or {}
    overrides = _overrides(path / ".hydra" / "overrides.yaml")
    identity = {}
    for group, option in choices.items():
        if not _ignored(group, ignore):
            identity[f"{CHOICE}{group}"] = str(option)
    if config is not None:
        for key, value in _flatten(_plain(config)).items():
            if not _ignored(key, ignore):
                identity[key] = value
    overridden = set()
    for key, value in overrides.items():
        name = f"{CHOICE}{key}" if key in choices else key
        if _ignored(key, ignore):
            continue
        overridden.add(name)
        identity.setdefault(name, json.dumps(value))
    return identity, frozenset(overridden)


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
            out[f"{key}/{category}"] = nan_mean(values)
    return out


def nan_mean(values) -> float:
    """Mean of the non-NaN values (NaN when there is none)."""
    kept = [v for v in values if not math.isnan(v)]
    return statistics.fmean(kept) if kept else math.nan


def load_run(path: Path, stage: str = "test", ignore: tuple[str, ...] = IGNORED) -> Run | None:
    """The run in ``path``; None when its metrics.json holds no ``stage`` metrics."""
    payload = json.loads((path / "metrics.json").read_text())
    metrics = {k: float("nan") if v is None else float(v) for k, v in (payload.get(stage) or {}).items() if k not in SKIPPED}
    if not metrics.get("fov_empty"):  # shown only where some image had no field of view
        metrics.pop("fov_empty", None)
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
    column = report.get("column") or choices.get("experiment") or choices.get("model") or model_target.rsplit(".", 1)[-1]
    reader = str(OmegaConf.select(config, "data.reader._target_", default="") or "") if config is not None else ""
    dataset = choices.get("data") or (reader.rsplit(".", 1)[-1] if reader else "data")
    reported = (report.get("reported") or {}).get(dataset) or {}
    seed = OmegaConf.select(config, "seed", default=None) if config is not None else None
    selected, validated = payload.get("selected_on"), payload.get("validated_on")
    note = None
    if selected and str(selected).replace("val_carved_from_train", "val") == stage:
        note = f"checkpoint selected on the {stage} split it reports (selected_on={selected})"
    elif stage == "test" and validated == "test":
        note = "validated on the test split (data.val_from=test)"
    identity, overridden = run_identity(path, ignore)
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
        selection_note=note,
        identity=identity,
        overridden=overridden,
        baselines={
            name: {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}
            for name, values in ((payload.get("baselines") or {}) if stage == "test" else {}).items()
            if name != "fit" and isinstance(values, dict)
        },
        realism_floor={k: float(v) for k, v in ((payload.get("realism") or {}).get("real_test_ffa") or {}).items()
                       if isinstance(v, (int, float)) and stage == "test"},
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
    flag: bool = False  # a model cell that does not beat the trivial baselines

    def text(self) -> str:
        mark = " (!)" if self.flag else ""
        if self.n > 1 and self.std is not None:
            decimals = _decimals(self.mean)
            return f"{fmt(self.mean, decimals)} ± {fmt(self.std, decimals)}{mark}"
        return fmt(self.mean) + mark


@dataclass
class Column:
    """One configuration of a table: its label, the runs (seeds) averaged in it and the key values that
    name it apart from the other columns (``shown``)."""

    label: str
    base: str
    runs: list[Run]
    shown: dict[str, str] = field(default_factory=dict)

    @property
    def identity(self) -> dict[str, str]:
        return self.runs[0].identity


def _display_key(key: str) -> str:
    return key.removeprefix(CHOICE)


def _display_value(value: str | None) -> str:
    if value is None:
        return "(unset)"
    try:
        decoded = json.loads(value)
    except (TypeError, ValueError):
        return str(value)
    return decoded if isinstance(decoded, str) else json.dumps(decoded)


def _label_keys(groups: list[list[Run]], candidates: list[str]) -> list[str]:
    """The fewest of ``candidates`` (in order) that tell ``groups`` apart: a key is taken when it splits
    groups that the keys taken so far leave together."""
    taken: list[str] = []

    def collisions(keys):
        seen = defaultdict(int)
        for group in groups:
            seen[tuple(group[0].identity.get(k) for k in keys)] += 1
        return sum(n - 1 for n in seen.values())

    for key in candidates:
        if collisions(taken) == 0:
            break
        if collisions(taken + [key]) < collisions(taken):
            taken.append(key)
    return taken


def configurations(runs: list[Run]) -> tuple[list[Column], list[str], int]:
    """The columns of one table: runs grouped by their whole identity (one column per configuration),
    labelled by base name plus the values that tell columns of one base name apart.

    Returns the columns (paper order, then the order runs were found), the keys the columns differ in
    that are named (group choices, command-line overrides, and any key a label needed), and the number
    of other config values that differ between columns (those the named keys imply)."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(sorted(run.identity.items())), []).append(run)
    configs = list(groups.values())
    keys = sorted({k for r in runs for k in r.identity})
    varying = [k for k in keys if len({g[0].identity.get(k) for g in configs}) > 1]
    overridden = set().union(*(r.overridden for r in runs))

    def rank(key):  # command-line choices, other command-line overrides, other choices, anything else
        choice = key.startswith(CHOICE)
        return (0 if choice and key in overridden else 1 if key in overridden else 2 if choice else 3, key)

    varying.sort(key=rank)
    by_base = defaultdict(list)
    for group in configs:
        by_base[group[0].column].append(group)
    label_keys = {}
    for base, siblings in by_base.items():
        if len(siblings) > 1:
            inside = [k for k in varying if len({g[0].identity.get(k) for g in siblings}) > 1]
            label_keys[base] = _label_keys(siblings, inside)
    columns = []
    for group in configs:
        base = group[0].column
        shown = {_display_key(k): _display_value(group[0].identity.get(k)) for k in label_keys.get(base, [])}
        label = base + (" (" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")" if shown else "")
        columns.append(Column(label, base, group, shown))
    preferred = next((r.columns for r in runs if r.columns), [])
    order = {name: i for i, name in enumerate(preferred)}
    columns.sort(key=lambda c: order.get(c.base, len(order)))  # stable: found order otherwise
    named = {k for k in varying if rank(k)[0] < 3} | {k for ks in label_keys.values() for k in ks}
    differ_in = [_display_key(k) for k in varying if k in named]
    return columns, differ_in, len(varying) - len(differ_in)


def summarise(runs: list[Run], metrics: list[str] | None = None) -> list[dict]:
    """One table per dataset: {'dataset', 'label', 'paper', 'columns' (labels), 'counts', 'configs'
    ({label: {key: value}} of the keys the columns differ in), 'differ_in', 'implied', 'rows':
    [(name, {label: Cell|float})]}. New row kinds (baselines, marks) append to 'rows' in the same form."""
    tables = []
    for dataset in dict.fromkeys(r.dataset for r in runs):
        part = [r for r in runs if r.dataset == dataset]
        columns, differ_in, implied = configurations(part)
        labels = [c.label for c in columns]
        names = sorted({k for r in part for k in r.metrics}, key=_metric_rank)
        if metrics:
            names = [n for n in names if n.partition("/")[0] in metrics]
        reported = next((r.reported for r in part if r.reported), {})
        rows, flags = [], []
        for name in names:
            cells = {}
            for column in columns:
                values = [r.metrics[name] for r in column.runs if name in r.metrics and not math.isnan(r.metrics[name])]
                if values:
                    std = statistics.stdev(values) if len(values) > 1 else None
                    cells[column.label] = Cell(statistics.fmean(values), std, len(values))
            rows.append((name, cells))
            rows.extend(_baseline_rows(name, cells, columns, flags))
            if name in reported:
                paper = {c.label: float(reported[name][c.base]) for c in columns if c.base in reported[name]}
                rows.append((f"{name} (paper)", paper))
        configs = {}
        for column in columns:
            values = {}
            for key in differ_in:
                raw = column.identity.get(key if key in column.identity else f"{CHOICE}{key}")
                values[key] = _display_value(raw)
            configs[column.label] = values
        tables.append({
            "dataset": dataset,
            "label": next((r.dataset_label for r in part if r.dataset_label), None),
            "paper": next((r.paper for r in part if r.paper), None),
            "columns": labels,
            "counts": {c.label: len(c.runs) for c in columns},
            "configs": configs,
            "differ_in": differ_in,
            "implied": implied,
            "rows": rows,
            "baseline_flags": flags,
            "notes": {c.label: n for c in columns for n in [next((r.selection_note for r in c.runs if r.selection_note), None)] if n},
        })
    return tables


def _baseline_rows(name: str, cells: dict, columns: list, flags: list) -> list:
    """Rows ``<name> (baseline: <kind>)`` from the runs' metrics.json baselines; marks (and lists in
    ``flags``) the model cells of a higher-is-better metric that do not beat the better baseline."""
    lower = name in BASELINE_CHECKED_LOWER
    if name not in BASELINE_CHECKED and not lower:
        return []
    pick = min if lower else max
    kinds = list(dict.fromkeys(k for c in columns for r in c.runs for k in r.baselines))
    rows, best = [], {}
    for kind in kinds:
        row = {}
        for column in columns:
            values = [r.baselines[kind][name] for r in column.runs if name in r.baselines.get(kind, {})]
            if values:
                row[column.label] = Cell(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))
                best[column.label] = pick(best.get(column.label, math.inf if lower else -math.inf), row[column.label].mean)
        if row:
            rows.append((f"{name} (baseline: {kind})", row))
    if lower:  # the real test FFA against the same references: a perfect generator's value at this N
        floor = {c.label: statistics.fmean(v) for c in columns
                 for v in [[r.realism_floor[name] for r in c.runs if name in r.realism_floor]] if v}
        if floor:
            rows.append((f"{name} (real test FFA)", floor))
    for label, cell in cells.items():
        beaten = label in best and isinstance(cell, Cell) and (cell.mean >= best[label] if lower else cell.mean <= best[label])
        if beaten:
            cell.flag = True
            sign = ">=" if lower else "<="
            flags.append(f"{label} does not beat the trivial baselines on {name} ({fmt(cell.mean)} {sign} {fmt(best[label])})")
    return rows


def _cell_text(cell) -> str:
    if cell is None:
        return "-"
    return cell.text() if isinstance(cell, Cell) else fmt(cell)


def _grouping_line(table: dict) -> str:
    """Which keys make the columns different configurations (runs within a column differ only in seed)."""
    if len(table["columns"]) == 1:
        return "One configuration; its runs differ only in seed (or in paths)."
    keys = ", ".join(table["differ_in"]) or "config values"
    implied = f" (and {table['implied']} config values these imply)" if table["implied"] and table["differ_in"] else ""
    return f"Each column is one configuration; columns differ in: {keys}{implied}. Runs within a column (seeds) are averaged."


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
        out.append(_grouping_line(table))
        out.append("")
        columns = table["columns"]
        notes = table.get("notes") or {}
        out.append("| metric | " + " | ".join(f"{c} (!)" if c in notes else c for c in columns) + " |")
        out.append("|---|" + "---|" * len(columns))
        out.append("| runs | " + " | ".join(str(table["counts"][c]) for c in columns) + " |")
        for name, cells in table["rows"]:
            out.append(f"| {name} | " + " | ".join(_cell_text(cells.get(c)) for c in columns) + " |")
        for column, note in notes.items():
            out.append(f"(!) {column}: {note}; not an independent {stage} result.")
        for flag in table.get("baseline_flags") or []:
            out.append(f"(!) {flag}")
        out.append("")
    return "\n".join(out)


def to_records(tables: list[dict]) -> list[dict]:
    records = []
    for table in tables:
        for name, cells in table["rows"]:
            source = "paper" if name.endswith(" (paper)") else "ours"
            metric = name.removesuffix(" (paper)")
            for column, cell in cells.items():
                config = "; ".join(f"{k}={v}" for k, v in table["configs"].get(column, {}).items())
                record = {"dataset": table["dataset"], "metric": metric, "column": column, "configuration": config,
                          "source": source,
                          "selection_note": (table.get("notes") or {}).get(column) if source == "ours" else None}
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
    writer = csv.DictWriter(
        buffer, fieldnames=["dataset", "metric", "column", "configuration", "source", "mean", "std", "n", "selection_note"]
    )
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


# the quantities a sweep's curves show first (then any other val/* the runs logged)
CURVE_ORDER = ("val/psnr", "val/ssim", "train/g_total", "train/d_total", "val/psnr_fov", "val/ssim_fov")
CURVE_UNITS = {"val/psnr": "dB", "val/psnr_fov": "dB"}


def write_sweep_curves(runs: list[Run], folder: Path) -> Path | None:
    """One SVG per quantity and dataset under ``folder`` (one line per configuration, the mean over its runs at
    each epoch of their history.csv) and an index.html that shows them; None when no run has a history."""
    folder = Path(folder)
    figures = []
    for dataset in dict.fromkeys(r.dataset for r in runs):
        columns, _, _ = configurations([r for r in runs if r.dataset == dataset])
        histories = {c.label: [read_history(r.path / "history.csv") for r in c.runs] for c in columns}
        keys = list(dict.fromkeys(k for rows_list in histories.values() for rows in rows_list for row in rows for k in row))
        wanted = [k for k in CURVE_ORDER if k in keys] + sorted(
            k for k in keys if k.startswith("val/") and k not in CURVE_ORDER and "/" not in k.split("/", 1)[1])
        for key in wanted:
            series = {}
            for label, rows_list in histories.items():
                per_epoch = defaultdict(list)
                for rows in rows_list:
                    for row in rows:
                        value = row.get(key)
                        if isinstance(value, float) and not math.isnan(value) and isinstance(row.get("epoch"), float):
                            per_epoch[row["epoch"]].append(value)
                if per_epoch:
                    series[label] = [(epoch, statistics.fmean(v)) for epoch, v in sorted(per_epoch.items())]
            if not series:
                continue
            title = f"{key} ({dataset})"
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{dataset}_{key}").strip("_") + ".svg"
            write_text(folder / name, line_chart(series, title, y_label=CURVE_UNITS.get(key, ""), width=520, height=300))
            figures.append((name, title))
    if not figures:
        return None
    images = "".join(f'<img src="{n}" alt="{t}" title="{t}" style="margin:0 8px 8px 0;border:1px solid #ddd">' for n, t in figures)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>sweep curves</title></head>'
            f'<body style="font-family:sans-serif"><h1>Training curves per configuration</h1>'
            f"<p>One line per configuration (mean over its seeds), per epoch, from each run's history.csv.</p>{images}</body></html>")
    return write_text(folder / "index.html", page)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m fundus2ffa.report", formatter_class=HelpFormatter,
        description=__doc__.split("\n\n")[0] + "\n\n" + "\n".join(l for l in __doc__.splitlines() if l.startswith("    python -m")),
        epilog="example: python -m fundus2ffa.report outputs/train/multiruns/<time> --curves curves/   (the module docstring: "
               "how runs become columns)")
    parser.add_argument("root", type=Path, help="a multirun folder (or any folder holding run folders)")
    parser.add_argument("--format", choices=FORMATS, default="markdown", help="the table's format")
    parser.add_argument("--stage", default="test", help="metrics.json section: test or val")
    parser.add_argument("--metrics", default=None, help="comma-separated metric names to keep, e.g. psnr,ssim")
    parser.add_argument("--output", type=Path, default=None, help="write here instead of stdout")
    parser.add_argument("--curves", type=Path, default=None,
                        help="also write the training curves (one line per configuration, from each run's history.csv) "
                             "as SVG files and an index.html into this folder")
    parser.add_argument(
        "--ignore", default=None,
        help="comma-separated config keys (fnmatch patterns) that do not make a new configuration, added to the "
             "defaults (seeds, paths, machine settings), e.g. trainer.max_epochs,data.image_size",
    )
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a folder; give a multirun folder such as outputs/train/multiruns/<time>")
    paths = find_runs(args.root)
    ignore = IGNORED + tuple(k.strip() for k in (args.ignore or "").split(",") if k.strip())
    runs = [run for run in (load_run(p, args.stage, ignore) for p in paths) if run is not None]
    if not runs:
        parser.error(
            f"no run with '{args.stage}' metrics under {args.root} ({len(paths)} metrics.json found); runs write "
            "metrics.json when they finish. Check the folder or --stage."
        )
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    text = render(summarise(runs, metrics), args.format, args.stage)
    if args.output:
        write_text(args.output, text)
    else:
        sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))
    if args.curves is not None:
        index = write_sweep_curves(runs, args.curves)
        print(f"curves: {index}" if index else f"curves: no run under {args.root} has a history.csv (written by training "
              "since fundus2ffa's callbacks.epoch_log)", file=sys.stderr)
    return text


if __name__ == "__main__":
    main()
