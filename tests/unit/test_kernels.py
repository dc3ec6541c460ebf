"""ssaf.kernels: the fused Triton attention against the torch path (float64), run by Triton's interpreter on
CPU (TRITON_INTERPRET=1, set by conftest without a GPU): outputs and the gradients of q, k, v, lam and alpha,
padding and fully masked rows, NaN rows, dropout (its mask and its gradient), the fallbacks, and the model
adapter's route. The same checks at real shapes and in bf16 are the ``gpu`` tests and scripts/check_device.py."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("triton", reason="the kernels need triton (dev extra)")

from ssaf import kernels as K

CASES = {
    "sparsemax": ("sparsemax", {}),
    "sparsegen_lin(-2)": ("sparsegen_lin", {"lam": -2.0}),
    "sparsegen_lin per head": ("sparsegen_lin", {"lam": [-3.0, 0.5]}),
    "entmax15": ("entmax15", {}),
    "entmax_bisect(1.3)": ("entmax_bisect", {"alpha": 1.3}),
    "entmax_bisect per head": ("entmax_bisect", {"alpha": [1.2, 1.8]}),
}
SHAPES = {"pad + empty row, L 24, D 16": (2, 2, 24, 24, 16, "pad"), "L 40, D 32": (1, 2, 40, 40, 32, None),
          "Lq 17 != Lk 33": (2, 2, 17, 33, 16, "pad")}  # fmt: skip


def inputs(b, h, lq, lk, d, pad, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(b, h, n, d, generator=g, dtype=torch.float64) * 1.5 for n in (lq, lk))
    v = torch.randn(b, h, lk, d, generator=g, dtype=torch.float64)
    kpm = None
    if pad:
        kpm = torch.ones(b, lk, dtype=torch.bool)
        kpm[0, lk - 7 :] = False  # padding
        if b > 1:
            kpm[1] = False  # a fully masked sequence: zeros, no NaN
    return q, k, v, kpm


def run(transform, params, q, k, v, kpm, dtype, backend, dropout_p=0.0, grad=None):
    """(out, dq, dk, dv, d params...) of one call."""
    leaves = [t.to(dtype).detach().requires_grad_() for t in (q, k, v)]
    kw = {n: torch.tensor(x, dtype=dtype, requires_grad=True) if isinstance(x, list) else x for n, x in params.items()}
    out = K.sparse_attention(*leaves, transform, key_padding_mask=kpm, backend=backend, dropout_p=dropout_p, **kw)
    out.backward(torch.ones_like(out) if grad is None else grad.to(dtype))
    grads = [t.grad for t in leaves] + [t.grad for t in kw.values() if isinstance(t, torch.Tensor)]
    return [out.detach(), *grads]


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_the_fused_kernel_equals_the_torch_path_in_float64(case, shape):
    transform, params = CASES[case]
    q, k, v, kpm = inputs(*SHAPES[shape])
    g = torch.randn((*q.shape[:3], v.shape[-1]), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = run(transform, params, q, k, v, kpm, torch.float64, "torch", grad=g)
    got = run(transform, params, q, k, v, kpm, torch.float32, "triton", grad=g)
    names = ["out", "dq", "dk", "dv", "d lam / alpha"][: len(got)]
    for name, a, e in zip(names, got, expected, strict=True):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a.double(), e, atol=1e-4, rtol=1e-4, msg=f"{case}: {name}")
    if kpm is not None and q.shape[0] > 1:
        assert (got[0][1] == 0).all() and (got[1][1] == 0).all(), "a fully masked row gives zeros and no gradient"


@pytest.mark.parametrize("transform,params", [("sparsemax", {}), ("entmax_bisect", {"alpha": 1.5})])
def test_dropout_keeps_entries_with_probability_one_minus_p_and_its_gradient_uses_the_same_mask(transform, params):
    """With v = I, out is the dropped probability matrix itself: its mask is read back, checked against
    the undropped probabilities, and the torch path with that mask gives the kernel's gradients."""
    b, h, length, p_drop = 4, 2, 32, 0.3
    q, k, _, _ = inputs(b, h, length, length, 32, None)
    v = torch.eye(length, dtype=torch.float64).expand(b, h, length, length).contiguous()
    torch.manual_seed(5)
    got = run(transform, params, q, k, v, None, torch.float32, "triton", dropout_p=p_drop)
    torch.manual_seed(5)
    again = run(transform, params, q, k, v, None, torch.float32, "triton", dropout_p=p_drop)
    assert torch.equal(got[0], again[0]), "the same seed gives the same mask"
    probs = run(transform, params, q, k, v, None, torch.float64, "torch")[0]  # v = I: out = P
    support = probs > 0
    kept = got[0].double() != 0
    assert (kept <= support).all()
    torch.testing.assert_close(got[0].double()[kept], (probs / (1 - p_drop))[kept], atol=1e-5, rtol=1e-5)
    share = kept[support].float().mean().item()
    assert abs(share - (1 - p_drop)) < 0.03, f"kept {share:.3f} of the support, expected {1 - p_drop}"
    # the gradient of sum(out * G) through the same mask, on the torch path
    gmat = torch.randn(b, h, length, length, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.manual_seed(5)
    got = run(transform, params, q, k, v, None, torch.float32, "triton", dropout_p=p_drop, grad=gmat)
    mask = (got[0].double() != 0) | ~support  # where P = 0 the mask does not matter
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    s = leaves[0] @ leaves[1].transpose(-1, -2) / 32**0.5
    from ssaf import transforms as T

    p = T.sparsemax(s) if transform == "sparsemax" else T.entmax_bisect(s, params["alpha"])
    dropped = p * mask / (1 - p_drop)
    (dropped @ leaves[2] * gmat).sum().backward()
    torch.testing.assert_close(got[1].double(), leaves[0].grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[2].double(), leaves[1].grad, atol=1e-4, rtol=1e-4)
    # dV = dropped(P)^T G: the kept entries scaled by 1 / (1 - p) in the backward as in the forward
    torch.testing.assert_close(got[3].double(), leaves[2].grad, atol=1e-4, rtol=1e-4)


def test_a_nan_score_makes_its_rows_nan_and_leaves_the_others():
    q, k, v, _ = inputs(2, 2, 16, 16, 16, None)
    q[0, 1, 3, 0] = float("nan")
    out = run("sparsemax", {}, q, k, v, None, torch.float32, "triton")[0]
    assert torch.isnan(out[0, 1, 3]).all()
    out[0, 1, 3] = 0
    assert torch.isfinite(out).all()


def test_rows_beyond_the_kernel_fall_back_to_torch_with_one_warning():
    q, k, v, _ = inputs(1, 1, 16, 520, 16, None)
    from ssaf.transforms import _common

    _common._warned.clear()
    with pytest.warns(RuntimeWarning, match=r"does not serve rows of 520 keys \(the kernel holds at most 512\)"):
        got = run("sparsemax", {}, q, k, v, None, torch.float64, "triton")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run("sparsemax", {}, q, k, v, None, torch.float64, "triton")  # once per reason
        assert K.unsupported(q, k, "sparsemax") is not None  # auto: the torch path, silently (nothing asked)
    expected = run("sparsemax", {}, q, k, v, None, torch.float64, "torch")
    for a, e in zip(got, expected, strict=True):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"transform": "softmax"}, r"unknown transform 'softmax'"),
        ({"transform": "sparsemax", "dropout_p": 1.0}, r"dropout_p must be in \[0, 1\)"),
        ({"transform": "sparsegen_lin", "lam": 1.0}, r"lam must be finite and < 1"),
        ({"transform": "entmax_bisect", "alpha": 1.0}, r"alpha must be finite and > 1"),
        ({"transform": "sparsemax", "key_padding_mask": torch.ones(2, 16)}, r"key_padding_mask must be a \(B, Lk\)"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    q, k, v, _ = inputs(2, 2, 16, 16, 16, None)
    with pytest.raises(ValueError, match=match):
        K.sparse_attention(q.float(), k.float(), v.float(), **kwargs)


def _bert(spec):
    from transformers import AutoModelForSequenceClassification, BertConfig

    import ssaf
    from ssaf.attention import ssaf_config

    ssaf.register()
    base = BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=64, attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(ssaf_config(base, spec))


@pytest.mark.parametrize("transform,extra", [("sparse", {"lam": -2.0}), ("learned_alpha", {"alpha": 1.4})])
def test_a_model_on_the_fused_kernel_gives_the_torch_paths_logits_and_gradients(transform, extra, near_reference):
    from ssaf.attention import AttentionSpec, record_attention_stats

    fused = _bert(AttentionSpec(transform, backend="triton", **extra))
    plain = _bert(AttentionSpec(transform, backend="torch", **extra))
    plain.load_state_dict(fused.state_dict())
    reference = _bert(AttentionSpec(transform, backend="torch", **extra)).double()
    reference.load_state_dict(fused.state_dict())
    ids = torch.randint(5, 99, (2, 20), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, 13:] = 0
    outs = []
    for model in (reference, plain, fused):
        logits = model(input_ids=ids, attention_mask=mask).logits
        logits.square().sum().backward()
        outs.append((logits.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (ref, ref_grads), (eager, eager_grads), (got, got_grads) = outs
    assert got_grads.keys() == eager_grads.keys() == ref_grads.keys()
    assert any(".ssaf_" in n for n in got_grads) == (transform != "sparse")
    # each fp32 path against float64, never the two fp32 paths against each other (their sums' order differs)
    near_reference("logits", ref, eager, got)
    scale = max(g.abs().max().item() for g in ref_grads.values())  # some are ~0 exactly (a key bias's)
    for name in got_grads:
        near_reference(name, ref_grads[name], eager_grads[name], got_grads[name], scale=scale)
    # what needs the probabilities takes the materialising path: output_attentions, the attention statistics
    with torch.no_grad():
        attentions = fused(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
        assert attentions is not None and all(a is not None and a.shape == (2, 2, 20, 20) for a in attentions)
        with record_attention_stats(fused) as stats:
            fused(input_ids=ids, attention_mask=mask)
        assert stats.batches_measured == 1 and len(stats.summary()["zero_fraction"]) == 2


# ---------------------------------------------------------------- on a GPU (skipped without CUDA)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(32, 12, 128, 64), (16, 12, 384, 64), (4, 12, 512, 128), (8, 12, 128, 32)])
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_the_fused_kernel_equals_the_torch_path_on_cuda(case, shape, dtype):
    transform, params = CASES[case]
    if isinstance(params.get("lam"), list) or isinstance(params.get("alpha"), list):
        params = {n: (v * shape[1])[: shape[1]] for n, v in params.items()}  # one value per head
    b, h, length, d = shape
    q, k, v, kpm = inputs(b, h, length, length, d, "pad")
    q, k, v, kpm = q.cuda(), k.cuda(), v.cuda(), kpm.cuda()
    g = torch.randn(b, h, length, d, dtype=torch.float64, device="cuda")
    expected = run(transform, params, q, k, v, kpm, torch.float64, "torch", grad=g)
    got = run(transform, params, q, k, v, kpm, dtype, "triton", grad=g)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    for a, e in zip(got, expected, strict=False):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), e, atol=tol, rtol=tol)


# ---------------------------------------------------------------- auto never takes a run down


@pytest.fixture
def fresh_device(monkeypatch):
    """No device declined or self-checked yet, no warning given yet (and the process's state restored after)."""
    from ssaf.transforms import _common

    monkeypatch.setattr(K, "_declined", {})
    monkeypatch.setattr(K, "_checked", set())
    monkeypatch.setattr(_common, "_warned", set())


def _out_of_shared_memory(*args):
    from triton.runtime.errors import OutOfResources

    raise OutOfResources(147456, 101376, "shared memory")


class _DoubledGradient(torch.autograd.Function):
    """The identity with a wrong backward: a kernel whose forward is right and whose gradient is not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return 2 * g


@pytest.mark.parametrize("where", ["the self-check", "the launch"])
def test_a_kernel_that_fails_to_compile_degrades_auto_to_the_torch_path_with_one_warning(
    where, fresh_device, monkeypatch
):
    q, k, v, kpm = (t.float() if t.is_floating_point() else t for t in inputs(2, 2, 24, 24, 16, "pad"))
    if where == "the launch":
        K._checked.add(("cpu", "sparsemax", torch.float32))  # the self-check passed earlier
    launches = []
    monkeypatch.setattr(K._SparseAttention, "apply", lambda *a: launches.append(a) or _out_of_shared_memory())
    said = r"the fused sparsemax kernel on cpu \(Triton's interpreter\), q \(2, 2, 24, 16\), 24 keys, float32: "
    said += r"(the self-check )?failed with OutOfResources: out of resource: shared memory"
    with pytest.raises(K.KernelError, match=said + r".*attn.backend=auto falls back"):
        K.dispatch(q, k, v, "sparsemax", key_padding_mask=kpm, backend="triton")
    assert not K._declined, "triton raises; it declines nothing"
    with pytest.warns(RuntimeWarning, match=said + r".*the torch path runs on this device from now on"):
        out, route = K.dispatch(q, k, v, "sparsemax", key_padding_mask=kpm, backend="auto")
    assert route.path == "torch" and route.reason.startswith("the fused kernel is declined on cpu")
    torch.testing.assert_close(out, K.sparse_attention(q, k, v, "sparsemax", key_padding_mask=kpm, backend="torch"))
    tried = len(launches)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per device
        again, route2 = K.dispatch(q, k, v, "sparsemax", key_padding_mask=kpm, backend="auto")
    assert route2 == route and len(launches) == tried, "declined: the kernel is not tried again on the device"
    assert K.unsupported(q, k, "entmax15") == route.reason, "declined for every transform on the device"
    assert torch.equal(again, out)


def test_a_backward_that_fails_to_compile_is_found_before_the_forward_and_auto_declines_it(fresh_device, monkeypatch):
    """The backward's kernels compile inside ``dispatch`` (where ``auto`` can still fall back), not at the
    backward's first launch inside autograd; only when a gradient will be asked for."""
    q, k, v, kpm = (t.float() if t.is_floating_point() else t for t in inputs(2, 2, 24, 24, 16, "pad"))
    K._checked.add(("cpu", "sparsemax", torch.float32))  # the self-check passed (it compiles one specialisation)
    compiles = []
    monkeypatch.setattr(K, "compile_backward", lambda *a: compiles.append(a) or _out_of_shared_memory())
    out, route = K.dispatch(q, k, v, "sparsemax", key_padding_mask=kpm)  # no gradient wanted: no backward
    assert route.path == "fused" and not compiles
    q.requires_grad_(True)
    said = r"q \(2, 2, 24, 16\), 24 keys, float32: failed with OutOfResources: out of resource: shared memory"
    with pytest.raises(K.KernelError, match=said):
        K.dispatch(q, k, v, "sparsemax", key_padding_mask=kpm, backend="triton")
    with pytest.warns(RuntimeWarning, match=said + r".*the torch path runs on this device from now on"):
        out, route = K.dispatch(q, k, v, "sparsemax", key_padding_mask=kpm, dropout_p=0.1)
    assert route.path == "torch" and "declined" in route.reason and len(compiles) == 2
    out.sum().backward()  # the step goes on, on the torch path
    assert q.grad is not None and torch.isfinite(q.grad).all()


@pytest.mark.parametrize(
    "wrong,transform", [("output", "entmax15"), ("dq", "entmax15"), ("d lam / alpha", "entmax_bisect")]
)
def test_a_kernel_that_computes_a_wrong_result_fails_the_self_check_and_auto_declines_it(
    wrong, transform, fresh_device, monkeypatch
):
    apply = K._SparseAttention.apply

    def miscompiled(q, k, v, param, *rest):
        if wrong == "d lam / alpha":
            return apply(q, k, v, _DoubledGradient.apply(param), *rest)
        out = apply(q, k, v, param, *rest)
        return out * 1.01 if wrong == "output" else _DoubledGradient.apply(out)

    monkeypatch.setattr(K._SparseAttention, "apply", miscompiled)
    q, k, v, kpm = (t.float() if t.is_floating_point() else t for t in inputs(2, 2, 24, 24, 16, "pad"))
    said = rf"q \(2, 2, 24, 16\), 24 keys, float32: the self-check's {wrong} is .* from the float64 torch path"
    with pytest.raises(K.KernelError, match=said):
        K.dispatch(q, k, v, transform, key_padding_mask=kpm, backend="triton")
    with pytest.warns(RuntimeWarning, match=said):
        out, route = K.dispatch(q, k, v, transform, key_padding_mask=kpm)
    assert route.path == "torch" and "declined" in route.reason
    torch.testing.assert_close(out, K.sparse_attention(q, k, v, transform, key_padding_mask=kpm, backend="torch"))
    assert ("cpu", transform, torch.float32) not in K._checked


@pytest.mark.parametrize(
    "transform,params", [("sparsegen_lin", {"lam": [-3.0, 0.5]}), ("entmax_bisect", {"alpha": 1.3})]
)
def test_the_self_check_passes_on_the_kernel_once_per_device_and_leaves_the_callers_random_stream(
    transform, params, fresh_device, monkeypatch
):
    checks = []
    check = K.self_check
    monkeypatch.setattr(K, "self_check", lambda *a: checks.append(a) or check(*a))
    q, k, v, kpm = inputs(2, 2, 40, 40, 32, "pad")
    before = torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = run(transform, params, q, k, v, kpm, torch.float32, "auto")
        assert torch.equal(torch.get_rng_state(), before), "the self-check draws from its own generator"
        run(transform, params, q, k, v, kpm, torch.float32, "auto")
    assert len(checks) == 1 and K._checked == {("cpu", transform, torch.float32)} and not K._declined
    expected = run(transform, params, q, k, v, kpm, torch.float64, "torch")
    for a, e in zip(got, expected, strict=True):
        torch.testing.assert_close(a.double(), e, atol=1e-4, rtol=1e-4)
    w = torch.tensor(params.get("lam", params.get("alpha")))
    param = 1 / (1 - w.expand(2)) if transform == "sparsegen_lin" else w.expand(2).float()
    assert K.self_check(q.half(), k.half(), transform, param, 32**-0.5) is None  # fp16 too, at its tolerance


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("keys,d", [(128, 64), (512, 64), (384, 128)])
@pytest.mark.parametrize("transform", K.TRANSFORMS)
def test_the_self_check_passes_on_cuda(transform, keys, d, dtype):
    """The fused kernel agrees with the float64 torch path at CHECK_TOL on this card (else auto would decline
    it here: a wrong tolerance or a broken kernel, either way a finding)."""
    q = torch.randn(2, 12, keys, d, device="cuda", dtype=dtype)
    param = torch.full((12,), 1.5 if transform == "entmax_bisect" else 1.0, device="cuda")
    assert K.self_check(q, q, transform, param, d**-0.5) is None


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_the_self_check_runs_inside_an_evaluation(mode, fresh_device):
    """The first fused call may be an evaluation's: the self-check's backward still runs, and passes."""
    q, k, v, kpm = (t.float() if t.is_floating_point() else t for t in inputs(2, 2, 24, 24, 16, "pad"))
    with warnings.catch_warnings(), getattr(torch, mode)():
        warnings.simplefilter("error")
        out, route = K.dispatch(q, k, v, "sparsegen_lin", lam=-1.0, key_padding_mask=kpm)
    assert route.path == "fused" and K._checked == {("cpu", "sparsegen_lin", torch.float32)}
    expected = K.sparse_attention(q.double(), k.double(), v.double(), "sparsegen_lin", lam=-1.0, key_padding_mask=kpm)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("masked,dropout_p", [(True, 0.1), (False, 0.0)])
def test_the_backward_compiled_ahead_is_the_one_the_backward_launches(masked, dropout_p, fresh_device, monkeypatch):
    """On a GPU ``compile_backward`` compiles the backward's own specialisation: the backward then finds both
    kernels in Triton's cache and compiles nothing more (the ahead-of-time compile is not a second one)."""
    from ssaf.kernels import _triton

    monkeypatch.setattr(K, "_backward_ready", set())
    q, k, v = (torch.randn(2, 4, 200, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    kpm = torch.ones(2, 200, dtype=torch.bool, device="cuda") if masked else None
    if masked:
        kpm[0, 150:] = False
    out, route = K.dispatch(q, k, v, "entmax15", key_padding_mask=kpm, dropout_p=dropout_p)
    assert route.path == "fused" and len(K._backward_ready) == 1

    def cached(fn):
        return sum(len(cache) for cache, *_ in fn.device_caches.values())

    before = [cached(_triton._bwd_rows), cached(_triton._bwd_keys)]
    out.float().sum().backward()
    assert [cached(_triton._bwd_rows), cached(_triton._bwd_keys)] == before
