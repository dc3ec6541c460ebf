"""What a GPU's compiler makes of the fused kernels, found on a machine without a GPU.

``compile_row(kernel, arch, dtype, l_pad, d, transform, ...)`` compiles one kernel through Triton's own
compiler for ``GPUTarget("cuda", arch, 32)`` with the arguments the launcher passes (built by the
launcher's own functions on ``meta`` tensors, so the compiled specialisation is the launched one) and the
launch plan's warps, stages and blocks, then reads the cubin's registers, stack (spilled) bytes and static
shared memory with the Triton wheel's ``cuobjdump --dump-resource-usage``. Blocks per SM follow from the
architecture's register file, shared memory and thread limits (``ARCHS``).

Used by ``scripts/kernel_resources.py`` (the table) and ``tests/unit/test_kernel_resources.py`` (the pins).
``compile_rows`` compiles in a child process where this one runs Triton's interpreter (``TRITON_INTERPRET=1``,
which the tests set without a GPU): Triton decides at import whether ``@triton.jit`` functions, its own
``tl.sum`` and ``tl.max`` included, are compiled or interpreted, and compiling through interpreted ones
fails on some kernels and leaves ``triton.language`` patched for the rest of the process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from ssaf.kernels import plan as P


@dataclass(frozen=True)
class Arch:
    """One compute capability's per-SM limits (CUDA C++ Programming Guide, "Compute Capabilities")."""

    registers: int = 65536  # 32-bit registers per SM (and per block)
    threads: int = 2048  # resident threads per SM
    blocks: int = 32  # resident blocks per SM
    shared_per_sm: int = 228 * 1024  # shared memory per SM (bytes)
    shared_per_block: int = 227 * 1024  # the most one block may ask for (opt-in), bytes
    reserved_per_block: int = 1024  # shared memory the system keeps per resident block (sm_80 on)


ARCHS: dict[int, Arch] = {
    75: Arch(threads=1024, blocks=16, shared_per_sm=64 * 1024, shared_per_block=64 * 1024, reserved_per_block=0),
    80: Arch(shared_per_sm=164 * 1024, shared_per_block=163 * 1024),
    86: Arch(threads=1536, blocks=16, shared_per_sm=100 * 1024, shared_per_block=99 * 1024),
    89: Arch(threads=1536, blocks=24, shared_per_sm=100 * 1024, shared_per_block=99 * 1024),
    90: Arch(),
    100: Arch(),
    120: Arch(threads=1536, blocks=32, shared_per_sm=128 * 1024, shared_per_block=99 * 1024),
}
FIELDS = ("kernel", "arch", "dtype", "l_pad", "d", "transform", "num_warps", "num_stages", "block_m", "block_n",
          "registers", "spill_bytes", "shared_bytes", "blocks_per_sm")  # fmt: skip
DTYPE_NAMES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class Row:
    """One compiled (or declined) kernel: the columns of ``scripts/kernel_resources.py``."""

    kernel: str
    arch: int
    dtype: str
    l_pad: int
    d: int
    transform: str
    num_warps: int = 0
    num_stages: int = 0
    block_m: int = 0
    block_n: int = 0
    registers: int = 0
    spill_bytes: int = 0
    shared_bytes: int = 0
    blocks_per_sm: int = 0
    has_kpm: bool = True
    dropout: bool = True
    declined: bool = False
    reason: str = ""  # why the plan declines the shape, or the compiler's error
    error: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def problems(self) -> list[str]:
        """What makes this row unfit for a GPU (spills, shared memory over the limit, a compile error)."""
        if self.declined:
            return []
        if self.error:
            return [f"does not compile: {self.reason}"]
        out = []
        if self.spill_bytes:
            out.append(f"spills {self.spill_bytes} bytes per thread")
        limit = ARCHS[self.arch].shared_per_block
        if self.shared_bytes > limit:
            out.append(f"needs {self.shared_bytes} bytes of shared memory (sm_{self.arch} allows {limit})")
        if self.blocks_per_sm < 1:
            out.append("no block fits on an SM")
        return out


def blocks_per_sm(arch: int, registers: int, num_warps: int, shared_bytes: int) -> int:
    """Resident blocks per SM, the least of what registers, shared memory, threads and blocks allow.

    Registers are allocated per warp in units of 256 (each thread's count rounded up to a multiple of 8);
    each resident block also holds ``reserved_per_block`` bytes of shared memory beside its own.
    """
    a = ARCHS[arch]
    per_warp = math.ceil(max(registers, 1) * 32 / 256) * 256
    by_registers = (a.registers // per_warp) // num_warps
    per_block = shared_bytes + a.reserved_per_block
    by_shared = a.shared_per_sm // per_block if per_block else a.blocks
    by_threads = a.threads // (32 * num_warps)
    return max(0, min(by_registers, by_shared, by_threads, a.blocks))


def cuobjdump() -> str:
    """The ``cuobjdump`` shipped inside Triton's wheel (no CUDA toolkit needed)."""
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: this Triton wheel does not ship cuobjdump")
    return path


def resource_usage(cubin: bytes) -> dict[str, int]:
    """REG, STACK, SHARED, LOCAL of the one function in a cubin, as ``cuobjdump --dump-resource-usage`` says."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run(
            [cuobjdump(), "--dump-resource-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
    found = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", text))
    if "REG" not in found:
        raise RuntimeError(f"cuobjdump printed no resource usage:\n{text}")
    return {name: int(value) for name, value in found.items()}


def _meta_inputs(
    dtype: torch.dtype, l_pad: int, d: int, has_kpm: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """q, k, v (B, H, L, D) and a key mask on the ``meta`` device: shapes and strides, no memory."""
    b, h = 2, 4
    q, k, v = (torch.empty(b, h, l_pad, d, dtype=dtype, device="meta") for _ in range(3))
    kpm = torch.empty(b, l_pad, dtype=torch.int8, device="meta") if has_kpm else None
    return q, k, v, kpm


def launch_call(
    kernel: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kpm: torch.Tensor | None, transform: str,
    scale: float, dropout_p: float, seed: int, launch: P.Launch,
) -> Any:  # fmt: skip
    """The launcher's own ``Call`` for ``kernel``, with its buffers allocated like q (``meta``: no memory)."""
    from ssaf import kernels as K

    b, h, lq, _ = q.shape
    param = torch.empty(h, dtype=torch.float32, device=q.device)
    stats = torch.empty((4, b * h * lq), dtype=torch.float32, device=q.device)
    rows = torch.empty((2, b * h * lq), dtype=torch.float32, device=q.device)
    common = (transform, scale, dropout_p, seed, launch)
    if kernel == "_fwd":
        return K.fwd_call(q, k, v, torch.empty_like(q), kpm, param, stats, *common)
    if kernel == "_bwd_rows":
        return K.bwd_rows_call(q, k, v, torch.empty_like(q), torch.empty_like(q), kpm, param, stats, rows, *common)
    if kernel == "_bwd_keys":
        return K.bwd_keys_call(
            q, k, v, torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), kpm, param, stats, rows, *common
        )
    raise ValueError(f"unknown kernel {kernel!r}; the kernels are {', '.join(P.KERNELS)}")


def compile_row(
    kernel: str, arch: int, dtype: str, l_pad: int, d: int, transform: str, *, has_kpm: bool = True,
    dropout: bool = True,
) -> Row:  # fmt: skip
    """Compile ``kernel`` (``_fwd``, ``_bwd_rows``, ``_bwd_keys``) for sm_``arch`` as the launcher would
    launch it for rows of ``l_pad`` keys and head dim ``d``, and read what it uses."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    row = Row(kernel, arch, dtype, l_pad, d, transform, has_kpm=has_kpm, dropout=dropout)
    torch_dtype = DTYPE_NAMES[dtype]
    launch = P.launch_plan(kernel, l_pad, d, torch_dtype, (arch // 10, arch % 10))
    if launch.declined:
        row.declined, row.reason = True, launch.declined
        return row
    if _interpreted():
        raise RuntimeError("this process runs Triton's interpreter (TRITON_INTERPRET=1): compile with compile_rows, "
                           "which compiles in a child process")  # fmt: skip
    row.num_warps, row.num_stages, row.block_m, row.block_n = (
        launch.num_warps, launch.num_stages, launch.block_m, launch.block_n,
    )  # fmt: skip
    q, k, v, kpm = _meta_inputs(torch_dtype, l_pad, d, has_kpm)
    call = launch_call(kernel, q, k, v, kpm, transform, d**-0.5, 0.1 if dropout else 0.0, 12345, launch)
    from ssaf.kernels import _triton

    fn = getattr(_triton, kernel)
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    kwargs = dict(call.kwargs)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*call.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    try:
        compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)
    except Exception as e:  # a compiler error is a finding, reported in the row
        row.error, row.reason = True, f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200]}"
        return row
    usage = resource_usage(compiled.asm["cubin"])
    row.registers = usage["REG"]
    row.spill_bytes = usage.get("STACK", 0) + usage.get("LOCAL", 0)
    row.shared_bytes = int(compiled.metadata.shared) + usage.get("SHARED", 0)
    row.blocks_per_sm = blocks_per_sm(arch, row.registers, row.num_warps, row.shared_bytes)
    return row


Spec = tuple[str, int, str, int, int, str, bool, bool]  # kernel, arch, dtype, l_pad, d, transform, has_kpm, dropout


def _interpreted() -> bool:
    """Whether this process's Triton interprets ``@triton.jit`` functions (then it cannot compile them)."""
    from triton.runtime.jit import JITFunction

    from ssaf.kernels import _triton

    return not isinstance(_triton._fwd, JITFunction)


def compile_rows(specs: list[Spec], jobs: int = 1) -> list[Row]:
    """``compile_row`` for each spec, in ``jobs`` processes; in a child process (one, or ``jobs``) when this
    one interprets Triton (see the module's docstring)."""
    if _interpreted():
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        done = subprocess.run(
            [sys.executable, "-m", "ssaf.kernels.resources", str(jobs)],
            input=json.dumps(specs), capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"compiling in a child process failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return [Row(**row) for row in json.loads(done.stdout.strip().splitlines()[-1])]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            return list(pool.map(_compile_spec, specs))
    return [_compile_spec(spec) for spec in specs]


def _compile_spec(spec: Spec) -> Row:
    kernel, arch, dtype, l_pad, d, transform, has_kpm, dropout = spec
    return compile_row(kernel, arch, dtype, l_pad, d, transform, has_kpm=has_kpm, dropout=dropout)


if __name__ == "__main__":  # the child of compile_rows: specs (JSON) on stdin, rows (JSON) on stdout
    found = compile_rows([tuple(spec) for spec in json.loads(sys.stdin.read())], jobs=int(sys.argv[1]))
    print(json.dumps([row.as_dict() for row in found]))
