"""ssaf-explain: the token choices and edits it scores, its seeded baselines, and that an attention that is
one-hot on a token makes that token the explanation and its deletion the drop that is measured."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from ssaf.explain import explain as E
from ssaf.explain import scores as S

SPECIAL = [1, 0, 0, 0, 0, 0, 1]  # [CLS] five words [SEP]
IDS = [101, 11, 12, 13, 14, 15, 102]


def test_deleting_the_top_k_removes_exactly_those_tokens_and_never_a_special_one():
    weights = [9.0, 0.1, 0.5, 0.3, 0.5, 0.2, 8.0]  # the special tokens weigh most, and are not candidates
    content = S.content_positions(SPECIAL)
    assert content == [1, 2, 3, 4, 5]
    for k in range(1, 6):
        chosen = S.top_k(weights, content, k)
        assert len(chosen) == k and set(chosen) <= set(content)
        deleted = S.delete(IDS, chosen)
        assert deleted == [t for i, t in enumerate(IDS) if i not in chosen]
        assert deleted[0] == 101 and deleted[-1] == 102
        kept = S.keep(IDS, chosen, SPECIAL)
        assert kept == [t for i, t in enumerate(IDS) if i in chosen or SPECIAL[i]]
    assert S.top_k(weights, content, 2) == [2, 4]  # the tie at 0.5: both, in sequence order
    assert S.top_k(weights, content, 1) == [2]  # the earlier of the tied positions


def test_k_values_are_clipped_to_the_content_and_20_percent_is_at_least_one():
    assert S.k_values(30) == {"1": 1, "3": 3, "5": 5, "20%": 6}
    assert S.k_values(2) == {"1": 1, "3": 2, "5": 2, "20%": 1}


def test_random_baselines_are_seeded_and_draw_content_tokens_only():
    content = S.content_positions(SPECIAL)
    a = [S.random_k(content, 3, np.random.default_rng([7, i])) for i in range(20)]
    b = [S.random_k(content, 3, np.random.default_rng([7, i])) for i in range(20)]
    c = [S.random_k(content, 3, np.random.default_rng([8, i])) for i in range(20)]
    assert a == b and a != c
    assert all(len(set(x)) == 3 and set(x) <= set(content) for x in a)


def test_support_entropy_and_the_lexicon_share():
    assert S.support_and_entropy([0.5, 0.5, 0.0]) == (2, pytest.approx(math.log(2)))
    assert S.support_and_entropy([1.0, 0.0]) == (1, 0.0)
    row = [0.5, 0.3, 0.1, 0.1, 0.0]  # [CLS] takes half: left out of both shares
    attn, text = S.lexicon_share(row, [1, 2, 3], [False, True, False, False, False])
    assert attn == pytest.approx(0.6) and text == pytest.approx(1 / 3)


def test_the_bootstrap_interval_holds_the_mean_and_is_seeded():
    v = np.random.default_rng(0).normal(size=200)
    mean, low, high = S.bootstrap_ci(v, seed=3)
    assert low < mean < high and mean == pytest.approx(v.mean())
    assert S.bootstrap_ci(v, seed=3) == (mean, low, high)
    assert S.bootstrap_ci([1.0, 1.0, float("nan")]) == (1.0, 1.0, 1.0)


class OneHotModel(nn.Module):
    """A classifier whose [CLS] attends to the token ``key`` only (one-hot, every head) and whose positive
    probability is 0.9 when ``key`` is in the input and 0.5 otherwise: the token is its explanation."""

    def __init__(self, key: int, heads: int = 2):
        super().__init__()
        self.key, self.heads = key, heads
        self.embed = nn.Embedding(200, 200)
        with torch.no_grad():
            self.embed.weight.copy_(torch.eye(200))  # one-hot embeddings: only the key's carries evidence

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_attentions=False):
        if inputs_embeds is not None:  # gradient x input: the key's embedding carries the evidence
            present = inputs_embeds[..., self.key].sum(-1).double()
            return SimpleNamespace(logits=torch.stack([-present, present], -1) * math.log(9) / 2)
        present = (input_ids == self.key).any(-1).double()
        logits = torch.stack([-present, present], -1) * math.log(9) / 2  # p = 0.9 with it, 0.5 without
        if not output_attentions:
            return SimpleNamespace(logits=logits)
        b, length = input_ids.shape
        attn = (input_ids == self.key).double()[:, None, None, :].expand(b, self.heads, length, length)
        return SimpleNamespace(logits=logits, attentions=(attn,))


@pytest.mark.parametrize("position", [1, 3, 5])
def test_a_one_hot_attention_makes_its_token_the_explanation(position):
    ids = list(IDS)
    ids[position] = 42
    model = OneHotModel(key=42)
    rng = np.random.default_rng(0)
    lexicon_flags = [i == position for i in range(len(ids))]
    s = E.score_sentence(model, ids, SPECIAL, lexicon_flags, pad_id=0, draws=4, rng=rng)
    assert s.top == [position]
    assert s.p == pytest.approx(0.9)
    assert s.support == 1 and s.entropy == 0.0 and s.head_support == 1
    assert s.lexicon_attention == 1.0 and s.lexicon_text == pytest.approx(1 / 5)
    for k in ("1", "3", "5", "20%"):
        # deleting the attended token takes p from 0.9 to 0.5; keeping it keeps 0.9
        assert s.comprehensiveness["attention"][k] == pytest.approx(0.4)
        assert s.comprehensiveness["gradient"][k] == pytest.approx(0.4)
        assert s.sufficiency["attention"][k] == pytest.approx(0.0)
    # k random tokens out of 5 hit the key with probability k/5: below the explanation's drop at k = 1
    assert s.comprehensiveness["random"]["1"] < 0.4


def test_the_cli_scores_a_saved_ssaf_model_on_local_data(tmp_path):
    from transformers import AutoModelForSequenceClassification, BertConfig, BertTokenizerFast

    import ssaf
    from ssaf.attention import AttentionSpec, ssaf_config
    from ssaf.explain.cli import main

    ssaf.register()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "a", "very", "dull"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab + [f"w{i}" for i in range(99 - len(vocab))]))
    tok = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    base = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=37, max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(ssaf_config(base, AttentionSpec("sparsemax")))
    model.save_pretrained(tmp_path / "run" / "model")
    tok.save_pretrained(tmp_path / "run" / "model")
    data = tmp_path / "data" / "sst_sentences"
    data.mkdir(parents=True)
    (data / "stsa.binary.test").write_text("1 a very good movie\n0 a dull movie\n0 bad\n1 good good\n")
    out = tmp_path / "out"
    assert main([str(tmp_path / "run" / "model"), "--split", "test", "--out", str(out),
                 "--data-dir", str(tmp_path / "data"), "--data-source", "local", "--draws", "2"]) == 0  # fmt: skip
    text = (out / "explain.md").read_text()
    assert "4 sentences" in text and "| sparsemax | attention (heads averaged) |" in text
    assert (out / "deletion_curve.png").stat().st_size > 0 and (out / "explain.json").is_file()


def test_the_cli_refuses_a_folder_without_a_model_before_loading_anything(tmp_path):
    from ssaf.explain.cli import main

    with pytest.raises(SystemExit, match=r"holds no saved model \(no config.json\)"):
        main([str(tmp_path), "--out", str(tmp_path / "out")])


def test_the_cli_refuses_to_score_the_demo_set_unless_asked(tmp_path, monkeypatch):
    from ssaf.explain import cli

    monkeypatch.delenv("SSAF_DATA_DIR", raising=False)
    monkeypatch.setattr(cli, "check_model_dir", lambda path: None)  # no model is loaded before the data check
    with pytest.raises(SystemExit, match=r"no real data for task sst2_sentences.*--data-source sample"):
        cli.main([str(tmp_path), "--out", str(tmp_path / "out")])


def test_the_seeds_table_pools_the_seeds_of_one_model_and_is_left_out_without_them():
    from ssaf.explain import report as R

    def model(name: str, drop: float, support: int) -> R.ModelResult:
        drops = {m: {k: drop for k in R.K_LABELS} for m in ("attention", "head3", "head5", "gradient", "random")}
        drops["head5"] = {k: drop + 1 for k in R.K_LABELS}  # the best head: it must be read per model
        s = E.SentenceScores(n_tokens=7, n_content=5, predicted=1, p=0.9, comprehensiveness=drops,
                             sufficiency=drops, support=support, lexicon_attention=0.5, lexicon_text=0.2)  # fmt: skip
        return R.ModelResult(name, "path", [s, s])

    assert R.family("sparse lam=-8 seed 12") == "sparse lam=-8" and R.family("softmax") == "softmax"
    single = [model("softmax seed 1", 0.1, 7), model("sparse lam=-8 seed 1", 0.2, 3)]
    assert R.seeds_tables(single) == "" and "Over seeds" not in R.markdown(single, "# h")
    pooled = [model("softmax seed 1", 0.1, 7), model("softmax seed 2", 0.3, 5), model("sparse lam=-8 seed 1", 0.2, 3)]
    text = R.seeds_tables(pooled)
    cells = " | ".join(["0.200 ± 0.141"] * len(R.K_LABELS))  # mean and std (ddof 1) of 0.1 and 0.3
    assert f"| softmax | 2 | attention (heads averaged) | comprehensiveness | {cells} |" in text
    best = " | ".join(["1.200 ± 0.141"] * len(R.K_LABELS))
    assert f"| softmax | 2 | attention (each model's best head) | sufficiency | {best} |" in text
    assert "| sparse lam=-8 | 1 | attention (heads averaged) | comprehensiveness | 0.200 |" in text
    assert "| softmax | 2 | 0.300 ± 0.000 | 6.000 ± 1.414 |" in text  # lexicon difference, support
    assert "## Over seeds" in R.markdown(pooled, "# h")
    mean, err = R.curve_points(pooled[:2], "attention")
    assert np.allclose(mean, 0.2) and np.allclose(err, np.sqrt(0.02))


def test_probabilities_batched_by_length_come_back_in_the_order_given():
    model = OneHotModel(key=42)
    seqs = [[101, 42, 11, 12, 102], [101, 102], [101, 11, 42, 102], [101, 13, 14, 15, 16, 17, 102], [101, 42, 102]]
    probs = E.probabilities(model, seqs, pad_id=0, batch_size=2)
    alone = np.concatenate([E.probabilities(model, [s], pad_id=0) for s in seqs])
    assert np.array_equal(probs, alone) and np.allclose(probs[:, 1], [0.9, 0.5, 0.9, 0.5, 0.9])


def test_attention_against_random_is_paired_per_sentence():
    from ssaf.explain import report as R

    def sentence(attention: float, random: float) -> E.SentenceScores:
        drops = {"attention": {"1": attention}, "random": {"1": random}}
        return E.SentenceScores(n_tokens=4, n_content=2, predicted=0, p=0.8, comprehensiveness=drops)

    r = R.ModelResult("softmax", "path", [sentence(0.4, 0.1), sentence(0.2, 0.3)])
    assert r.drops("comp", R.ATTN_VS_RANDOM, "1") == pytest.approx([0.3, -0.1])
    assert "| softmax | attention - random | 0.100 [" in R.faithfulness_table([r], "comp")
