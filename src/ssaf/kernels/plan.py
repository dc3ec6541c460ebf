"""The launch plan: warps, stages and block sizes of each fused kernel, for a shape, dtype and GPU.

``launch_plan(kernel, l_pad, d, dtype, capability)`` is the one place that decides how ``ssaf.kernels``
launches ``_fwd``, ``_bwd_rows`` and ``_bwd_keys`` (``_triton``); the launcher and
``scripts/kernel_resources.py`` (which compiles every supported shape for sm_80 and sm_90 on a CPU host
and reads registers, spills and shared memory) both read it, so what is measured is what runs.

The numbers come from those compiles (Triton 3.9, bf16, mask and dropout on; docs/BENCHMARKS.md has the
table): a program holds BLOCK_M = 16 queries (``tl.dot``'s least) and, in the forward, the whole key row
(the exact threshold needs it), so its registers grow with the row: the forward needs 8 warps at 512 keys
(4 spilled 24-568 bytes a thread; 16 warps cap a thread at 128 registers and spilled more). The head dim
is read in slices of BLOCK_D = 32 (a slice of K and V, not the whole tile, passes through registers; at
512 keys and D = 128 the whole tile spilled at any warp count). ``_bwd_rows`` walks the key row in
blocks of BLOCK_N keys (32-64), twice (sums, then dQ), and ``_bwd_keys`` holds BLOCK_N keys' dK and dV
accumulators (BLOCK_N, D) in fp32, so their registers depend on the head dim, not the row.

``num_stages`` is 1: Triton software-pipelines ``for`` loops over ``range``, and these kernels have none
(their key and query loops are ``while`` loops, the interpreter's requirement; the head-dim slices are
``static_range``, unrolled), so more stages have nothing to pipeline. ``dtype`` does not change the plan at
present: fp16 compiles to the same registers as bf16, and fp32 (exact ``ieee`` dots) is reported by the
script, not tuned. A shape the plan declines carries its reason in ``Launch.declined``, and
``ssaf.kernels.unsupported`` hands it to the torch path: GPUs before sm_80 (a T4's sm_75 spilled 640-2,448
bytes a thread at 128 keys, D 64, the shape tried; the plan is measured for sm_80 and sm_90, where every
supported bf16 and fp16 shape compiles without spilling, with the mask and dropout on or off (``maxnreg``
255: ptxas, left to choose, spilled 8-16 bytes on 18 of those rows: docs/BENCHMARKS.md).

Under Triton's interpreter (no GPU: ``capability`` None) the backward's key blocks are the smallest (16),
so the CPU tests, at 17-40 keys, cross block boundaries (head-dim slices: tests/unit/test_kernel_resources.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KERNELS = ("_fwd", "_bwd_rows", "_bwd_keys")
BLOCK_M = 16  # queries per program (tl.dot's least M)
BLOCK_D = 32  # head-dim slice read at a time (scores, P V, dO V^T)
MAXNREG = 255  # registers a thread may use on a GPU (see Launch.maxnreg); 255 x 8 warps x 32 fits every SM's 64K


def padded_keys(lk: int) -> int:
    """The key row as a kernel holds it: a power of two, at least 16 (``tl.dot``'s least)."""
    return max(16, 1 << (lk - 1).bit_length())


def padded_head_dim(d: int) -> int:
    """The head dim as the kernels hold it: a power of two, at least 32 (at 16 the forward's dot layout
    spilled 96-2,368 bytes a thread at 256-512 keys; 32, masked, did not)."""
    return max(32, 1 << (d - 1).bit_length())


@dataclass(frozen=True)
class Launch:
    """How one kernel is launched. ``block_n``: keys per block (``_fwd``: the whole padded row)."""

    num_warps: int
    num_stages: int
    block_m: int
    block_n: int
    block_d: int
    declined: str = ""  # why the kernel does not serve this shape ("" = it does)
    # ptxas's register cap (Triton's ``maxnreg``; None: ptxas chooses). Left to itself ptxas sometimes settles
    # on 72-168 registers a thread and spills 8-16 bytes to stay at a higher occupancy (18 of 1,152 bf16 rows
    # with the mask or dropout off); 255, the most a thread can address, lets it use what it needs instead.
    maxnreg: int | None = None


def launch_plan(kernel: str, l_pad: int, d: int, dtype: torch.dtype, capability: tuple[int, int] | None) -> Launch:
    """The launch of ``kernel`` for rows padded to ``l_pad`` keys (a power of two, 16-512), head dim ``d``,
    inputs of ``dtype``, on a device of compute ``capability`` (None: Triton's interpreter)."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; the kernels are {', '.join(KERNELS)}")
    d_pad = padded_head_dim(d)
    block_d = min(BLOCK_D, d_pad)
    if capability is not None and capability < (8, 0):
        why = (f"compute capability {capability[0]}.{capability[1]}: before sm_80 the kernels spill (sm_75, 128 keys, "
               "D 64: 640-2,448 bytes a thread, fp16 and bf16)")  # fmt: skip
        return Launch(num_warps=4, num_stages=1, block_m=BLOCK_M, block_n=min(64, l_pad), block_d=block_d, declined=why)
    maxnreg = None if capability is None else MAXNREG
    if kernel == "_fwd":
        warps = 4 if l_pad <= 256 else 8
        return Launch(warps, num_stages=1, block_m=BLOCK_M, block_n=l_pad, block_d=block_d, maxnreg=maxnreg)
    if kernel == "_bwd_rows":
        # ptxas is not monotone here: 64 keys a block spilled 8 bytes at D 64-128 (sm_80 1.5-entmax, sm_90
        # alpha-entmax), 32 keys spilled 8 bytes at D 32 (sm_80 alpha-entmax, capped at 80 registers)
        block_n = 16 if capability is None else min(64 if d_pad <= 32 else 32, l_pad)
        return Launch(num_warps=4, num_stages=1, block_m=BLOCK_M, block_n=block_n, block_d=block_d, maxnreg=maxnreg)
    block_n = 16 if l_pad <= 64 or capability is None else 32
    warps = 8 if d_pad > 64 else 4
    return Launch(warps, num_stages=1, block_m=BLOCK_M, block_n=block_n, block_d=d_pad, maxnreg=maxnreg)


def declined(l_pad: int, d: int, dtype: torch.dtype, capability: tuple[int, int] | None) -> str:
    """Why the plan declines the fused attention for this shape on this device ("" = it serves it)."""
    for kernel in KERNELS:
        reason = launch_plan(kernel, l_pad, d, dtype, capability).declined
        if reason:
            return f"{kernel}: {reason}"
    return ""
