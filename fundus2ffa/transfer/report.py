"""The few-shot table: rows pretrained / random / ImageNet, then the trivial baseline (``baseline: ...``,
transfer/baselines.py), columns k, cells mean +- standard deviation over seeds (n runs), one table per
(study, mode, metric).

    python -m fundus2ffa.transfer.report outputs/transfer/runs/<time> [more run dirs or results.csv] [--out table.md]
"""

import argparse
import csv
from collections import defaultdict
from pathlib import Path

from fundus2ffa.config import HelpFormatter
from fundus2ffa.errors import DataError
from fundus2ffa.transfer.fewshot import summarise
from fundus2ffa.writers import write_text

INIT_ORDER = ("pretrained", "random", "imagenet")
NOT_METRICS = {"study", "task", "init", "mode", "k", "seed", "n_train", "n_test", "num_queries", "tophat_px", "threshold", "train_dice"}
PRIMARY = {"classification": ("balanced_accuracy", "auroc"), "segmentation": ("dice",),
           "retrieval": ("recall@1", "recall@5", "recall@10", "median_rank")}


def read_rows(paths) -> list[dict]:
    rows = []
    for path in paths:
        path = Path(path)
        path = path / "results.csv" if path.is_dir() else path
        if not path.is_file():
            raise DataError(f"{path}: no results.csv; give a transfer run directory (outputs/transfer/runs/<time>) or its results.csv")
        with path.open(newline="") as handle:
            rows += list(csv.DictReader(handle))
    if not rows:
        raise DataError(f"no result rows in {', '.join(map(str, paths))}")
    return rows


def _k_key(k: str):
    return (1, 0) if k in ("all", "zero_shot") else (0, int(k))


def tables(rows: list[dict]) -> str:
    """Markdown few-shot tables from result rows."""
    groups = defaultdict(list)
    for row in rows:
        groups[(row["study"], row["task"], row["mode"])].append(row)
    parts = []
    for (study, task, mode), members in groups.items():
        metrics = [m for m in PRIMARY.get(task, ()) if m in members[0]] or [m for m in members[0] if m not in NOT_METRICS]
        ks = sorted({r["k"] for r in members}, key=_k_key)
        found = list(dict.fromkeys(r["init"] for r in members))
        inits = [i for i in INIT_ORDER if i in found] + [i for i in found if i not in INIT_ORDER]  # baselines last
        n_test = sorted({r.get("n_test", "") for r in members})
        for metric in metrics:
            parts.append(f"### {study}: {task}, {mode}, {metric} (test n = {'/'.join(n_test)}; mean ± sd over seeds, n runs)\n")
            parts.append("| init | " + " | ".join(f"k={k}" if k not in ("all", "zero_shot") else k for k in ks) + " |")
            parts.append("|---|" + "---|" * len(ks))
            for init in inits:
                cells = []
                for k in ks:
                    values = [float(r[metric]) for r in members if r["init"] == init and r["k"] == k and r.get(metric) not in (None, "")]
                    mean, sd, n = summarise(values)
                    cells.append("-" if n == 0 else f"{mean:.3f} ± {sd:.3f} ({n})")
                parts.append(f"| {init} | " + " | ".join(cells) + " |")
            parts.append("")
    return "\n".join(parts)


def write_tables(paths, out: Path | None = None) -> str:
    text = tables(read_rows(paths))
    if out is not None:
        write_text(Path(out), text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fundus2ffa.transfer.report", description=__doc__, formatter_class=HelpFormatter,
                                     epilog="example: python -m fundus2ffa.transfer.report outputs/transfer/runs/<time> --out table.md")
    parser.add_argument("runs", nargs="+", help="transfer run directories or results.csv files")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    print(write_tables(args.runs, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
