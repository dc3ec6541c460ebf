"""The logged metric names, spelled out: every writer and reader builds them through ``ssaf.keys``, so a
rename would pass every other test while cutting each existing W&B and TensorBoard history in two."""

from __future__ import annotations

from ssaf import keys


def test_the_logged_names_are_the_published_ones():
    assert keys.STATS == ("zero_fraction", "support", "entropy")
    assert keys.LEARNED == ("lam", "alpha")
    assert keys.TRAIN == ("loss", "learning_rate", "grad_norm")
    assert keys.HEATMAP == "attention_heatmap"
    assert keys.prefix("validation_matched") == "eval_validation_matched"
    assert keys.metric("validation", "accuracy") == "eval_validation_accuracy"
    assert keys.stat_mean("eval_validation", "zero_fraction") == "eval_validation_attn_zero_fraction"
    assert keys.head_stat("eval_validation", "support", 0, 3) == "eval_validation/attn_support/layer0/head3"
    assert keys.head_stat("eval_test", "entropy", "11", "7") == "eval_test/attn_entropy/layer11/head7"
    assert keys.learned("lam", 2, 0) == "learned_lam/layer2/head0"
    assert keys.learned("alpha", 5, 11) == "learned_alpha/layer5/head11"
    assert keys.learned_mean("eval_validation", "lam") == "eval_validation_learned_lam_mean"
    assert keys.final("eval_validation_accuracy") == "final/eval_validation_accuracy"
