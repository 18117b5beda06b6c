"""host_allocator.keep_freed and .library (fundus2ffa/host_allocator.py, issue 24): memory freed in one training step is
reused in the next instead of being faulted in afresh. Each case runs in its own process: the setting holds
for the rest of a process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, cli
from fundus2ffa.host_allocator import find_library

SIZES_MB = (64, 16, 38, 8, 64)  # a step's large tensors: activations, a 38 MB weight gradient
PROBE = f"""
import resource, sys, torch
from fundus2ffa.host_allocator import configure_host_allocator
kept = configure_host_allocator({{"keep_freed": sys.argv[1] == "true"}})
def step():  # a training step's pattern: large tensors made and filled, then all freed
    tensors = [torch.ones(mb << 18) for mb in {SIZES_MB}]
    del tensors
for _ in range(6):  # the heap grows to the step's pattern over the first four steps
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print(kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 4)
"""


def _page_faults_per_step(keep_freed: str, preload: str | None = None) -> tuple[str, int]:
    env = {**os.environ, "LD_PRELOAD": preload} if preload else None
    out = subprocess.run([sys.executable, "-c", PROBE, keep_freed], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    kept, faults = out.stdout.split()
    return kept, int(faults)


def test_kept_freed_memory_is_reused_not_faulted_in_afresh():
    pages = sum(SIZES_MB) * 256  # 4 KB pages touched per step
    kept, faults = _page_faults_per_step("true")
    # measured: none in most steps once the heap has grown, now and then one 64 MB block's pages (8 % a step)
    assert kept == "True" and faults < 0.25 * pages, (faults, pages)
    # glibc's default: blocks of 32 MB or more are mapped afresh and zeroed page by page, the heap top trimmed
    kept, faults = _page_faults_per_step("false")
    assert kept == "False" and faults > 0.8 * pages, (faults, pages)  # measured 96 %


# host_allocator.library: the malloc a run was started with (LD_PRELOAD), checked by the run itself.
TCMALLOC = find_library("tcmalloc")
needs_tcmalloc = pytest.mark.skipif(TCMALLOC is None, reason="tcmalloc is not installed here (apt-get install "
                                    "libtcmalloc-minimal4; .ci/run installs it)")


def test_a_run_asking_for_a_malloc_it_was_not_started_with_says_how_to_start_it(tmp_path):
    result = cli("debug=smoke", "host_allocator.library=tcmalloc", f"paths.output_dir={tmp_path / 'run'}",
                 env={"LD_PRELOAD": ""})
    assert result.returncode != 0
    if TCMALLOC is None:
        assert "no tcmalloc library is installed here (Debian/Ubuntu: apt-get install libtcmalloc-minimal4" in result.stderr
    else:
        assert f"Start the command with LD_PRELOAD={TCMALLOC} in front" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()  # it stopped before training


@needs_tcmalloc
def test_a_run_started_with_tcmalloc_trains_on_it(tmp_path):
    path = subprocess.run([sys.executable, "-m", "fundus2ffa.host_allocator", "tcmalloc"], cwd=REPO, capture_output=True,
                          text=True, timeout=60).stdout.strip()
    assert path == TCMALLOC and Path(path).is_file()
    result = cli("debug=smoke", "host_allocator.library=tcmalloc", "host_allocator.keep_freed=true",
                 f"paths.output_dir={tmp_path / 'run'}", env={"LD_PRELOAD": path})
    assert result.returncode == 0, result.stderr[-3000:]
    logged = result.stdout + result.stderr
    assert "host allocator: tcmalloc malloc (LD_PRELOAD)" in logged
    assert "keep_freed=true is glibc malloc's setting; this process runs on tcmalloc" in logged
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


@needs_tcmalloc
def test_tcmalloc_reuses_freed_memory_without_keep_freed():
    kept, faults = _page_faults_per_step("false", preload=TCMALLOC)
    assert kept == "False" and faults < 0.25 * sum(SIZES_MB) * 256, faults
