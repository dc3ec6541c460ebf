"""ssaf.allocator: with freed blocks kept, re-allocating sizes seen before costs no page faults."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ssaf import allocator

# Attention-sized tensors of mixed sizes, two alive at a time. glibc's default hands some of them back to
# the OS depending on its adaptive threshold's history (~600 faults per round in most runs on 2026-12-01,
# none in some), so both arms start from the threshold pinned at its initial 128 KB (every block handed
# back, as the default does for any size above its threshold at the time) and one then keeps freed blocks.
ROUNDS = r"""
import ctypes, resource, sys, torch
from ssaf.allocator import M_MMAP_THRESHOLD, keep_freed_memory
assert ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 128 << 10) == 1  # every block handed back ...
if sys.argv[1] == "keep":
    assert keep_freed_memory()  # ... unless this undoes it

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def one_round():
    alive = []
    for mb in (6, 24, 6, 12):
        t = torch.empty(mb << 18)
        t.fill_(1.0)
        alive.append(t)
        if len(alive) > 2:
            alive.pop(0)

for _ in range(10):  # the heap grows to its steady size (once, at a round that depends on the layout)
    one_round()
per_round = []
for _ in range(10):
    before = faults()
    one_round()
    per_round.append(faults() - before)
print(sorted(per_round)[5])  # the median: a late one-time growth of the heap moves one round only
"""


def _faults_per_round(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_blocks_are_reused_without_page_faults_where_handed_back_blocks_fault_in_again():
    handed_back, kept = _faults_per_round("handed_back"), _faults_per_round("keep")
    pages_of_6_mb = (6 << 20) // 4096
    assert kept < 0.1 * pages_of_6_mb, kept
    # The same rounds fault in every block when blocks go back to the OS, so the test can fail.
    assert handed_back > pages_of_6_mb, handed_back


def test_without_glibc_nothing_changes_and_it_says_so(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
