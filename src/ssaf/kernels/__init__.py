"""Fused, exact sparse attention: ``sparse_attention(q, k, v, transform, ...) -> out``.

On CUDA with Triton the whole attention (scores, the exact threshold per row, the probabilities, dropout,
P.V) runs in one kernel per block of queries, and the backward in two, without writing the (L x L)
probabilities to global memory (see ``_triton``); elsewhere, and for rows longer than ``MAX_KEYS``, the
same function runs on ``ssaf.transforms`` (materialising the probabilities), with a one-line warning
where a fused kernel was asked for. The results are the same (tested, float64 oracle, under Triton's
interpreter on CPU: ``TRITON_INTERPRET=1``). Warps and block sizes per kernel, shape, dtype and GPU come
from ``plan.launch_plan``; ``scripts/kernel_resources.py`` compiles them for sm_80 / sm_90 without a GPU.

Fail-safe on a real device: the first fused call of each transform and dtype on a device first runs
``self_check`` (the kernel against the float64 torch path, forward and backward, with a padded and a fully
masked row), and each new specialisation's backward kernels are compiled before its forward runs
(``compile_backward``: a backward that failed to compile inside autograd would end the step). If that check,
or compiling or launching the kernel, fails, ``backend="auto"`` warns once
(device, capability, shape, the error) and declines the kernel on that device for the rest of the
process, and the torch path serves the call; ``backend="triton"`` raises ``KernelError`` with the same
message. ``dispatch`` returns which path served a call, for the run's record.

Transforms, named as in ``ssaf.transforms``: the functions whose ``ssaf.registry`` records name a kernel
(:data:`TRANSFORMS`), each served by the algorithm its records name, with the parameter they read. Softmax
has no kernel here: in a model it runs on torch's ``scaled_dot_product_attention`` where nothing needs the
probabilities, and on the eager torch path where something does (``ssaf.attention.route``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ssaf import registry
from ssaf import transforms as T
from ssaf.kernels import plan
from ssaf.transforms._common import warn_once

TRANSFORMS = registry.kernel_functions()  # the maths functions with a fused kernel
BACKENDS = ("auto", "triton", "torch")  # the attn.backend values that reach this module (see dispatch)
MAX_KEYS = 512  # a block of queries holds its whole key row on chip
HEAD_DIMS = (16, 32, 64, 128)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
TOL = 1e-5  # alpha-entmax's row-sum tolerance: fp32 arithmetic in the kernel, its powers through exp2(log2)
N_ITER = 100  # alpha-entmax's search steps at most (it stops at TOL, usually within 10)
# The self-check's tolerance on outputs and gradients (atol = rtol) against float64: three times the gpu
# tests' (bf16 2e-2; fp32 1e-4 there, 1e-3 here), still far below a miscompiled kernel's errors (order one,
# or NaN). Not yet measured on a GPU: the first GPU session runs test_the_self_check_passes_on_cuda.
CHECK_TOL = {torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 6e-2}

# Process-wide, per device: why the fused kernel is declined there, and the (device, transform, dtype)
# whose self-check passed. A decline lasts for the process (a new run starts clean).
_declined: dict[str, str] = {}
_checked: set[tuple[str, str, torch.dtype]] = set()
# The backward specialisations compiled ahead (``compile_backward``): device, transform, dtype, key bucket,
# head dim, key mask or not, dropout or not.
_backward_ready: set[tuple[str, str, torch.dtype, int, int, bool, bool]] = set()


class KernelError(RuntimeError):
    """The fused kernel failed or disagreed with the torch path on this device (``backend="triton"``)."""


@dataclass(frozen=True)
class Route:
    """Which path served one call: ``fused`` or ``torch``, and why the torch path where the fused kernel was
    asked for (``reason``; None when it served, or when ``backend="torch"`` asked for the torch path)."""

    path: str
    reason: str | None = None


def interpreted() -> bool:
    """Triton's interpreter (numpy, on CPU): correctness tests without a GPU; says nothing about speed."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def unsupported(q: Tensor, k: Tensor, transform: str) -> str | None:
    """Why the fused kernel cannot serve these inputs (None: it can)."""
    if registry.kernel(transform) is None:
        return f"transform {transform!r} (the kernel serves {', '.join(registry.kernel_functions())})"
    if not triton_available():
        return "triton is not installed"
    if not (q.is_cuda or (interpreted() and q.device.type == "cpu")):
        return f"tensors on {q.device} (the kernel runs on CUDA)"
    if (declined := _declined.get(str(q.device))) is not None:
        return declined
    if k.shape[-2] > MAX_KEYS:
        return f"rows of {k.shape[-2]} keys (the kernel holds at most {MAX_KEYS})"
    if q.shape[-1] not in HEAD_DIMS:
        return f"head dim {q.shape[-1]} (the kernel serves {', '.join(map(str, HEAD_DIMS))})"
    if q.dtype not in DTYPES:
        return f"dtype {q.dtype}"
    why = plan.declined(plan.padded_keys(k.shape[-2]), q.shape[-1], q.dtype, _capability(q))
    return f"this shape on this device ({why})" if why else None


def _per_head(value: Tensor | float | None, name: str, default: float, heads: int, like: Tensor) -> Tensor:
    """A parameter as a (H,) fp32 tensor (a float, or per head: (H,) or (1, H, 1, 1))."""
    if value is None:
        value = default
    if not isinstance(value, Tensor):
        return torch.full((heads,), float(value), dtype=torch.float32, device=like.device)
    if value.numel() != heads and value.numel() != 1:
        raise ValueError(f"{name} of shape {tuple(value.shape)}: give a float or one value per head ({heads})")
    return value.reshape(-1).expand(heads).to(device=like.device, dtype=torch.float32)


def dispatch(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    transform: str,
    *,
    lam: Tensor | float | None = None,
    alpha: Tensor | float | None = None,
    key_padding_mask: Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: str = "auto",
) -> tuple[Tensor, Route]:
    """:func:`sparse_attention`, also returning the :class:`Route` that served the call."""
    if registry.kernel(transform) is None:
        raise ValueError(f"unknown transform {transform!r}; the kernels serve {', '.join(registry.kernel_functions())}")
    if q.dim() != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q, k, v must be (B, H, Lq, D), (B, H, Lk, D), (B, H, Lk, D); got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    b, h, _, d = q.shape
    if key_padding_mask is not None and (
        key_padding_mask.dtype != torch.bool or key_padding_mask.shape != (b, k.shape[2])
    ):
        raise ValueError(f"key_padding_mask must be a (B, Lk) = ({b}, {k.shape[2]}) bool tensor (True = a real token)")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    scale = d**-0.5 if scale is None else float(scale)
    takes = registry.function_param(transform)
    given = {"lam": lam, "alpha": alpha}.get(takes.name) if takes is not None else None
    if takes is not None and given is not None and not isinstance(given, Tensor):
        takes.check(given)  # a tensor is per head: learned, valid by construction (checking it would sync)
    if transform == "sparsegen_lin" and lam is not None:
        param = 1.0 / (1.0 - _per_head(lam, "lam", 0.0, h, q))  # the scale 1 / (1 - lam), with autograd
    elif transform == "entmax_bisect":
        param = _per_head(alpha, "alpha", 1.5, h, q)
    else:
        param = torch.ones(h, dtype=torch.float32, device=q.device)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return reference(q, k, v, transform, param, key_padding_mask, scale, dropout_p), Route("torch")
    why = unsupported(q, k, transform)
    if why is not None:
        if backend == "triton":
            warn_once(f"kernels: {why}", f"ssaf.kernels: the fused kernel does not serve {why}; the torch path runs")
        return reference(q, k, v, transform, param, key_padding_mask, scale, dropout_p), Route("torch", why)
    failure, cause = None, None
    if (str(q.device), transform, q.dtype) not in _checked:
        failure = self_check(q, k, transform, param, scale)
        if failure is None:
            _checked.add((str(q.device), transform, q.dtype))
    if failure is None:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) if dropout_p > 0 else 0  # CPU generator: no sync
        try:
            if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, param)):
                compile_backward(q, k, key_padding_mask, transform, dropout_p)
            out = _SparseAttention.apply(q, k, v, param, key_padding_mask, transform, scale, dropout_p, seed)
            return out, Route("fused")
        except torch.cuda.OutOfMemoryError:
            raise  # the torch path needs more memory, not a broken kernel: the caller's to handle
        except Exception as e:  # a compile error, resources the card lacks, a launch failure: any of Triton's
            failure, cause = f"{_shape(q, k)}: failed with {_error(e)}", e
    if backend == "triton":
        message = f"ssaf.kernels: the fused {transform} kernel on {_where(q.device)}, {failure}"
        raise KernelError(
            f"{message}; attn.backend=auto falls back to the torch path there, attn.backend=torch always uses it"
        ) from cause
    return _decline(q, k, v, transform, param, key_padding_mask, scale, dropout_p, failure), Route(
        "torch", _declined[str(q.device)]
    )


def sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    transform: str,
    *,
    lam: Tensor | float | None = None,
    alpha: Tensor | float | None = None,
    key_padding_mask: Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: str = "auto",
) -> Tensor:
    """Attention with a sparse transform of the scores: ``transform(q k^T * scale) v``, (B, H, Lq, D) out.

    Args:
        q, k, v: (B, H, Lq, D), (B, H, Lk, D), (B, H, Lk, D); fp32, bf16 or fp16 (thresholds in fp32).
        transform: a function of :data:`TRANSFORMS` (``sparsemax``, ``sparsegen_lin``, ...).
        lam: sparsegen-lin's lam < 1, a float or one per head ((H,) or (1, H, 1, 1)); gets a gradient.
        alpha: alpha-entmax's alpha > 1, likewise.
        key_padding_mask: (B, Lk) bool, True = a real token (may be attended).
        scale: the score scale (default 1 / sqrt(D)).
        dropout_p: attention dropout on the probabilities (training); the same distribution as
            ``torch.nn.functional.dropout`` on them, different random numbers.
        backend: as ``attn.backend``, of the paths this function has: ``auto`` (fused where it serves the
            inputs, else torch; on a device where the kernel fails or disagrees with the torch path, a
            warning and torch), ``triton`` (fused, else a warning and torch; ``KernelError`` where it fails
            or disagrees), ``torch``.

    A fully masked row gives zeros; a row with a NaN or +inf score gives NaN (as ``ssaf.transforms``).
    """
    return dispatch(
        q, k, v, transform, lam=lam, alpha=alpha, key_padding_mask=key_padding_mask, scale=scale,
        dropout_p=dropout_p, backend=backend,
    )[0]  # fmt: skip


def _where(device: torch.device) -> str:
    """The device in words: its name and compute capability (the interpreter on CPU)."""
    if device.type != "cuda":
        return f"{device} (Triton's interpreter)"
    major, minor = torch.cuda.get_device_capability(device)
    return f"{device} ({torch.cuda.get_device_name(device)}, compute capability {major}.{minor})"


def _shape(q: Tensor, k: Tensor) -> str:
    return f"q {tuple(q.shape)}, {k.shape[-2]} keys, {str(q.dtype).removeprefix('torch.')}"


def _error(e: BaseException) -> str:
    """An exception on one line (Triton's compile errors run to pages): its type and first line."""
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    return f"{type(e).__name__}: {first[:300]}"


def _decline(
    q: Tensor, k: Tensor, v: Tensor, transform: str, param: Tensor, key_padding_mask: Tensor | None, scale: float,
    dropout_p: float, failure: str,
) -> Tensor:  # fmt: skip
    """The fused kernel failed on this device (``auto``): a warning, once; the kernel declined on the device
    for the rest of the process (``unsupported`` says so from now on); this call on the torch path."""
    where = _where(q.device)
    _declined[str(q.device)] = f"the fused kernel is declined on {where} ({transform}, {failure})"
    warn_once(
        f"kernels: declined {q.device}",
        f"ssaf.kernels: the fused {transform} kernel on {where}, {failure}; the torch path runs on this device "
        "from now on",
    )
    return reference(q, k, v, transform, param, key_padding_mask, scale, dropout_p)


def self_check(q: Tensor, k: Tensor, transform: str, param: Tensor, scale: float) -> str | None:
    """Whether the fused kernel computes the torch path's attention on ``q``'s device: None if so, else what
    failed or disagreed (one line).

    The problem: for the transform, dtype, head dim and key bucket of the call (q (B, H, Lq, D), k (..., Lk,
    D)), one head's parameter, two sequences of up to 16 queries and Lk keys (random, seeded, from a private
    generator: the caller's random stream is untouched), the first padded from the middle, the second fully
    masked (zeros), dropout off. The kernel's output and the gradients of q, k, v (and lam / alpha) of a
    random upstream gradient must equal the float64 torch path's on the same (dtype-rounded) inputs within
    ``CHECK_TOL``.
    Autocast is off inside it: the reference is float64.
    """
    lk, d = k.shape[-2], q.shape[-1]
    wrt = 3 if registry.function_param(transform) is None else 4  # q, k, v (and lam / alpha)
    try:
        # The call may come from an evaluation (no_grad, inference mode: every tensor made in it, even a
        # clone, is one autograd refuses) or a mixed-precision step (autocast).
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(q.device.type, enabled=False):
            g = torch.Generator().manual_seed(0)
            n = (min(q.shape[-2], plan.BLOCK_M), lk, lk)  # one block of queries
            exact = [torch.randn(2, 1, m, d, generator=g, dtype=torch.float64) for m in n]
            upstream = torch.randn(exact[0].shape, generator=g, dtype=torch.float64).to(q.dtype)
            kpm = torch.ones(2, lk, dtype=torch.bool)
            kpm[0, max(1, lk // 2) :] = False  # padding
            kpm[1] = False  # a fully masked sequence
            rounded = [t.to(q.dtype) for t in exact]  # the inputs the kernel sees, and the reference in float64
            rounded.append(param.detach()[:1].clone())  # one head's parameter (fp32)
            fused = [t.to(q.device).requires_grad_(i < wrt) for i, t in enumerate(rounded)]
            out = _SparseAttention.apply(*fused, kpm.to(q.device), transform, scale, 0.0, 0)
            got = [out, *torch.autograd.grad(out, fused[:wrt], upstream.to(q.device))]
            oracle = [t.double().requires_grad_(i < wrt) for i, t in enumerate(rounded)]
            ref = reference(oracle[0], oracle[1], oracle[2], transform, oracle[3], kpm, scale, 0.0)
            expected = [ref, *torch.autograd.grad(ref, oracle[:wrt], upstream.double())]
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as e:
        return f"{_shape(q, k)}: the self-check failed with {_error(e)}"
    tol = CHECK_TOL[q.dtype]
    for name, fast, exact64 in zip(("output", "dq", "dk", "dv", "d lam / alpha"), got, expected, strict=False):
        a = fast.detach().double().cpu()
        if not torch.allclose(a, exact64, atol=tol, rtol=tol):
            err = (a - exact64).abs().nan_to_num(float("inf")).max().item()
            return (
                f"{_shape(q, k)}: the self-check's {name} is {err:.3g} from the float64 torch path (tolerance {tol:g})"
            )
    return None


def reference(
    q: Tensor, k: Tensor, v: Tensor, transform: str, param: Tensor, key_padding_mask: Tensor | None,
    scale: float, dropout_p: float,
) -> Tensor:  # fmt: skip
    """The same attention on ``ssaf.transforms``, materialising the probabilities (the fallback and oracle)."""
    s = torch.matmul(q, k.transpose(-1, -2)) * scale  # (B, H, Lq, Lk)
    mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    per_head = param.view(1, -1, 1, 1)
    if transform == "sparsemax":
        p = T.sparsemax(s, mask=mask)
    elif transform == "sparsegen_lin":
        p = T.sparsegen_lin(s, 1.0 - 1.0 / per_head, mask=mask, validate=False)
    elif transform == "entmax15":
        p = T.entmax15(s, mask=mask)
    else:
        p = T.entmax_bisect(s, per_head.to(s.dtype), mask=mask, validate=False)
    p = torch.nn.functional.dropout(p, p=dropout_p, training=dropout_p > 0)
    return torch.matmul(p.to(v.dtype), v)


def _code(transform: str) -> int:
    """The kernels' code for the algorithm the registry names for ``transform`` (``registry.KERNEL_ALGORITHMS``)."""
    from ssaf.kernels import _triton

    codes = {"sparsemax": _triton.SPARSEMAX, "entmax15": _triton.ENTMAX15, "bisect": _triton.BISECT}
    algorithm = registry.kernel(transform)
    if algorithm is None:
        raise ValueError(f"no fused kernel serves {transform!r}")
    return codes[algorithm]


def _capability(t: Tensor) -> tuple[int, int] | None:
    """The device's compute capability (None under the interpreter, on CPU)."""
    return torch.cuda.get_device_capability(t.device) if t.is_cuda else None


@dataclass(frozen=True)
class Call:
    """One kernel launch: its grid, positional arguments and keywords (constexprs, warps, stages, register cap)."""

    grid: tuple[int, int]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def _common(q: Tensor, k: Tensor, v: Tensor, o: Tensor, kpm: Tensor | None, transform: str, dropout_p: float,
            launch: plan.Launch) -> tuple[list[Any], dict[str, Any]]:  # fmt: skip
    """The strides (q, k, v, out or dO, key mask) and the constexprs every kernel takes."""
    strides = [*q.stride(), *k.stride(), *v.stride(), *o.stride()] + ([*kpm.stride()] if kpm is not None else [0, 0])
    meta = {
        "TRANSFORM": _code(transform),
        "HAS_KPM": kpm is not None,
        "DROPOUT": dropout_p > 0,
        "IEEE": q.dtype == torch.float32,  # fp32 scores exactly, not in TF32
        "BLOCK_M": launch.block_m,
        "D_PAD": plan.padded_head_dim(q.shape[-1]),
        "num_warps": launch.num_warps,
        "num_stages": launch.num_stages,
    }
    if launch.maxnreg is not None:  # a GPU launch (the interpreter takes no compiler options)
        meta["maxnreg"] = launch.maxnreg
    return strides, meta


def fwd_call(
    q: Tensor, k: Tensor, v: Tensor, out: Tensor, kpm: Tensor | None, param: Tensor, stats: Tensor, transform: str,
    scale: float, dropout_p: float, seed: int, launch: plan.Launch,
) -> Call:  # fmt: skip
    """``_fwd``'s launch (the launcher's, and what ``resources`` compiles)."""
    from ssaf.kernels import _triton

    b, h, lq, d = q.shape
    lk = k.shape[2]
    strides, meta = _common(q, k, v, out, kpm, transform, dropout_p, launch)
    l_pad = plan.padded_keys(lk)
    code = meta["TRANSFORM"]
    n_iter = l_pad + 2 if code == _triton.SPARSEMAX else (200 if code == _triton.ENTMAX15 else N_ITER)
    args = (
        q, k, v, out, kpm if kpm is not None else q, param, stats[0], stats[1], stats[2], stats[3], *strides,
        h, lq, lk, d, scale, dropout_p, seed, TOL, n_iter,
    )  # fmt: skip
    return Call((-(-lq // launch.block_m), b * h), args, {**meta, "L_PAD": l_pad, "BLOCK_D": launch.block_d})


def bwd_rows_call(
    q: Tensor, k: Tensor, v: Tensor, do: Tensor, dq: Tensor, kpm: Tensor | None, param: Tensor, stats: Tensor,
    rows: Tensor, transform: str, scale: float, dropout_p: float, seed: int, launch: plan.Launch,
) -> Call:  # fmt: skip
    """``_bwd_rows``' launch: dQ, delta and d(param) per row."""
    b, h, lq, d = q.shape
    lk = k.shape[2]
    strides, meta = _common(q, k, v, do, kpm, transform, dropout_p, launch)
    args = (
        q, k, v, do, dq, kpm if kpm is not None else q, param, stats[0], stats[1], stats[2], rows[0], rows[1],
        *strides, h, lq, lk, d, scale, dropout_p, seed,
    )  # fmt: skip
    return Call((-(-lq // launch.block_m), b * h), args, {**meta, "BLOCK_N": launch.block_n, "BLOCK_D": launch.block_d})


def bwd_keys_call(
    q: Tensor, k: Tensor, v: Tensor, do: Tensor, dk: Tensor, dv: Tensor, kpm: Tensor | None, param: Tensor,
    stats: Tensor, rows: Tensor, transform: str, scale: float, dropout_p: float, seed: int, launch: plan.Launch,
) -> Call:  # fmt: skip
    """``_bwd_keys``' launch: dK and dV per block of keys."""
    b, h, lq, d = q.shape
    lk = k.shape[2]
    strides, meta = _common(q, k, v, do, kpm, transform, dropout_p, launch)
    args = (
        q, k, v, do, dk, dv, kpm if kpm is not None else q, param, stats[0], stats[1], stats[2], rows[0],
        *strides, h, lq, lk, d, scale, dropout_p, seed,
    )  # fmt: skip
    return Call((-(-lk // launch.block_n), b * h), args, {**meta, "BLOCK_N": launch.block_n})


def _plan(kernel: str, q: Tensor, lk: int) -> plan.Launch:
    return plan.launch_plan(kernel, plan.padded_keys(lk), q.shape[-1], q.dtype, _capability(q))


def compile_backward(q: Tensor, k: Tensor, kpm: Tensor | None, transform: str, dropout_p: float) -> None:
    """Compile (and load on the device) the two backward kernels this call's backward will launch, now.

    Triton compiles a kernel at its first launch, and the backward's first launch is inside autograd, where a
    compile error or a card without the shared memory it asks for would end the step (and the run) with no
    way back to the torch path. Compiled here, inside ``dispatch``'s fail-safe, the same failure declines
    the kernel before the forward runs. The self-check compiles one specialisation (its shape, mask on,
    dropout off); each key bucket, head dim, mask and dropout is another, so each is compiled once, here.
    On CPU (Triton's interpreter) nothing compiles.
    """
    capability = _capability(q)
    lk = k.shape[2]
    ready = (str(q.device), transform, q.dtype, plan.padded_keys(lk), q.shape[-1], kpm is not None, dropout_p > 0)
    if capability is None or ready in _backward_ready:
        return
    from ssaf.kernels import _triton

    b, h, lq, _ = q.shape
    q, k = q.contiguous(), k.contiguous()
    kpm_i = None if kpm is None else kpm.to(torch.int8).contiguous()
    param = torch.ones(h, dtype=torch.float32, device=q.device)
    stats = torch.empty((4, b * h * lq), dtype=torch.float32, device=q.device)
    rows = torch.empty((2, b * h * lq), dtype=torch.float32, device=q.device)
    common = (transform, 1.0, dropout_p, 0)
    # Launched with the call's own tensors and sizes (nothing is written: warmup compiles, it does not run),
    # so the specialisation (dtypes, divisibility of sizes and strides) is the one the backward launches.
    rows_call = bwd_rows_call(q, k, k, q, q, kpm_i, param, stats, rows, *common, _plan("_bwd_rows", q, lk))
    keys_call = bwd_keys_call(q, k, k, q, k, k, kpm_i, param, stats, rows, *common, _plan("_bwd_keys", q, lk))
    calls = ((_triton._bwd_rows, rows_call), (_triton._bwd_keys, keys_call))
    for fn, call in calls:
        compiled = fn.warmup(*call.args, grid=call.grid, **call.kwargs)
        init = getattr(compiled, "_init_handles", None)  # loads it: raises where the card lacks its shared memory
        if init is not None:
            init()
    _backward_ready.add(ready)


class _SparseAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, param, kpm, transform, scale, dropout_p, seed):
        from ssaf.kernels import _triton

        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        b, h, lq, _ = q.shape
        out = torch.empty_like(q)
        stats = torch.empty((4, b * h * lq), dtype=torch.float32, device=q.device)  # m, tau, z, err per row
        kpm_i = None if kpm is None else kpm.to(torch.int8).contiguous()
        call = fwd_call(
            q, k, v, out, kpm_i, param.contiguous(), stats, transform, scale, dropout_p, seed,
            _plan("_fwd", q, k.shape[2]),
        )  # fmt: skip
        _triton._fwd[call.grid](*call.args, **call.kwargs)
        if transform == "entmax_bisect":
            from ssaf.transforms.entmax import warn_unconverged

            warn_unconverged(float(param[0]) if bool((param == param[0]).all()) else param, stats[3].amax(), TOL)
        ctx.save_for_backward(q, k, v, param, stats, kpm_i)
        ctx.transform, ctx.scale, ctx.dropout_p, ctx.seed = transform, scale, dropout_p, seed
        return out

    @staticmethod
    def backward(ctx, do):
        from ssaf.kernels import _triton

        q, k, v, param, stats, kpm_i = ctx.saved_tensors
        do = do.contiguous()
        b, h, lq, _ = q.shape
        lk = k.shape[2]
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        rows = torch.empty((2, b * h * lq), dtype=torch.float32, device=q.device)  # delta, d(param) per row
        common = (ctx.transform, ctx.scale, ctx.dropout_p, ctx.seed)
        call = bwd_rows_call(q, k, v, do, dq, kpm_i, param, stats, rows, *common, _plan("_bwd_rows", q, lk))
        _triton._bwd_rows[call.grid](*call.args, **call.kwargs)
        call = bwd_keys_call(q, k, v, do, dk, dv, kpm_i, param, stats, rows, *common, _plan("_bwd_keys", q, lk))
        _triton._bwd_keys[call.grid](*call.args, **call.kwargs)
        dparam = None
        if ctx.needs_input_grad[3] and registry.function_param(ctx.transform) is not None:
            dparam = rows[1].view(b, h, lq).sum(dim=(0, 2))
        return dq, dk, dv, dparam, None, None, None, None, None
