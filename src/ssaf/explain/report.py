"""Per-model results -> Markdown tables (mean with a bootstrap 95% interval over sentences), a JSON summary
and one figure: the deletion curve of each model."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssaf.explain import scores as S
from ssaf.explain.explain import SentenceScores

K_LABELS = (*(str(k) for k in S.K_FIXED), f"{round(100 * S.K_SHARE)}%")
# The comparison the claim rests on, per sentence: how much more the attention's tokens matter than random ones.
ATTN_VS_RANDOM = "attention - random"


@dataclass
class ModelResult:
    name: str  # e.g. "sparse lam=-8 seed 1"
    path: str
    sentences: list[SentenceScores]

    def best_head(self) -> int | None:
        """The head whose [CLS] row is the most comprehensive explanation, averaged over k and sentences
        (chosen on the scored split itself: an upper bound for a head picked in advance)."""
        heads = sorted({int(m[4:]) for s in self.sentences for m in s.comprehensiveness if re.fullmatch(r"head\d+", m)})
        if not heads:
            return None
        means = [np.nanmean([v for s in self.sentences for v in s.comprehensiveness.get(f"head{h}", {}).values()])
                 for h in heads]  # fmt: skip
        return heads[int(np.argmax(means))]

    def methods(self) -> dict[str, str]:
        """Shown name -> the method's key in the sentences' tables."""
        out = {"attention (heads averaged)": "attention"}
        head = self.best_head()
        if head is not None:
            out[f"attention (best head: {head})"] = f"head{head}"
        out |= {"gradient x input": "gradient", "random (mean of draws)": "random", ATTN_VS_RANDOM: ATTN_VS_RANDOM}
        return out

    def drops(self, what: str, method: str, k: str) -> list[float]:
        """Each sentence's drop for ``method`` at ``k``; for ``ATTN_VS_RANDOM`` the attention's drop minus the
        random tokens' on the same sentence (paired: the interval is that of the difference)."""
        table = [s.comprehensiveness if what == "comp" else s.sufficiency for s in self.sentences]
        if method == ATTN_VS_RANDOM:
            return [t.get("attention", {}).get(k, np.nan) - t.get("random", {}).get(k, np.nan) for t in table]
        return [t.get(method, {}).get(k, np.nan) for t in table]


def family(name: str) -> str:
    """A model's name without its seed: the models a seeds table pools ("sparse lam=-8 seed 2" -> "sparse
    lam=-8")."""
    return re.sub(r" seed \d+$", "", name)


def families(results: list[ModelResult]) -> dict[str, list[ModelResult]]:
    """The results grouped by ``family``, in the order the families first appear."""
    out: dict[str, list[ModelResult]] = {}
    for r in results:
        out.setdefault(family(r.name), []).append(r)
    return out


# An explanation as the seeds table names it -> its key in one model's tables (the best head is each model's own).
SEED_METHODS = {
    "attention (heads averaged)": lambda r: "attention",
    "attention (each model's best head)": lambda r: f"head{r.best_head()}",
    "gradient x input": lambda r: "gradient",
    "random (mean of draws)": lambda r: "random",
    ATTN_VS_RANDOM: lambda r: ATTN_VS_RANDOM,
}


def over_seeds(models: list[ModelResult], statistic) -> tuple[float, float]:
    """(mean, std with ddof 1; NaN for one model) over the models of one family of ``statistic(model)``, each
    model's mean over its sentences."""
    values = np.array([statistic(m) for m in models], dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else float("nan")


def pm(mean_std: tuple[float, float]) -> str:
    mean, std = mean_std
    return f"{mean:.3f}" if np.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def seeds_tables(results: list[ModelResult]) -> str:
    """Per family (the same model on several seeds): each statistic's mean over sentences, then its mean ±
    std over the seeds. Empty when no family has two seeds."""
    groups = families(results)
    if all(len(g) < 2 for g in groups.values()):
        return ""
    rows = ["| model | seeds | explanation | what | " + " | ".join(f"k = {k}" for k in K_LABELS) + " |"]
    rows.append("|---|---|---|---|" + "---|" * len(K_LABELS))
    for name, models in groups.items():
        for shown, key in SEED_METHODS.items():
            for what, label in (("comp", "comprehensiveness"), ("suff", "sufficiency")):
                cells = [
                    pm(over_seeds(models, lambda m, w=what, f=key, k=k: np.nanmean(m.drops(w, f(m), k))))
                    for k in K_LABELS
                ]
                rows.append(f"| {name} | {len(models)} | {shown} | {label} | " + " | ".join(cells) + " |")
    rest = ["| model | seeds | attention on lexicon words - their share of the text | support (heads averaged) | "
            "support (per head) | entropy (nats) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, models in groups.items():
        stats = [
            over_seeds(models, lambda m: np.nanmean([s.lexicon_attention - s.lexicon_text for s in m.sentences
                                                     if s.lexicon_text > 0])),
            over_seeds(models, lambda m: np.mean([s.support for s in m.sentences])),
            over_seeds(models, lambda m: np.mean([s.head_support for s in m.sentences])),
            over_seeds(models, lambda m: np.mean([s.entropy for s in m.sentences])),
        ]  # fmt: skip
        rest.append(f"| {name} | {len(models)} | " + " | ".join(pm(c) for c in stats) + " |")
    return "\n".join(rows) + "\n\n" + "\n".join(rest)


def cell(values: list[float], seed: int = 0) -> str:
    mean, low, high = S.bootstrap_ci(values, seed=seed)
    return "n/a" if np.isnan(mean) else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def faithfulness_table(results: list[ModelResult], what: str) -> str:
    rows = ["| model | explanation | " + " | ".join(f"k = {k}" for k in K_LABELS) + " |"]
    rows.append("|---|---|" + "---|" * len(K_LABELS))
    for r in results:
        for shown, method in r.methods().items():
            rows.append(
                f"| {r.name} | {shown} | " + " | ".join(cell(r.drops(what, method, k)) for k in K_LABELS) + " |"
            )
    return "\n".join(rows)


def plausibility_table(results: list[ModelResult]) -> str:
    rows = [
        "| model | attention on lexicon words | lexicon words in the text | difference | sentences with one |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        with_words = [s for s in r.sentences if s.lexicon_text > 0]
        a = [s.lexicon_attention for s in with_words]
        t = [s.lexicon_text for s in with_words]
        rows.append(
            f"| {r.name} | {cell(a)} | {cell(t)} | {cell([x - y for x, y in zip(a, t, strict=True)])} | "
            f"{len(with_words)} of {len(r.sentences)} |"
        )
    return "\n".join(rows)


def compactness_table(results: list[ModelResult]) -> str:
    rows = [
        "| model | tokens | support (heads averaged) | support (per head) | entropy (nats) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        ss = r.sentences
        rows.append(
            f"| {r.name} | {np.mean([s.n_tokens for s in ss]):.1f} | {cell([s.support for s in ss])} | "
            f"{cell([s.head_support for s in ss])} | {cell([s.entropy for s in ss])} |"
        )
    return "\n".join(rows)


def markdown(results: list[ModelResult], header: str) -> str:
    return (
        "\n\n".join(
            [
                header,
                "## Faithfulness: comprehensiveness (drop in p(predicted class) when the top k tokens are deleted; "
                "higher = more faithful)",
                faithfulness_table(results, "comp"),
                "## Sufficiency (drop in p(predicted class) when only the top k tokens are kept; lower = more "
                "sufficient)",
                faithfulness_table(results, "suff"),
                "## Plausibility: the share of [CLS] attention (last layer, heads averaged) on content tokens that "
                "falls on words of the lexicon, against their share of the content tokens",
                plausibility_table(results),
                "## Compactness of the [CLS] attention row (last layer; special tokens included)",
                compactness_table(results),
            ]
            + (
                [
                    "## Over seeds: each model's mean over the sentences, then the mean ± std over its seeds",
                    seeds,
                ]
                if (seeds := seeds_tables(results))
                else []
            )
        )
        + "\n"
    )


def summary_json(results: list[ModelResult]) -> dict:
    def stat(values):
        mean, low, high = S.bootstrap_ci(values)
        return {"mean": mean, "low": low, "high": high}

    out = {}
    for r in results:
        entry = {"path": r.path, "sentences": len(r.sentences), "best_head": r.best_head()}
        for what in ("comp", "suff"):
            name = "comprehensiveness" if what == "comp" else "sufficiency"
            entry[name] = {m: {k: stat(r.drops(what, m, k)) for k in K_LABELS} for m in r.methods().values()}
        with_words = [s for s in r.sentences if s.lexicon_text > 0]
        entry["lexicon_attention"] = stat([s.lexicon_attention for s in with_words])
        entry["lexicon_text"] = stat([s.lexicon_text for s in with_words])
        entry["support"] = stat([s.support for s in r.sentences])
        entry["head_support"] = stat([s.head_support for s in r.sentences])
        entry["entropy"] = stat([s.entropy for s in r.sentences])
        out[r.name] = entry
    return out


def curve_points(models: list[ModelResult], method: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean drop per k, its error bars (2, k)) for one family: one model's bootstrap 95% interval over its
    sentences, or for several seeds the mean over the seeds ± their std."""
    if len(models) == 1:
        stats = [S.bootstrap_ci(models[0].drops("comp", method, k)) for k in K_LABELS]
        mean = np.array([s[0] for s in stats])
        return mean, np.array([[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]])
    per_k = [over_seeds(models, lambda m, k=k: np.nanmean(m.drops("comp", method, k))) for k in K_LABELS]
    mean, std = np.array([m for m, _ in per_k]), np.array([s for _, s in per_k])
    return mean, np.stack([std, std])


def deletion_curve(results: list[ModelResult], path: Path) -> None:
    """Comprehensiveness against k: one colour per model (the seeds of one model pooled: their mean); solid:
    attention (heads averaged), dotted: gradient x input, dashed: random tokens. Error bars: one model's
    bootstrap 95% interval, several seeds' std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.arange(len(K_LABELS))
    for i, (name, models) in enumerate(families(results).items()):
        colour = f"C{i % 10}"
        shown = name if len(models) == 1 else f"{name} ({len(models)} seeds, ± std)"
        for method, style, label in (("attention", "-", shown), ("gradient", ":", None), ("random", "--", None)):
            mean, err = curve_points(models, method)
            ax.errorbar(x, mean, yerr=err, color=colour, linestyle=style, marker="o", ms=3, capsize=2, label=label)
    ax.plot([], [], color="grey", linestyle="-", label="attention (heads averaged)")
    ax.plot([], [], color="grey", linestyle=":", label="gradient x input")
    ax.plot([], [], color="grey", linestyle="--", label="random tokens")
    ax.set_xticks(x, [f"k = {k}" for k in K_LABELS])
    ax.set_ylabel("drop in p(predicted class)")
    ax.set_title("Deletion: the top-k tokens removed")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(results: list[ModelResult], out: Path, header: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "explain.md").write_text(markdown(results, header))
    (out / "explain.json").write_text(json.dumps(summary_json(results), indent=1, allow_nan=True) + "\n")
    deletion_curve(results, out / "deletion_curve.png")
