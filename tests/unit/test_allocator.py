"""ssaf.allocator: with freed blocks kept, re-allocating sizes seen before costs no page faults."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ssaf import allocator

# Attention-sized tensors of mixed sizes, two alive at a time: glibc's default hands some of them back to
# the OS and faults them in again on every round (~600 faults per round measured on 2026-12-01).
ROUNDS = r"""
import resource, sys, torch
from ssaf.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()

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

for _ in range(3):
    one_round()
before = faults()
for _ in range(10):
    one_round()
print((faults() - before) / 10)
"""


def _faults_per_round(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_blocks_are_reused_without_page_faults_where_the_default_faults_them_in_again():
    default, kept = _faults_per_round("system"), _faults_per_round("keep")
    pages_of_6_mb = (6 << 20) // 4096
    assert kept < 0.1 * pages_of_6_mb, kept
    # The pattern is one the default allocator handles badly, so the test can fail.
    assert default > pages_of_6_mb / 4, default


def test_without_glibc_nothing_changes_and_it_says_so(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
