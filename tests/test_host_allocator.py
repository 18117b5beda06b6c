"""host_allocator.keep_freed (fundus2ffa/host_allocator.py, issue 24): freed memory is reused, not faulted in
afresh. Each case runs in its own process: the setting holds for the rest of a process."""

import subprocess
import sys

from conftest import REPO

PROBE = """
import resource, sys, torch
from fundus2ffa.host_allocator import configure_host_allocator
kept = configure_host_allocator({"keep_freed": sys.argv[1] == "true"})
def page_faults_of_a_64_mb_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 << 20)  # 64 MB, filled, then freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
page_faults_of_a_64_mb_tensor()
print(kept, min(page_faults_of_a_64_mb_tensor() for _ in range(3)))
"""


def _probe(setting: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, setting], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    kept, faults = out.stdout.split()
    return kept, int(faults)


def test_kept_freed_memory_is_reused_without_page_faults():
    pages = (64 << 20) // 4096
    kept, faults = _probe("true")
    assert kept == "True" and faults < pages // 20, faults
    for setting in ("false",):  # glibc's default: a block this large is mapped afresh and zeroed page by page
        kept, faults = _probe(setting)
        assert kept == "False" and faults > pages // 2, (setting, faults)
