"""The prediction bench (python -m fundus2ffa.inference.bench) says which case it is on while it works: the
real command, two tiny cases."""

import os
import subprocess
import sys

from conftest import REPO


def test_the_bench_says_each_case_before_it_runs_and_tables_it_after():
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "fundus2ffa.inference.bench", "--families", "pix2pix", "--sizes", "64x64", "--modes", "resize",
         "native", "--ngf", "4", "--repeats", "0", "--threads", "1", "--resize", "64"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    cases = [line for line in result.stderr.splitlines() if line.startswith("case ")]
    assert [line.split(" ...")[0] for line in cases] == ["case 1/2: pix2pix 64x64 resize", "case 2/2: pix2pix 64x64 native"]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| pix2pix |")]
    assert [row.split("|")[3].strip() for row in rows] == ["resize", "native"]
    assert all("failed" not in row for row in rows)
