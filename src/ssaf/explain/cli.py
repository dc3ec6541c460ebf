"""``ssaf-explain``: score each model's attention as an explanation of its predictions on a labelled split.

    ssaf-explain outputs/sst2_sentences/softmax/<run>/model outputs/.../sparse/<run>/model \\
        --task sst2_sentences --split test --out reports/explain

Writes ``explain.md`` (the tables), ``explain.json`` (the same numbers) and ``deletion_curve.png`` into
``--out``. Every model is checked (a folder with a saved model and tokenizer) before any is scored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from ssaf.settings import TaskSpec, config_dir


def task_spec(conf: Path, name: str) -> TaskSpec:
    path = conf / "task" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (conf / "task").glob("*.yaml"))
        raise SystemExit(f"ssaf-explain: --task {name!r}: no {path}; tasks: {', '.join(known) or 'none found'}")
    spec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TaskSpec), OmegaConf.load(path)))
    assert isinstance(spec, TaskSpec)
    if not spec.record.labels or spec.pair:  # scores attention against the predicted label of one text
        raise SystemExit(f"ssaf-explain: --task {name}: only single-text classification tasks can be scored")
    return spec


def model_name(model_dir: Path) -> str:
    """ "<attention> <its parameter> seed <n>" from the saved config and the run's metrics.json."""
    attn = json.loads((model_dir / "config.json").read_text()).get("ssaf_attention", {})
    transform = attn.get("transform", "softmax")
    param = {"sparse": "lam", "learned_lam": "lam", "entmax": "alpha", "learned_alpha": "alpha"}.get(transform)
    name = transform + (f" {param}={attn[param]:g}" if param and param in attn else "")
    metrics = model_dir.parent / "metrics.json"
    if metrics.is_file():
        seed = json.loads(metrics.read_text()).get("seed")
        name += f" seed {seed}" if seed is not None else ""
    return name


def check_model_dir(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise SystemExit(
            f"ssaf-explain: {path} holds no saved model (no config.json): pass a run's model/ folder, "
            "e.g. outputs/<task>/<attn>/<time>/model"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="ssaf-explain", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("models", nargs="+", type=Path, help="saved model folders (a run's model/)")
    ap.add_argument("--task", default="sst2_sentences", help="the task whose split is scored (default sst2_sentences)")
    ap.add_argument("--split", default="test", help="the split to score (default test)")
    ap.add_argument("--out", type=Path, required=True, help="folder for explain.md, explain.json, deletion_curve.png")
    ap.add_argument("--data-dir", default=os.environ.get("SSAF_DATA_DIR"), help="local data root ($SSAF_DATA_DIR)")
    ap.add_argument("--data-source", default="auto", choices=("auto", "local", "hub", "sample"))
    ap.add_argument("--max-examples", type=int, default=None, help="score the first N sentences only")
    ap.add_argument("--draws", type=int, default=5, help="random baselines per sentence and k (default 5)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the random baselines and the bootstrap")
    ap.add_argument("--conf", type=Path, default=None, help="the Hydra config folder (default: ssaf's own)")
    a = ap.parse_args(argv)
    if a.draws < 1 or (a.max_examples is not None and a.max_examples < 1):
        ap.error("--draws and --max-examples must be at least 1")
    for path in a.models:
        check_model_dir(path)
    task = task_spec(a.conf or config_dir(), a.task)
    if a.split not in task.splits:
        ap.error(f"--split {a.split!r}: task {task.name} has splits {', '.join(task.splits)}")

    # Heavy imports after the arguments are known to be good.
    from transformers import AutoTokenizer

    import ssaf
    from ssaf.data.load import load_task_data
    from ssaf.explain import explain, lexicon, report

    ssaf.register()
    words = lexicon.vader_words()
    data = load_task_data(task, a.data_source, a.data_dir, (a.split,), max_eval_samples=a.max_examples)
    if data.source == "sample" and a.data_source != "sample":
        raise SystemExit(
            f"ssaf-explain: no real data for task {task.name} (no --data-dir, no SSAF_DATA_DIR, no hub): scores "
            "on ssaf's generated demo set mean nothing; set SSAF_DATA_DIR=../shared/data (or --data-dir), or "
            "pass --data-source sample to score the demo set anyway"
        )
    texts = list(data.splits[a.split]["text_a"])
    header = (
        f"# Attention as explanation: {task.name} {a.split} ({len(texts)} sentences, {data.origin[a.split]})\n\n"
        f"Lexicon: {lexicon.NAME}, {len(words)} words. Random baselines: {a.draws} draws per sentence and k, "
        f"seed {a.seed}. Intervals: bootstrap 95% over sentences (1,000 resamples)."
    )
    results = []
    for path in a.models:
        t0 = time.time()
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = task.record.load("head").from_pretrained(path)
        sentences = explain.explain_split(model, tokenizer, texts, words, task.max_seq_length, a.draws, a.seed)
        results.append(report.ModelResult(model_name(path), str(path), sentences))
        print(f"{results[-1].name}: {len(texts)} sentences in {time.time() - t0:.0f} s", file=sys.stderr)
        # After each model (a model takes minutes): an interrupted call keeps the models already scored.
        report.write(results, a.out, header)
    print(f"wrote {a.out / 'explain.md'}, explain.json, deletion_curve.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
