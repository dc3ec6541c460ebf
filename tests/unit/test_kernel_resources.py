"""The fused kernels as a GPU's compiler sees them, on a CPU host: each kernel and transform compiles for
sm_80 and sm_90 with the launch plan (Triton's interpreter accepts programs the compiler rejects), without
spilling registers and within the architecture's shared memory; the plan is what the launcher uses and what
``unsupported`` consults; the occupancy arithmetic. The whole bf16 matrix (every head dim and key bucket) is
``slow`` (bf16 and fp16, each mask/dropout combination): ``pytest -m slow tests/unit/test_kernel_resources.py``
or ``scripts/kernel_resources.py --dtype bf16,fp16 --flags all --check``."""

from __future__ import annotations

import os
from itertools import product

import pytest
import torch

pytest.importorskip("triton", reason="the kernels need triton (dev extra)")

from ssaf import kernels as K
from ssaf.kernels import plan as P
from ssaf.kernels import resources as R

ARCHS = (80, 90)
CODES = ("sparsemax", "entmax15", "entmax_bisect")  # sparsegen_lin compiles to sparsemax's kernel
SUPPORTED = [(lp, d) for lp in (64, 128, 256, 512) for d in K.HEAD_DIMS]
FLAGS = [(True, True), (True, False), (False, True), (False, False)]  # key mask, dropout


FAST = [
    (kernel, arch, "bf16", 512, 128, transform, True, True)
    for kernel in P.KERNELS
    for arch in ARCHS
    for transform in CODES
]
# Where ptxas, left to choose, spilled 8 bytes a thread (an evaluation's forward: no dropout; sm_80, D 128):
# the plan's register cap (Launch.maxnreg) must keep it at 0.
SPILLED_UNCAPPED = [("_fwd", 80, "bf16", 128, 128, "entmax15", True, False)]


def _fits(row: R.Row) -> None:
    assert not row.declined, f"{row.kernel} sm_{row.arch} declined: {row.reason}"
    assert not row.problems(), f"{row.kernel} sm_{row.arch} {row.transform} L {row.l_pad} D {row.d}: {row.problems()}"
    assert row.registers > 0 and row.blocks_per_sm >= 1


@pytest.fixture(scope="module")
def largest() -> dict[tuple, R.Row]:
    """Each kernel x transform x arch compiled once (in one child process: these tests run interpreted)."""
    return dict(zip(FAST + SPILLED_UNCAPPED, R.compile_rows(FAST + SPILLED_UNCAPPED, jobs=2), strict=True))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("transform", CODES)
@pytest.mark.parametrize("kernel", P.KERNELS)
def test_each_kernel_compiles_for_the_gpu_at_the_largest_shape_without_spilling(kernel, transform, arch, largest):
    """512 keys, D = 128, bf16, mask and dropout on: the shape whose whole-tile design spilled."""
    _fits(largest[(kernel, arch, "bf16", 512, 128, transform, True, True)])


@pytest.mark.parametrize("spec", SPILLED_UNCAPPED, ids=lambda s: f"{s[0]}-sm{s[1]}-L{s[3]}-D{s[4]}-{s[5]}-no-dropout")
def test_the_register_cap_keeps_a_shape_ptxas_spilled_on_chip(spec, largest):
    _fits(largest[spec])


def test_compiling_for_a_gpu_leaves_the_interpreter_as_it_was():
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    from ssaf.kernels import _triton

    before, add = os.environ.get("TRITON_INTERPRET"), tl.core.tensor.__add__
    (row,) = R.compile_rows([("_bwd_keys", 80, "fp16", 64, 16, "sparsemax", False, False)])
    assert row.registers > 0 and row.spill_bytes == 0 and row.shared_bytes > 0 and not row.error, row.reason
    assert row.as_dict().keys() >= set(R.FIELDS)
    assert os.environ.get("TRITON_INTERPRET") == before and tl.core.tensor.__add__ is add
    if before == "1":
        assert isinstance(_triton._fwd, InterpretedFunction), "the tests' kernels still run interpreted"


@pytest.fixture(scope="module")
def matrix(request) -> dict[tuple, R.Row]:
    """Every supported bf16 shape compiled (one child process), only where ``-m slow`` selected it."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the full matrix: pytest -m slow (or scripts/kernel_resources.py --check)")
    specs = [
        (k, a, dtype, lp, d, t, mask, dropout)
        for k in P.KERNELS
        for t in CODES
        for lp, d in SUPPORTED
        for a in ARCHS
        for dtype in ("bf16", "fp16")
        for mask, dropout in FLAGS
    ]
    return dict(zip(specs, R.compile_rows(specs, jobs=2), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("mask,dropout", FLAGS, ids=[f"mask{int(m)}-dropout{int(p)}" for m, p in FLAGS])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("l_pad,d", SUPPORTED, ids=[f"L{lp}-D{d}" for lp, d in SUPPORTED])
@pytest.mark.parametrize("transform", CODES)
@pytest.mark.parametrize("kernel", P.KERNELS)
def test_every_supported_shape_fits(kernel, transform, l_pad, d, arch, dtype, mask, dropout, matrix):
    _fits(matrix[(kernel, arch, dtype, l_pad, d, transform, mask, dropout)])


@pytest.mark.parametrize("capability", [None, (8, 0), (9, 0)])
@pytest.mark.parametrize("dtype", K.DTYPES)
def test_the_plan_gives_every_supported_shape_a_launch_triton_accepts(dtype, capability):
    for kernel, (l_pad, d) in product(P.KERNELS, [(lp, d) for lp in (16, 32, 64, 128, 256, 512) for d in K.HEAD_DIMS]):
        launch = P.launch_plan(kernel, l_pad, d, dtype, capability)
        d_pad = P.padded_head_dim(d)
        assert not launch.declined
        assert launch.num_warps in (1, 2, 4, 8, 16) and launch.num_stages >= 1
        for block in (launch.block_m, launch.block_n, launch.block_d):
            assert block >= 16 and block & (block - 1) == 0, f"{kernel}: blocks are powers of two >= 16"
        assert d_pad % launch.block_d == 0 and launch.block_d <= d_pad, "head-dim slices tile the padded head dim"
        assert launch.block_n <= l_pad or kernel == "_bwd_keys"


@pytest.mark.parametrize("kernel", P.KERNELS)
def test_on_a_gpu_the_plan_caps_registers_within_the_register_file_and_the_interpreter_gets_no_cap(kernel):
    for l_pad, d in SUPPORTED:
        for capability in ((8, 0), (9, 0)):
            launch = P.launch_plan(kernel, l_pad, d, torch.bfloat16, capability)
            assert launch.maxnreg == P.MAXNREG and launch.maxnreg * launch.num_warps * 32 <= 65536
        assert P.launch_plan(kernel, l_pad, d, torch.bfloat16, None).maxnreg is None


def test_the_launcher_asks_the_plan_for_each_kernel_and_launches_what_it_says(monkeypatch):
    """A plan unlike the default (2 warps, 32 queries and keys a block) reaches every launch, and the
    kernels still give the torch path's result with it."""
    asked, launched = [], []

    def plan(kernel, l_pad, d, dtype, capability):
        asked.append((kernel, l_pad, d, dtype, capability))
        return P.Launch(2, 1, 32, l_pad if kernel == "_fwd" else 32, 32)

    monkeypatch.setattr(P, "launch_plan", plan)
    # the device's self-check (its own launches) counted as passed: only this call's launches are counted
    monkeypatch.setattr(K, "_declined", {})
    monkeypatch.setattr(K, "_checked", {("cpu", "sparsemax", torch.float32)})
    for name in ("fwd_call", "bwd_rows_call", "bwd_keys_call"):
        made = getattr(K, name)
        monkeypatch.setattr(K, name, lambda *a, _made=made, **kw: launched.append(_made(*a, **kw)) or launched[-1])
    q, k, v = (torch.randn(1, 2, 40, 32, requires_grad=True) for _ in range(3))
    out = K.sparse_attention(q, k, v, "sparsemax", backend="triton")
    out.sum().backward()
    expected = K.sparse_attention(q.double(), k.double(), v.double(), "sparsemax", backend="torch")
    torch.testing.assert_close(out.detach().double(), expected.detach(), atol=1e-5, rtol=1e-5)
    assert all(a[1:] == (64, 32, torch.float32, None) for a in asked) and {a[0] for a in asked} == set(P.KERNELS)
    assert len(launched) == 3
    for call in launched:
        assert call.kwargs["num_warps"] == 2 and call.kwargs["num_stages"] == 1 and call.kwargs["BLOCK_M"] == 32
        assert call.kwargs.get("BLOCK_N", 32) == 32 and call.kwargs.get("BLOCK_D", 32) == 32
        assert call.grid == (2, 2), "40 queries (or keys) in blocks of 32, for 1 x 2 heads"


def test_a_shape_the_plan_declines_goes_to_the_torch_path_with_the_reason(monkeypatch):
    from ssaf.transforms import _common

    def plan(kernel, l_pad, d, dtype, capability):
        return P.Launch(4, 1, 16, 16, 16, declined="no room at 40 keys" if kernel == "_bwd_keys" else "")

    monkeypatch.setattr(P, "launch_plan", plan)
    _common._warned.clear()
    q, k, v = (torch.randn(1, 2, 40, 32) for _ in range(3))
    assert "_bwd_keys: no room at 40 keys" in (K.unsupported(q, k, "sparsemax") or "")
    with pytest.warns(RuntimeWarning, match="no room at 40 keys"):
        got = K.sparse_attention(q, k, v, "sparsemax", backend="triton")
    assert torch.equal(got, K.sparse_attention(q, k, v, "sparsemax", backend="torch")), "the torch path itself"


@pytest.mark.parametrize("arch", sorted(R.ARCHS))
@pytest.mark.parametrize(
    "registers,num_warps,shared", [(80, 4, 13312), (255, 8, 50176), (32, 4, 0), (168, 16, 0), (32, 4, 41984)]
)
def test_blocks_per_sm_is_the_most_that_fit_every_limit(arch, registers, num_warps, shared):
    a = R.ARCHS[arch]
    n = R.blocks_per_sm(arch, registers, num_warps, shared)

    def fits(blocks):
        per_warp = -(-registers * 32 // 256) * 256
        return (
            blocks * num_warps * per_warp <= a.registers
            and blocks * (shared + a.reserved_per_block) <= a.shared_per_sm
            and blocks * num_warps * 32 <= a.threads
            and blocks <= a.blocks
        )

    assert fits(n) and not fits(n + 1)


@pytest.mark.parametrize("transform,params", [("sparsegen_lin", {"lam": -2.0}), ("entmax15", {})])
def test_head_dim_slices_and_key_blocks_give_the_float64_result(transform, params):
    """D = 64: the forward and ``_bwd_rows`` read the head dim in two slices of 32 (the plan's BLOCK_D); 40
    keys, 7 of one row padded: the backward's key blocks (16 under the interpreter) end mid-row. The fp32
    kernel against the float64 torch path, outputs and the gradients of q, k, v."""
    g = torch.Generator().manual_seed(3)
    q, k, v, do = (torch.randn(2, 2, 40, 64, generator=g, dtype=torch.float64) for _ in range(4))
    kpm = torch.ones(2, 40, dtype=torch.bool)
    kpm[0, 33:] = False
    assert P.launch_plan("_fwd", 64, 64, torch.float32, None).block_d == 32

    def run(dtype, backend):
        leaves = [t.to(dtype).requires_grad_() for t in (q, k, v)]
        out = K.sparse_attention(*leaves, transform, key_padding_mask=kpm, backend=backend, **params)
        out.backward(do.to(dtype))
        return [out.detach(), *(t.grad for t in leaves)]

    for name, got, expected in zip(["out", "dq", "dk", "dv"], run(torch.float32, "triton"), run(torch.float64, "torch"),
                                   strict=True):  # fmt: skip
        torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=1e-4, msg=name)


def test_before_sm80_the_plan_declines_and_the_table_says_so_without_compiling():
    """sm_75 spilled at every shape tried (docs/BENCHMARKS.md): declined, with the reason, for each kernel."""
    assert "compute capability 7.5" in P.declined(128, 64, torch.float16, (7, 5))
    for kernel in P.KERNELS:
        row = R.compile_row(kernel, 75, "bf16", 128, 64, "sparsemax")  # returns before compiling anything
        assert row.declined and "7.5" in row.reason and row.registers == 0 and not row.problems()
