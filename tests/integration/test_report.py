"""Sweeps and comparisons: multirun with a failing job, W&B sweep definitions, the compare report, and the
attention pictures."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from ssaf import keys
from ssaf.config import to_settings
from ssaf.pipeline import identity
from ssaf.report import best_param, differences, find_run_dirs, group_runs, load_run, write_report
from ssaf.summary import Budget, DataInfo, Timing, write_summary

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
PNG = b"\x89PNG\r\n\x1a\n"


def fake_run(
    root: Path, name: str, attn: str, lam: float, seed: int, acc: float | None, zeros=0.5, status="completed",
    task="sst2", more: dict | None = None, budget: dict | None = None, own_lr: float | None = None,
    data: str = "local:abc",
):  # fmt: skip
    """A run directory as train.py writes it (its RunSummary), with known numbers (``more``: further final
    metrics; ``budget``: caps that differ from conf/trainer/default.yaml)."""
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "config.yaml").write_text("{}\n")
    if acc is None:
        return d  # crashed before writing metrics
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"task={task}", f"attn={attn}", f"attn.lam={lam}", f"seed={seed}"])
    s = to_settings(cfg, d)
    summary = identity(s, d)
    caps = {**summary.budget.__dict__, **(budget or {})}
    summary = replace(
        summary,
        status=status,
        error="loss is nan at step 3" if status == "failed" else None,
        budget=Budget(**caps),
        attn=replace(summary.attn, own_lr=own_lr if summary.attn.learned else None),
        data=DataInfo(source=data.split(":")[0], fingerprint=data),
        final={"eval_validation_accuracy": acc, "eval_validation_attn_zero_fraction": zeros, **(more or {})},
        attention={"eval_validation": {"zero_fraction": [[zeros, zeros], [zeros / 2, zeros / 2]]}},
        train=Timing(100.0 + seed, [100.0 + seed], 3, 1.0, 0.5, 10.0, 100.0 + seed, 1.0, False),
        history=[{"step": s, "loss": 1.0 / s} for s in (1, 2, 3)],
    )
    write_summary(d, summary)
    return d


def test_compare_aggregates_seeds_and_lists_runs_without_results(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "a", "sparse", -2.0, 1, 0.80, zeros=0.6)
    fake_run(runs, "b", "sparse", -2.0, 2, 0.84, zeros=0.7)
    fake_run(runs, "c", "sparse", 0.0, 1, 0.90, zeros=0.9)
    fake_run(runs, "d", "softmax", 0.0, 1, 0.85, zeros=0.0)
    fake_run(runs, "e", "softmax", 0.0, 2, 0.87, zeros=0.0)
    fake_run(runs, "crashed", "sparse", 0.5, 1, None)
    fake_run(runs, "nan", "sparse", 0.5, 2, 0.1, status="failed")
    out = tmp_path / "report"
    result = write_report([runs], out)
    table = result["table"]
    # sparse lam=-2: accuracy mean 82.00, sample std 2.83 over 2 seeds; zero fraction 0.650 +- 0.071
    setup = "all train ex, 3 ep, len 128, lr 2e-05, batch 16"  # conf/trainer/default.yaml
    # -4.00 points with stds 2.83 / 1.41: not beyond 2 std, so not significant
    assert (
        f"| sst2 | minilm | yes | {setup} | sparse | -2.0 | validation accuracy | 82.00 ± 2.83 | 2 | -4.00 (n.s.) "
        "| 0.156 (2 pairs) | 0.650 ± 0.071 | 102 ± 1 |" in table
    )
    assert (
        f"| sst2 | minilm | yes | {setup} | sparse | 0.0 | validation accuracy | 90.00 | 1 | "
        "+4.00 (untested: < 2 seeds) | - | 0.900 | 101 |" in table
    )
    softmax = f"| sst2 | minilm | yes | {setup} | softmax | - | validation accuracy | 86.00 ± 1.41 | 2 |"
    assert f"{softmax} - | - | 0.000 ± 0.000 |" in table
    assert "**2 run(s) without results**" in table
    assert "crashed" in table and "no metrics.json" in table and "loss is nan" in table
    # seeds 1 and 2 of both: paired differences -5 and -3 points, t = -4 with 1 degree of freedom
    assert "-4.00 (n.s.) | 0.156 (2 pairs) |" in table
    for name in ("metric_vs_param", "sparsity_by_layer", "training_curves", "time_per_epoch", "vs_softmax"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5000, name
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "82.00 ± 2.83" in html
    assert "![metric_vs_param](metric_vs_param.png)" in (out / "report.md").read_text()
    # report.html is report.md rendered: real tables (no Markdown pipes in a <pre>), every heading kept
    assert "<pre>" not in html and "|---|" not in html and "| sst2 |" not in html
    assert html.count("<table>") == 2 and "<h2>Task x attention</h2>" in html and "<h2>Every group</h2>" in html
    assert html.count("<td>82.00 ± 2.83</td>") == 1 and html.count("<td>82.00 ± 2.83 (2)</td>") == 1
    assert html.count("<tr>") == 1 + 1 + 1 + 3  # header + row of the grid, header + a row per group
    assert "<li><code>" in html and "loss is nan at step 3</li>" in html  # the runs without results, a list
    assert "table { border-collapse: collapse; width: 100%" in html  # fits the page (checked by eye, too)


def test_compare_marks_differences_beyond_two_std_and_keeps_setups_apart(tmp_path):
    runs = tmp_path / "runs"
    for seed, (soft, sparse) in enumerate([(0.850, 0.900), (0.851, 0.901), (0.852, 0.902)], start=1):
        fake_run(runs, f"soft{seed}", "softmax", 0.0, seed, soft)
        fake_run(runs, f"sparse{seed}", "sparse", -1.0, seed, sparse)
    # The same attention at another training budget is another row, never averaged with these.
    fake_run(runs, "small", "sparse", -1.0, 1, 0.5, budget={"max_train_samples": 100})
    result = write_report([runs], tmp_path / "report")
    table, grid = result["table"], result["grid"]
    assert "| 90.10 ± 0.10 | 3 | +5.00 (> 2 std) | 0.000 (3 pairs) |" in table
    assert (
        "| 100 train ex, 3 ep, len 128, lr 2e-05, batch 16 | sparse | -1.0 | validation accuracy | 50.00 | 1 | - |"
        in table
    )
    # the task x attention grid: the same comparison, one row per budget, an empty cell where nothing ran
    assert grid.splitlines()[0] == "| task | model | pre-trained | metric | softmax | sparse -1 |"
    setup = "all train ex, 3 ep, len 128, lr 2e-05, batch 16"
    row = "| minilm | yes | validation accuracy |"
    assert f"| sst2 ({setup}; data local:abc) {row} 85.10 ± 0.10 (3) | 90.10 ± 0.10 (3) * |" in grid
    small_row = f"| sst2 (100 train ex, 3 ep, len 128, lr 2e-05, batch 16; data local:abc) {row}  | 50.00 (1) |"
    assert small_row in grid
    assert grid in (tmp_path / "report" / "report.md").read_text()


def test_a_learned_attention_at_its_own_learning_rate_is_its_own_column_against_the_same_softmax(tmp_path):
    runs = tmp_path / "runs"
    for seed in (1, 2):
        fake_run(runs, f"soft{seed}", "softmax", 0.0, seed, 0.85)
        fake_run(runs, f"same{seed}", "learned_alpha", 0.0, seed, 0.80)
        fake_run(runs, f"own{seed}", "learned_alpha", 0.0, seed, 0.88 + seed / 100, own_lr=0.01)
    grid = write_report([runs], tmp_path / "report")["grid"]
    assert (
        grid.splitlines()[0]
        == "| task | model | pre-trained | metric | softmax | learned_alpha 1.5 | learned_alpha (lr 0.01) 1.5 |"
    )
    assert "| 85.00 ± 0.00 (2) | 80.00 ± 0.00 (2) * | 89.50 ± 0.71 (2) * |" in grid


def test_every_evaluation_split_gets_its_own_row(tmp_path):
    # SemEval is evaluated on dev and test: both are reported, each compared with softmax on the same split,
    # while sweeps select on (and plots show) the first split only.
    runs = tmp_path / "runs"
    for seed, (soft, sparse) in enumerate([(0.60, 0.70), (0.62, 0.72)], start=1):
        for attn, lam, dev, test in [("softmax", 0.0, 0.80, soft), ("sparse", -1.0, 0.81, sparse)]:
            fake_run(
                runs, f"{attn}{seed}", attn, lam, seed, dev, task="semeval",
                more={"eval_test_accuracy": test, "eval_test_attn_zero_fraction": 0.25 * seed},
            )  # fmt: skip
    fake_run(runs, "no_test", "sparse", -2.0, 1, 0.9, task="semeval")  # a run that never reached its test eval
    result = write_report([runs], tmp_path / "report")
    table, grid = result["table"], result["grid"]
    # grid columns: softmax, then SSAF by lam; lam -2 has no test result (empty), one seed (no *)
    row = "| semeval | minilm | yes |"
    assert f"{row} test accuracy | 61.00 ± 1.41 (2) |  | 71.00 ± 1.41 (2) * |" in grid
    assert f"{row} validation accuracy | 80.00 ± 0.00 (2) | 90.00 (1) | 81.00 ± 0.00 (2) * |" in grid
    sparse = "| semeval | minilm | yes | all train ex, 3 ep, len 128, lr 2e-05, batch 16 | sparse | -1.0 |"
    assert (
        f"{sparse} validation accuracy | 81.00 ± 0.00 | 2 | +1.00 (> 2 std) | 0.000 (2 pairs) | 0.500 ± 0.000 |"
        in table
    )
    assert f"{sparse} test accuracy | 71.00 ± 1.41 | 2 | +10.00 (> 2 std) | 0.000 (2 pairs) | 0.375 ± 0.177 |" in table
    assert "| softmax | - | test accuracy | 61.00 ± 1.41 | 2 | - |" in table
    assert "| sparse | -2.0 | test accuracy | - | 0 | - | - |" in table
    groups = group_runs([load_run(d) for d in find_run_dirs([runs])])
    assert best_param(groups, "sparse") == -2.0  # chosen on the dev split (90 > 81), not on test
    diffs = {name: (round(d, 6), round(half, 6), min(n, nb)) for name, d, half, n, nb in differences(groups)}
    assert diffs["semeval sparse -1, test"] == (10.0, round(2 * 100 * 0.0002**0.5, 6), 2)  # 2 x std of 0.70, 0.72
    assert diffs["semeval sparse -2, validation"][::2] == (10.0, 1) and math.isnan(
        diffs["semeval sparse -2, validation"][1]
    )  # one seed: no threshold
    assert "semeval sparse -2, test" not in diffs  # no test result, no bar
    fake_run(runs, "softmax3", "softmax", 0.0, 3, 0.80, task="semeval")  # 3 softmax seeds vs 1 sparse -2 seed
    groups = group_runs([load_run(d) for d in find_run_dirs([runs])])
    row = next(r for r in differences(groups) if r[0] == "semeval sparse -2, validation")
    assert math.isnan(row[2]) and row[3:] == (1, 3)  # untested, and the plot can say 1 seed against 3


def test_the_plots_say_what_they_show(tmp_path, monkeypatch):
    """Checked by eye as well; here what a test can see: integer layer ticks, opaque curves with softmax on
    top and in its legend colour, seed counts per group against softmax's, error bars named."""
    import matplotlib

    matplotlib.use("Agg")
    from ssaf.report import plots

    runs = tmp_path / "runs"
    for seed in (1, 2, 3):
        fake_run(runs, f"sparse{seed}", "sparse", -2.0, seed, 0.80 + seed / 100)
    fake_run(runs, "soft", "softmax", 0.0, 1, 0.85)  # one softmax seed: every comparison is untested
    groups = group_runs([load_run(d) for d in find_run_dirs([runs])])
    figs = {}
    monkeypatch.setattr(plots, "save", lambda fig, path: figs.setdefault(path.stem, fig) and path)
    for plot in plots.PLOTS:
        plot(groups, tmp_path)
    layer_ax = figs["sparsity_by_layer"].axes[0]
    lo, hi = layer_ax.get_xlim()
    assert [t for t in layer_ax.get_xticks() if lo <= t <= hi] == [0, 1]  # two layers, no 0.2 ticks
    curves = figs["training_curves"].axes[0]
    assert all(line.get_alpha() in (None, 1) for line in curves.lines)  # translucent lines blend colours
    soft = [line for line in curves.lines if line.get_color() == "black"]
    assert len(soft) == 1 and soft[0].get_zorder() > max(li.get_zorder() for li in curves.lines if li not in soft)
    legend = {
        t.get_text(): h.get_color()
        for t, h in zip(curves.get_legend().texts, curves.get_legend().legend_handles, strict=True)
    }
    assert legend == {"sst2 softmax": "black", "sst2 sparse -2": curves.lines[0].get_color()}
    vs = figs["vs_softmax"].axes[0]
    assert [t.get_text() for t in vs.get_yticklabels()] == ["sst2 sparse -2, validation (n=3; softmax n=1)"]
    assert "hollow: untested: < 2 seeds on either side" in vs.get_xlabel() and "1 seed" not in vs.get_xlabel()
    assert "± 1 std" in figs["metric_vs_param"].axes[0].get_legend().get_title().get_text()


def test_the_zeros_summary_colorbar_stays_clear_of_the_titles():
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    from ssaf.viz import zero_fraction_figure

    probs = [np.random.default_rng(i).random((6, 12, 9, 9)) for i in range(2)]
    fig = zero_fraction_figure(probs, ["outputs/sst2/softmax", "outputs/sst2/sparse"])
    r = fig.canvas.get_renderer()
    fig.draw(r)
    panels, colorbar = fig.axes[:2], fig.axes[-1]
    bar = colorbar.get_window_extent(r)
    for ax in panels:
        assert not bar.overlaps(ax.title.get_window_extent(r)), ax.title.get_text()
        assert not bar.overlaps(ax.get_window_extent(r))


def test_a_rerun_of_the_same_configuration_and_seed_is_counted_once(tmp_path):
    runs = tmp_path / "runs"
    old = fake_run(runs, "sweep_point", "sparse", -1.0, 1, 0.70)
    os.utime(old / "metrics.json", (1_000_000, 1_000_000))  # older
    fake_run(runs, "headline_s1", "sparse", -1.0, 1, 0.80)
    fake_run(runs, "headline_s2", "sparse", -1.0, 2, 0.84)
    table = write_report([runs], tmp_path / "report")["table"]
    assert "| sparse | -1.0 | validation accuracy | 82.00 ± 2.83 | 2 |" in table  # 0.70 is not counted
    assert "**1 duplicate run(s)** (not counted)" in table and "sweep_point" in table
    assert "without results" not in table


def test_best_param_picks_the_sweeps_best_mean_and_refuses_mixed_sweeps(tmp_path):
    runs = tmp_path / "runs"
    for name, lam, seed, acc in [("a", -2.0, 1, 0.80), ("b", -2.0, 2, 0.90), ("c", -1.0, 1, 0.84), ("d", 0.0, 1, 0.86)]:
        fake_run(runs, name, "sparse", lam, seed, acc)
    fake_run(runs, "soft", "softmax", 0.0, 1, 0.99)  # not a sparse run: never the answer
    cli = [sys.executable, "-m", "ssaf.report", str(runs), "--best-param", "sparse"]
    r = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stderr  # mean 86 beats -2's 85 and -1's 84
    assert best_param(group_runs([load_run(d) for d in find_run_dirs([runs])]), "sparse") == 0.0
    fake_run(runs, "small", "sparse", -1.0, 1, 0.95, budget={"max_train_samples": 100})
    r = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "span 2 task/model/data/budget settings" in r.stderr
    r = subprocess.run([*cli[:-1], "entmax"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "no completed 'entmax' runs" in r.stderr


def test_compare_cli_reports_an_empty_root_clearly(tmp_path):
    r = subprocess.run(
        [sys.executable, "scripts/compare.py", str(tmp_path), "--out", str(tmp_path / "r")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode != 0 and "no run directories" in r.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_wandb_sweep_definitions_compose_to_valid_configs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("SSAF_DATA_DIR", str(tmp_path))  # the CPU presets read local data
    sweep = yaml.safe_load(path.read_text())
    assert sweep["program"] == "train.py"
    assert "${args_no_hyphens}" in sweep["command"], "Hydra takes key=value, not --key=value"
    # The corners of every parameter: what `wandb agent` would pass as key=value arguments.
    choices = []
    for key, spec in sweep["parameters"].items():
        if "value" in spec:
            vals = [spec["value"]]
        elif "values" in spec:
            vals = spec["values"]
        else:
            vals = [spec["min"], spec["max"]]
        choices.append([f"{key}={v}" for v in vals])
    combos = [[c[0] for c in choices], [c[-1] for c in choices]]
    for overrides in combos:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        s = to_settings(cfg, tmp_path)
        assert s.attn_name == dict(o.split("=", 1) for o in overrides)["attn"]
    # the selected checkpoint's metric, in the run summary (the last evaluation's is the curve's last point)
    assert sweep["metric"]["name"] == keys.final(keys.metric(s.task.eval_splits[0], s.task.metric_for_best))


def test_multirun_runs_every_job_and_lists_the_failed_one(tmp_path):
    r = subprocess.run(
        [sys.executable, "train.py", "-m", "experiment=smoke", "trainer.max_steps=2", "trainer.eval_every=2",
         "attn=sparse", "attn.lam=0.5,1.5,-1", f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ},
    )  # fmt: skip
    out = r.stdout + r.stderr
    assert r.returncode != 0, "a failed job makes the sweep fail"
    assert "multirun: 3 jobs, 2 completed, 1 failed" in out
    failed = [line for line in out.splitlines() if line.strip().startswith("FAILED")]
    assert len(failed) == 1 and failed[0].rstrip().endswith("attn=sparse attn.lam=1.5")
    assert "ConfigError: attn.lam must be finite and < 1, got 1.5" in out
    status = {p.parent.name: json.loads(p.read_text())["status"] for p in tmp_path.glob("*/metrics.json")}
    assert status == {"0_sst2_sparse": "completed", "1_sst2_sparse": "rejected", "2_sst2_sparse": "completed"}, (
        "the jobs after the failing one still ran, and the rejected one's folder says so"
    )
    summary = json.loads((tmp_path / "multirun_summary.json").read_text())
    assert [j["status"] for j in summary] == ["completed", "failed", "completed"]


def test_visualize_attention_writes_readable_pictures(tmp_path):
    from ssaf.pipeline import run

    dirs = {}
    for attn in ("softmax", "sparse"):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=["experiment=smoke", f"attn={attn}", "trainer.max_steps=2",
                                               "trainer.eval_every=2", "trainer.max_eval_samples=8"])  # fmt: skip
        run(cfg, tmp_path / attn)
        dirs[attn] = tmp_path / attn / "model"
    out = tmp_path / "pics"
    r = subprocess.run(
        [sys.executable, "scripts/visualize_attention.py", str(dirs["softmax"]), str(dirs["sparse"]),
         "--text", "a gripping , beautifully acted film", "--names", "softmax", "sparse", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("softmax_all_heads", "sparse_all_heads", "side_by_side", "zeros_summary"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10000, name


STUB = """#!/usr/bin/env bash
# Stands in for the venv's python: logs each train.py multirun, answers --best-param with -2.
if [ "$1" = -m ]; then echo "REPORT ${*:2}" >> "$LOG"; echo -2; exit 0; fi
for a in "$@"; do case "$a" in hydra.sweep.dir=*) mkdir -p "${a#hydra.sweep.dir=}" ;; esac; done
echo "RUN ${*:3}" >> "$LOG"
"""


def reproduce(tmp_path: Path, *stages: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run scripts/reproduce_cpu_scale.sh with a stub python; returns the result and the logged commands."""
    stub, log = tmp_path / "py", tmp_path / "log"
    stub.write_text(STUB)
    stub.chmod(0o755)
    log.write_text("")
    env = {**os.environ, "PYTHON": str(stub), "LOG": str(log), "SSAF_DATA_DIR": str(tmp_path),
           "STUDY_DIR": str(tmp_path / "study"), "REPORT_DIR": str(tmp_path / "report"), **env}  # fmt: skip
    r = subprocess.run(
        ["bash", "scripts/reproduce_cpu_scale.sh", *stages], cwd=ROOT, env=env, capture_output=True, text=True
    )
    return r, log.read_text().splitlines()


def test_reproduce_script_runs_each_part_once_at_the_chosen_lam_and_evaluates_once(tmp_path):
    r, log = reproduce(tmp_path, "sst5", "lam")
    assert r.returncode != 0 and "SPARSE_LAM=auto needs the lam stage" in r.stderr  # sst5 runs before lam
    assert "== sst5/sparse: FAILED" in r.stderr and "sst5/others" not in r.stderr  # the others went on
    others = "attn=sparsemax,entmax15,learned_alpha trainer.attn_learning_rate=0.1 seed=1,2,3"
    assert f"task=sst5 trainer.max_seq_length=128 {others}" in log[1]
    r, log = reproduce(tmp_path, "lam", "sst5", "nopretrain", "barnes", "squad", "report")
    assert r.returncode == 0, r.stderr
    runs = [line for line in log if line.startswith("RUN")]
    assert all("trainer.eval_every=0" in line for line in runs)  # no checkpoint chosen on the reported dev set
    study = tmp_path / "study"
    assert f"attn=sparse attn.lam=-2 seed=1,2,3 trainer.eval_every=0 hydra.sweep.dir={study}/sst5/sparse" in runs[0]
    assert any("experiment=no_pretraining attn=sparse attn.lam=-2,0 seed=1,2,3" in line for line in runs)
    assert not any((study / s / "others").exists() for s in ("nopretrain", "barnes", "squad"))
    squad = "task=squad data.source=local attn="
    assert any(f"{squad}sparse attn.lam=-2 attn.backend=compiled seed=42" in line for line in runs)
    assert any(f"{squad}softmax seed=42" in line for line in runs)
    assert sum(f"{study}/sst5/" in line for line in runs) == 1  # base and others completed in the first call
    assert (
        log[-1]
        == f"REPORT ssaf.report {study} --out {tmp_path / 'report'} --title ssaf: CPU-scale reproduction of SSAF"
    )
    r, _ = reproduce(tmp_path, "glue")
    assert r.returncode == 2 and "unknown stage 'glue'" in r.stderr


PROTOCOL_STUB = """#!/usr/bin/env bash
# Stands in for the venv's python in scripts/reproduce.sh: logs each call; a train.py run writes a completed
# metrics.json and a model/ into its run dir unless its dir is named in $FAIL; --best-param answers $BEST (-2).
if [ "$1" = -m ]; then echo "REPORT ${*:2}" >> "$LOG"; echo "${BEST:--2}"; exit 0; fi
for a in "$@"; do case "$a" in hydra.run.dir=*) dir="${a#hydra.run.dir=}" ;; esac; done
echo "RUN $*" >> "$LOG"
if [ -n "${FAIL:-}" ] && [ "$dir" = "$FAIL" ]; then exit 1; fi
mkdir -p "$dir/model" && echo '{"status": "completed"}' > "$dir/metrics.json" && echo '{}' > "$dir/model/config.json"
"""


def protocol(tmp_path: Path, *stages: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    stub, log = tmp_path / "py", tmp_path / "log"
    stub.write_text(PROTOCOL_STUB)
    stub.chmod(0o755)
    log.write_text("")
    env = {**os.environ, "PYTHON": str(stub), "LOG": str(log), "SSAF_DATA_DIR": str(tmp_path),
           "STUDY_DIR": str(tmp_path / "study"), "REPORT_DIR": str(tmp_path / "report"),
           "DATASETS": "sst2_sentences semeval", **env}  # fmt: skip
    r = subprocess.run(["bash", "scripts/reproduce.sh", *stages], cwd=ROOT, env=env, capture_output=True, text=True)
    return r, log.read_text().splitlines()


def test_the_paper_protocol_sweeps_lam_on_dev_then_runs_the_seeds_at_each_datasets_choice(tmp_path):
    study = tmp_path / "study"
    r, log = protocol(tmp_path, "seeds")
    assert r.returncode == 1 and "no best lam for sst2_sentences: run the sweep stage first" in r.stderr
    r, log = protocol(tmp_path)
    assert r.returncode == 0, r.stderr
    runs = [line for line in log if line.startswith("RUN")]
    assert all(line.startswith("RUN train.py experiment=paper_cpu") for line in runs)
    sweep = [line for line in runs if "/sweep/" in line]
    assert len(sweep) == 10  # 2 datasets x 5 lams, seed 1 only
    assert any("task=semeval attn=sparse attn.lam=-4 seed=1" in line for line in sweep)
    assert (study / "sweep" / "semeval" / "best_lam").read_text().strip() == "-2"
    seeds = [line for line in runs if "/seeds/" in line and "/sparse_lam0_" not in line]
    # softmax on seeds 1-3, SSAF at the chosen lam on seeds 2-3 (seed 1 is the sweep's run at that lam)
    assert len(seeds) == 2 * (3 + 2)
    # explain: sparsemax on SST-2's seeds 2-3 (the rest are runs of the stages before), then the scoring
    assert [line.split("/seeds/")[1] for line in runs if "/sparse_lam0_" in line] == [
        "sst2_sentences/sparse_lam0_s2",
        "sst2_sentences/sparse_lam0_s3",
    ]
    assert [line.split()[-1] for line in log if line.startswith("REPORT ssaf.explain.cli")] == [
        f"{tmp_path / 'report' / 'explain' / d}" for d in ("sst2_sentences", "semeval")
    ]
    third = f"seed=3 logger.mode=offline hydra.run.dir={study}/seeds/semeval/sparse_lam-2_s3"
    assert any(f"task=semeval attn=sparse attn.lam=-2 {third}" in line for line in seeds)
    assert not any("attn=sparse attn.lam=-2 seed=1" in line for line in seeds)
    np = [line for line in runs if "/nopretrain/" in line]
    assert len(np) == 6 and all("task=sst2_sentences model.pretrained=false" in line for line in np)
    archive = tmp_path / "report" / "runs"
    assert log[-1].startswith(f"REPORT ssaf.report {archive} --paper --out {tmp_path / 'report'}")
    # the report reads the archive: every completed run's metrics.json, at its path under the study
    archived = sorted(p.relative_to(archive) for p in archive.rglob("metrics.json"))
    # 26 runs of the sweep, seeds and Np stages; explain adds sparsemax on SST-2's seeds 2-3 (its seed 1 and
    # SemEval's are the sweep's lam = 0 runs, softmax and SSAF are the seeds stage's)
    assert archived == sorted(p.relative_to(study) for p in study.rglob("metrics.json")) and len(archived) == 28
    # everything completed: a second call runs nothing; an unfinished run is resumed from its checkpoint
    unfinished = study / "seeds" / "semeval" / "softmax_s2"
    (unfinished / "metrics.json").write_text('{"status": "interrupted"}')
    (unfinished / "checkpoints" / "checkpoint-100").mkdir(parents=True)
    (archive / "seeds" / "semeval" / "softmax_s2" / "metrics.json").unlink()
    protocol(tmp_path, "report")
    assert not (archive / "seeds" / "semeval" / "softmax_s2" / "metrics.json").exists()  # unfinished: not archived
    (study / "sweep" / "semeval" / "sparse_lam0" / "metrics.json").unlink()
    protocol(tmp_path, "report")
    assert (archive / "sweep" / "semeval" / "sparse_lam0" / "metrics.json").exists()  # kept: from another clone
    r, log = protocol(tmp_path, "sweep", "seeds")
    runs = [line for line in log if line.startswith("RUN")]
    assert (
        r.returncode == 0
        and len(runs) == 2  # the unfinished run resumed, the deleted one run again
        and f"hydra.run.dir={study}/sweep/semeval/sparse_lam0" in runs[0]
        and runs[1].endswith(f"resume={unfinished} logger.mode=offline hydra.run.dir={unfinished}.resuming")
    )
    r, _ = protocol(tmp_path, "glue")
    assert r.returncode == 2 and "unknown stage 'glue'" in r.stderr


def test_the_explain_stage_scores_softmax_ssaf_at_the_best_lam_and_sparsemax_reusing_the_runs_it_finds(tmp_path):
    study = tmp_path / "study"
    r, _ = protocol(tmp_path, "explain", EXPLAIN="semeval:1")
    assert r.returncode == 1 and "no best lam for semeval: run the sweep stage first" in r.stderr
    for d, lam in (("sst2_sentences", "-16"), ("semeval", "-4")):  # a best lam the sweep did not write
        (study / "sweep" / d).mkdir(parents=True)
        (study / "sweep" / d / "best_lam").write_text(lam + "\n")
    r, log = protocol(tmp_path, "seeds")  # softmax 1-3, SSAF at the best lam 2-3: reused by explain
    assert r.returncode == 0, r.stderr
    r, log = protocol(tmp_path, "explain", EXPLAIN="sst2_sentences:1,2 semeval:1", EXPLAIN_ARGS="--max-examples 9")
    assert r.returncode == 0, r.stderr
    runs = [line.split("hydra.run.dir=")[1] for line in log if line.startswith("RUN")]
    assert runs == [  # the seeds stage's runs are reused; the sweep's runs at the best lam and at 0 trained
        f"{study}/sweep/sst2_sentences/sparse_lam-16",
        f"{study}/sweep/sst2_sentences/sparse_lam0",
        f"{study}/seeds/sst2_sentences/sparse_lam0_s2",
        f"{study}/sweep/semeval/sparse_lam-4",
        f"{study}/sweep/semeval/sparse_lam0",
    ]
    assert "task=sst2_sentences attn=sparse attn.lam=0 seed=2 " in next(line for line in log if "lam0_s2" in line)
    scored = [line for line in log if line.startswith("REPORT ssaf.explain.cli")]
    sst2 = " ".join(
        f"{study}/{run}/model"
        for run in ("seeds/sst2_sentences/softmax_s1", "sweep/sst2_sentences/sparse_lam-16",
                    "sweep/sst2_sentences/sparse_lam0", "seeds/sst2_sentences/softmax_s2",
                    "seeds/sst2_sentences/sparse_lam-16_s2", "seeds/sst2_sentences/sparse_lam0_s2")
    )  # fmt: skip
    out = tmp_path / "report" / "explain"
    options = f"--task sst2_sentences --split test --out {out}/sst2_sentences --max-examples 9"
    assert scored[0] == f"REPORT ssaf.explain.cli {sst2} {options}"
    assert scored[1].startswith(f"REPORT ssaf.explain.cli {study}/seeds/semeval/softmax_s1/model ") and len(scored) == 2
    # a completed run without its model (metrics copied from an archive) is refused, naming the folder
    (study / "sweep" / "semeval" / "sparse_lam0" / "model" / "config.json").unlink()
    r, log = protocol(tmp_path, "explain", EXPLAIN="semeval:1")
    assert r.returncode == 1 and f"{study}/sweep/semeval/sparse_lam0 is completed but keeps no model/" in r.stderr
    assert not [line for line in log if line.startswith("RUN")]
    # the best lam is 0: sparsemax is SSAF's run, trained and scored once
    (study / "sweep" / "semeval" / "best_lam").write_text("0\n")
    (study / "sweep" / "semeval" / "sparse_lam0" / "model" / "config.json").write_text("{}")
    r, log = protocol(tmp_path, "explain", EXPLAIN="semeval:1")
    assert r.returncode == 0 and log[-1].count("/model") == 2, log
    for bad in ("semeval", "semeval:", ":1"):
        r, _ = protocol(tmp_path, "explain", EXPLAIN=bad)
        assert r.returncode == 1 and f"EXPLAIN entry '{bad}': write dataset:seeds" in r.stderr
