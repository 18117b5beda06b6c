"""The few-shot table: rows by init, columns by k, mean +- sd over seeds."""

import csv

import numpy as np

from fundus2ffa.transfer.report import write_tables


def test_table_rows_init_columns_k(tmp_path):
    rows = []
    for init, base in (("random", 0.2), ("pretrained", 0.6)):
        for k in ("1", "5", "all"):
            for seed, delta in enumerate((0.0, 0.1)):
                rows.append({"study": "s", "task": "segmentation", "init": init, "mode": "finetune", "k": k, "seed": seed,
                             "n_train": 1, "n_test": 4, "dice": base + delta + (0.1 if k == "all" else 0.0)})
    path = tmp_path / "results.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = write_tables([tmp_path], tmp_path / "table.md")
    lines = text.splitlines()
    assert "| init | k=1 | k=5 | all |" in lines
    sd = np.std([0.6, 0.7], ddof=1)
    assert lines.index(f"| pretrained | 0.650 ± {sd:.3f} (2) | 0.650 ± {sd:.3f} (2) | 0.750 ± {sd:.3f} (2) |") < \
        lines.index(f"| random | 0.250 ± {sd:.3f} (2) | 0.250 ± {sd:.3f} (2) | 0.350 ± {sd:.3f} (2) |")
    assert (tmp_path / "table.md").read_text() == text
