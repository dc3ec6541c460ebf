"""What an attention transform is, once: the table the rest of ssaf looks transforms up in.

Its readers, by the transform's config name (``attn.transform``): the config schema
(``ssaf.settings.AttentionSpec`` checks the name, the parameter's range and the backends; ``ssaf.config``
warns about a parameter the transform does not read), the transformers adapter (``ssaf.attention``: the
maths function, the parameter, the learned-parameter class), the pipeline (the run record's
``AttentionInfo``, which the comparison report reads back; the report labels its parameter axis from
here) and the dashboard (which runs log learned values).
By maths function name: the fused kernels (``ssaf.kernels``: which functions have a kernel, and which
algorithm serves each). The parameters' ranges (:data:`PARAMS`) are checked here for every caller, the
maths functions and the learned modules included, so each bound and its message is written once.

Adding a transform is one :class:`Transform` entry in :data:`TRANSFORMS`, with its maths in
``ssaf.transforms`` (tests/integration/test_one_record.py adds one and trains with it through
``attn.transform=<name>``; a ``conf/attn/<name>.yaml`` only adds the ``attn=<name>`` shorthand).
Pure Python on purpose: the config schema and the dashboard import it without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The fused kernels' algorithms (ssaf.kernels, one code each in its _triton): sparsemax's threshold by Michelot
# iterations (sparsemax, and sparsegen-lin on scaled scores), 1.5-entmax's exact sort, alpha-entmax's bisection.
KERNEL_ALGORITHMS = ("sparsemax", "entmax15", "bisect")


@dataclass(frozen=True)
class Range:
    """An open interval ``low < value < high`` of finite numbers (an infinite bound: no bound on that side)."""

    low: float = -math.inf
    high: float = math.inf

    def __contains__(self, value: float) -> bool:
        return math.isfinite(value) and self.low < value < self.high

    def __str__(self) -> str:
        if self.low == -math.inf:
            return f"< {self.high:g}"
        if self.high == math.inf:
            return f"> {self.low:g}"
        return f"in the open interval ({self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class Param:
    """A transform parameter: a field of the attention spec (``attn.<name>``), its valid range, and how a
    learned one is parameterised.

    Attributes:
        name: the spec field (``lam``, ``alpha``); also the maths functions' and the kernels' keyword.
        description: one line, for messages and tables.
        valid: the maths' domain.
        hint: what to use at or beyond the bounds (ends the range error).
        learned_class: the ``nn.Module`` in ``ssaf.transforms`` holding one learned value per head.
        learned_start: where the learned module can start, within ``valid`` (None: anywhere in ``valid``).
        learned_hint: what to use outside ``learned_start``.
    """

    name: str
    description: str
    valid: Range
    hint: str
    learned_class: str
    learned_start: Range | None = None
    learned_hint: str = ""

    def __post_init__(self) -> None:
        start = self.learned_start
        if start is not None and not self.valid.low <= start.low < start.high <= self.valid.high:
            raise ValueError(f"param {self.name}: learned_start {start} must lie within {self.valid}")

    def check(self, value: float, key: str | None = None) -> None:
        """A ValueError naming the parameter (as ``key``, default its name), the range and the value when
        ``value`` is not a number in ``valid`` (for a tensor, ``ssaf.transforms`` passes its extremes)."""
        key = self._number(value, key)
        if value not in self.valid:
            raise ValueError(f"{key} must be finite and {self.valid}, got {value}; {self.hint}")

    def check_start(self, value: float, key: str | None = None) -> None:
        """Where a learned module (``learned_class``) can start from: ``learned_start`` (within ``valid``),
        else anywhere :meth:`check` accepts."""
        if self.learned_start is None:
            return self.check(value, key)
        self._number(value, key)
        if value not in self.learned_start:
            learners = ", ".join(t.name for t in TRANSFORMS.values() if t.learned and t.param == self.name)
            raise ValueError(
                f"attn={learners} starts from {self.name} {self.learned_start}, got {value}; {self.learned_hint}"
            )
        return None

    @property
    def learned_attribute(self) -> str:
        """The attribute of each self-attention module holding a learned one (saved with the model)."""
        return f"ssaf_{self.name}"

    def _number(self, value: object, key: str | None) -> str:
        key = key or self.name
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number, got {value!r}")
        return key


# LearnedAlpha keeps alpha in (LEARNED_ALPHA_FLOOR, 2]: above 1, where entmax is defined, with
# 1 / (alpha - 1) <= 100 (see ssaf.transforms.learned).
LEARNED_ALPHA_FLOOR = 1.01

PARAMS: dict[str, Param] = {
    p.name: p
    for p in (
        Param(
            "lam",
            "sparsegen-lin's sparsity: sparsemax(z / (1 - lam))",
            Range(high=1.0),
            "lam = 0 is sparsemax, lam -> 1 approaches one-hot, lam -> -inf uniform",
            "LearnedLambda",
        ),
        Param(
            "alpha",
            "alpha-entmax's alpha (1: softmax, 1.5: entmax15, 2: sparsemax)",
            Range(low=1.0),
            "use attn=softmax for alpha = 1 (entmax15 is alpha = 1.5, sparsemax alpha = 2)",
            "LearnedAlpha",
            learned_start=Range(LEARNED_ALPHA_FLOOR, 2.0),
            learned_hint="use attn=sparsemax for alpha = 2 or attn=softmax for alpha = 1",
        ),
    )
}

# attn.backend: which path serves the attention calls (ssaf.settings.AttentionSpec.backend says what each does).
# "auto" is always valid; the others only for a transform whose record lists them.
BACKENDS = ("auto", "torch", "compiled", "triton")
# What a record's ``backends`` may list: the paths ``BACKENDS`` names (torch: eager, materialising the
# probabilities, which every transform has; compiled: torch.compile'd whole rows; triton: the fused kernel of
# ssaf.kernels) and sdpa, torch's scaled_dot_product_attention, the fast path "auto" takes for softmax.
PATHS = ("torch", "compiled", "triton", "sdpa")


def backend_of(compiled: bool, kernel: str) -> str:
    """The ``attn.backend`` of the two settings it replaced, ``attn.compiled`` and ``attn.kernel`` (a model config
    or a metrics.json written by an older ssaf). kernel=triton asked for the fused kernel whatever compiled
    said; compiled=true otherwise asked for the compiled path; kernel's auto and torch are backends of the
    same name (an unknown kernel passes through, for the backend's own check to name)."""
    return "compiled" if compiled and kernel != "triton" else kernel


@dataclass(frozen=True)
class Transform:
    """One attention transform.

    Attributes:
        name: its config name (``attn.transform``).
        description: one line, for messages and tables.
        function: the maths, by its name in ``ssaf.transforms`` (and in ``ssaf.kernels``).
        param: the spec field it reads, a key of :data:`PARAMS`, or None.
        learned: one value of ``param`` per head and layer, learned (``PARAMS[param].learned_class``),
            starting at the spec's value.
        kernel: the fused kernel's algorithm for ``function`` (one of :data:`KERNEL_ALGORITHMS`), or None: no kernel.
        backends: the paths that serve it (see ``PATHS``); "torch" always, since only the eager path
            returns the probabilities (attention statistics, ``output_attentions``); "triton" exactly where
            it names a kernel.
    """

    name: str
    description: str
    function: str
    param: str | None = None
    learned: bool = False
    kernel: str | None = None
    backends: tuple[str, ...] = ("torch",)

    def __post_init__(self) -> None:
        # A record that contradicts itself fails where it is written, not in a run.
        if self.param is not None and self.param not in PARAMS:
            raise ValueError(f"transform {self.name}: param {self.param!r} is not one of {', '.join(PARAMS)}")
        if self.learned and self.param is None:
            raise ValueError(f"transform {self.name}: learned=True needs a param to learn")
        if self.kernel is not None and self.kernel not in KERNEL_ALGORITHMS:
            raise ValueError(
                f"transform {self.name}: kernel {self.kernel!r} is not one of {', '.join(KERNEL_ALGORITHMS)}"
            )
        unknown = [b for b in self.backends if b not in PATHS]
        if unknown or "torch" not in self.backends:
            raise ValueError(
                f"transform {self.name!r}: backends {self.backends} must include 'torch' and name only "
                f"{', '.join(PATHS)}"
            )
        if ("triton" in self.backends) != (self.kernel is not None):
            raise ValueError(f"transform {self.name}: list the 'triton' backend exactly when it names a kernel")

    @property
    def parameter(self) -> Param | None:
        """The record of ``param``."""
        return None if self.param is None else PARAMS[self.param]

    @property
    def learned_class(self) -> str | None:
        """The learned module's class name in ``ssaf.transforms`` (None when the transform learns nothing)."""
        p = self.parameter
        return p.learned_class if self.learned and p is not None else None

    @property
    def learned_attribute(self) -> str | None:
        """The attribute of each self-attention module holding the learned parameter (saved with the model)."""
        p = self.parameter
        return p.learned_attribute if self.learned and p is not None else None


TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform("softmax", "dense softmax (the baseline)", "softmax", backends=("torch", "sdpa")),
        Transform(
            "sparsemax",
            "sparsemax (lam = 0)",
            "sparsemax",
            kernel="sparsemax",
            backends=("torch", "compiled", "triton"),
        ),
        Transform(
            "sparse",
            "SSAF sparsegen-lin with a fixed lam < 1",
            "sparsegen_lin",
            param="lam",
            kernel="sparsemax",
            backends=("torch", "compiled", "triton"),
        ),
        Transform("entmax15", "exact 1.5-entmax", "entmax15", kernel="entmax15", backends=("torch", "triton")),
        Transform(
            "entmax",
            "alpha-entmax with a fixed alpha > 1",
            "entmax_bisect",
            param="alpha",
            kernel="bisect",
            backends=("torch", "triton"),
        ),
        Transform(
            "learned_alpha",
            "alpha-entmax with one learned alpha in (1, 2] per head, initialised at alpha",
            "entmax_bisect",
            param="alpha",
            learned=True,
            kernel="bisect",
            backends=("torch", "triton"),
        ),
        Transform(
            "learned_lam",
            "sparsegen-lin with one learned lam < 1 per head, initialised at lam",
            "sparsegen_lin",
            param="lam",
            learned=True,
            kernel="sparsemax",
            backends=("torch", "compiled", "triton"),
        ),
    )
}


def transform(name: str) -> Transform:
    """The record of ``name``; a ValueError listing the valid names otherwise."""
    try:
        return TRANSFORMS[name]
    except KeyError:
        raise ValueError(f"unknown attention transform {name!r}; valid transforms: {', '.join(TRANSFORMS)}") from None


def check_param(name: str, value: float, t: Transform) -> None:
    """The spec field ``attn.<name>`` against its range (every spec carries every parameter, so each is
    checked whatever ``t`` reads), and against the learned start when ``t`` learns it."""
    p = PARAMS[name]
    if t.learned and t.param == name:
        p.check_start(value, f"attn.{name}")
    else:
        p.check(value, f"attn.{name}")


def kernel(function: str) -> str | None:
    """The fused kernel's algorithm for the maths function ``function`` (None: no kernel serves it)."""
    found = {t.kernel for t in TRANSFORMS.values() if t.function == function}
    if len(found) > 1:
        raise ValueError(f"the transforms of {function} disagree on its kernel: {sorted(map(str, found))}")
    return found.pop() if found else None


def kernel_functions() -> tuple[str, ...]:
    """The maths functions a fused kernel serves, in the table's order."""
    return tuple(dict.fromkeys(t.function for t in TRANSFORMS.values() if t.kernel is not None))


def function_param(function: str) -> Param | None:
    """The parameter the maths function ``function`` takes (None: none), as its transforms name it."""
    found = {t.param for t in TRANSFORMS.values() if t.function == function}
    if len(found) > 1:
        raise ValueError(f"the transforms of {function} disagree on its parameter: {sorted(map(str, found))}")
    name = found.pop() if found else None
    return None if name is None else PARAMS[name]
