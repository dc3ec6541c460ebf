"""What the fused kernels use on a GPU, found without one: registers, spilled bytes, shared memory, blocks/SM.

Compiles every kernel x transform x dtype x head dim x key bucket x (mask, dropout) with the launch plan
(``ssaf.kernels.plan``) for each ``--arch`` through Triton's own compiler, and reads the cubins with the
Triton wheel's ``cuobjdump`` (see ``ssaf.kernels.resources``). A shape the plan declines is a row with
``declined: true`` and its reason, not compiled.

    python scripts/kernel_resources.py                       # sm_80 and sm_90, the whole matrix
    python scripts/kernel_resources.py --arch 90 --dtype bf16 --d 64 --l-pad 512 --json rows.json
    python scripts/kernel_resources.py --check               # exit 1 if a bf16/fp16 row spills or overflows

Sparsemax and sparsegen-lin compile to the same kernel (sparsegen-lin's lam is a runtime scale), so a
sparsegen_lin row repeats sparsemax's compile. Compiles are cached by Triton (~/.triton/cache): a first
full run takes long on a small CPU host (1-10 s a compile), later runs seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import product
from pathlib import Path

from ssaf.kernels import HEAD_DIMS, TRANSFORMS
from ssaf.kernels import plan as P
from ssaf.kernels import resources as R

L_PADS = (64, 128, 256, 512)  # the key buckets: rows of <= 64 keys compile as 64 (the most a bucket holds)
SAME_KERNEL = {"sparsegen_lin": "sparsemax"}  # transforms that compile to another's kernel


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _names(text: str, allowed: tuple[str, ...] | list[str], what: str) -> list[str]:
    names = [x for x in text.split(",") if x]
    for name in names:
        if name not in allowed:
            raise SystemExit(f"kernel_resources.py: --{what} {name!r} is not one of {', '.join(allowed)}")
    return names


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="80,90", help=f"compute capabilities, of {', '.join(map(str, R.ARCHS))}")
    ap.add_argument("--kernel", default=",".join(P.KERNELS))
    ap.add_argument("--transform", default=",".join(TRANSFORMS))
    ap.add_argument("--dtype", default=",".join(R.DTYPE_NAMES))
    ap.add_argument("--d", default=",".join(map(str, HEAD_DIMS)), help="head dims")
    ap.add_argument("--l-pad", default=",".join(map(str, L_PADS)), help="key buckets (padded row lengths)")
    ap.add_argument("--flags", default="all", choices=["all", "on"], help="mask/dropout: all four, or both on")
    ap.add_argument("--jobs", type=int, default=1, help="compiles in parallel (processes)")
    ap.add_argument("--json", type=Path, help="also write the rows to this file")
    ap.add_argument("--check", action="store_true", help="exit 1 when a bf16/fp16 row spills or overflows")
    worst_help = "one row per kernel, arch, dtype, l_pad, d: the most of each resource over transforms and flags"
    ap.add_argument("--worst", action="store_true", help=worst_help)
    args = ap.parse_args(argv)
    args.arch = _ints(args.arch)
    for arch in args.arch:
        if arch not in R.ARCHS:
            ap.error(f"--arch {arch}: known are {', '.join(map(str, R.ARCHS))}")
    args.kernel = _names(args.kernel, P.KERNELS, "kernel")
    args.transform = _names(args.transform, TRANSFORMS, "transform")
    args.dtype = _names(args.dtype, list(R.DTYPE_NAMES), "dtype")
    args.d = _ints(args.d)
    args.l_pad = _ints(args.l_pad)
    for d in args.d:
        if d not in HEAD_DIMS:
            ap.error(f"--d {d}: the kernels serve head dims {', '.join(map(str, HEAD_DIMS))}")
    for length in args.l_pad:
        if length < 16 or length & (length - 1) or length > max(L_PADS):
            ap.error(f"--l-pad {length}: a power of two from 16 to {max(L_PADS)}")
    return args


def rows(args: argparse.Namespace) -> list[R.Row]:
    """Compile each distinct kernel once; a transform that shares another's kernel reuses its row."""
    flags = [(True, True)] if args.flags == "on" else [(True, True), (True, False), (False, True), (False, False)]
    wanted = list(product(args.kernel, args.arch, args.dtype, args.l_pad, args.d, args.transform, flags))
    specs = sorted({(k, a, t, lp, d, SAME_KERNEL.get(tr, tr), *f) for k, a, t, lp, d, tr, f in wanted})
    compiled = dict(zip(specs, R.compile_rows(specs, jobs=args.jobs), strict=True))
    out = []
    for k, a, t, lp, d, tr, f in wanted:
        row = R.Row(**compiled[(k, a, t, lp, d, SAME_KERNEL.get(tr, tr), *f)].as_dict())
        row.transform = tr
        out.append(row)
    return out


def table(found: list[R.Row]) -> str:
    """A markdown table: the issue's columns, with mask/dropout and what is wrong with a row."""
    head = [*R.FIELDS, "mask", "dropout", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in found:
        d = r.as_dict()
        cells = [str(d[f]) for f in R.FIELDS]
        note = f"declined: {r.reason}" if r.declined else "; ".join(r.problems())
        if r.declined:
            cells[6:] = ["-"] * (len(R.FIELDS) - 6)
        lines.append("| " + " | ".join([*cells, "y" if r.has_kpm else "n", "y" if r.dropout else "n", note]) + " |")
    return "\n".join(lines)


def worst(found: list[R.Row]) -> list[R.Row]:
    """One row per (kernel, arch, dtype, l_pad, d): the largest use over transforms and mask/dropout."""
    groups: dict[tuple, list[R.Row]] = {}
    for r in found:
        groups.setdefault((r.kernel, r.arch, r.dtype, r.l_pad, r.d), []).append(r)
    out = []
    for rows_ in groups.values():
        compiled = [r for r in rows_ if not r.declined and not r.error] or rows_
        w = R.Row(**compiled[0].as_dict())
        w.transform = "all" if len({r.transform for r in rows_}) > 1 else w.transform
        w.registers = max(r.registers for r in compiled)
        w.spill_bytes = max(r.spill_bytes for r in compiled)
        w.shared_bytes = max(r.shared_bytes for r in compiled)
        w.blocks_per_sm = min(r.blocks_per_sm for r in compiled)
        w.has_kpm, w.dropout = any(r.has_kpm for r in rows_), any(r.dropout for r in rows_)
        bad = [r for r in rows_ if r.declined or r.error]
        if bad:
            w.declined, w.error, w.reason = bad[0].declined, bad[0].error, f"{bad[0].transform}: {bad[0].reason}"
        out.append(w)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    start = time.time()
    found = rows(args)
    print(table(worst(found) if args.worst else found))
    bad = [r for r in found if r.dtype != "fp32" and r.problems()]
    declined = sum(r.declined for r in found)
    print(f"\n{len(found)} rows ({declined} declined) in {time.time() - start:.0f} s; "
          f"{len(bad)} bf16/fp16 rows with a problem", file=sys.stderr)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps([r.as_dict() for r in found], indent=1) + "\n")
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    sys.exit(main())
