#!/usr/bin/env bash
# The SSAF paper's protocol on the paper's data (docs/RESULTS.md, first part): the sentiment sets of
# Barnes et al. (2017) at sentence level, lam chosen per dataset on dev, test accuracy over seeds.
#
#   SSAF_DATA_DIR=../shared/data bash scripts/reproduce.sh [STAGE ...]
#
# Stages, in order (each run is its own train.py call into its own folder under $STUDY_DIR; a completed run
# is skipped, an unfinished one resumed from its newest checkpoint, so an interrupted study goes on where
# it stopped):
#   sweep       per dataset in $DATASETS: SSAF (attn=sparse) at every lam in $LAMS, seed 1, on dev; the lam
#               with the best dev accuracy is written to $STUDY_DIR/sweep/<dataset>/best_lam (one seed is
#               what the sweep can afford; the seeds stage then runs the chosen lam on all of them)
#   seeds       per dataset: softmax on seeds $SEEDS, SSAF at the dataset's best lam on the other seeds of
#               $SEEDS (seed 1 is the sweep's run at that lam: the same configuration, run once)
#   nopretrain  the "Np" ablation on SST-2 sentences: model.pretrained=false, softmax and SSAF at SST-2's
#               best lam, seeds $SEEDS
#   explain     the paper's second claim ("a more interpretable representation"), measured: for each
#               "dataset:seed,seed" in $EXPLAIN (default "sst2_sentences:1,2,3 semeval:1"), softmax, SSAF at the
#               dataset's best lam and sparsemax (SSAF at lam 0) on those seeds, each the seeds or sweep stage's
#               run where that exists; then ssaf-explain over those models on the test split ->
#               $REPORT_DIR/explain/<dataset>/ (extra options in $EXPLAIN_ARGS, e.g. "--max-examples 500")
#   report      every completed run's metrics.json copied to $ARCHIVE_DIR ($REPORT_DIR/runs: commit it with
#               the report, it is what the numbers trace to), then ssaf-compare --paper over the archive ->
#               $REPORT_DIR (the paper's table, the lam curves)
#
# Every run is experiment=paper_cpu (conf/experiment/paper_cpu.yaml: the packaged MiniLM, AdamW lr 2e-5,
# batch 16, 3 epochs on the full training set, dev after every epoch selects the checkpoint, test once on
# it). Extra Hydra overrides for every run go in $EXTRA (e.g. EXTRA="trainer.epochs=1" for a quick pass;
# it is part of every run's budget, so the report keeps it apart). On 2 cores an SST-2 run takes ~10-15 min.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
STUDY_DIR="${STUDY_DIR:-outputs/paper}"
STUDY_DIR="${STUDY_DIR%/}"  # the archive keeps run paths relative to it
REPORT_DIR="${REPORT_DIR:-docs/results/paper}"
ARCHIVE_DIR="${ARCHIVE_DIR:-$REPORT_DIR/runs}"
DATASETS="${DATASETS:-sst2_sentences sst5 semeval sentube_auto sentube_tablets}"
LAMS="${LAMS:--8 -4 -2 -1 0}"
SEEDS="${SEEDS:-1 2 3}"
EXTRA="${EXTRA:-}"
EXPLAIN="${EXPLAIN:-sst2_sentences:1,2,3 semeval:1}"
EXPLAIN_ARGS="${EXPLAIN_ARGS:-}"
: "${SSAF_DATA_DIR:?set SSAF_DATA_DIR to the folder with sst_sentences/ and sentiment_barnes/ (e.g. ../shared/data)}"
export SSAF_DATA_DIR
STAGES=(sweep seeds nopretrain explain report)

completed() {  # completed FILE: whether the metrics.json FILE is a completed run's
  [ -f "$1" ] && grep -q '"status": "completed"' "$1"
}

one() {  # one DIR OVERRIDES...: a train.py run into DIR; skipped when completed, resumed when unfinished
  local dir="$1"; shift
  if completed "$dir/metrics.json"; then
    echo "== $dir: completed"
    return
  fi
  local resume=() into="$dir"
  if compgen -G "$dir/checkpoints/checkpoint-*" > /dev/null; then
    # Hydra's folder for the command is elsewhere: launched into $dir it would rewrite the run's .hydra/
    # config before ssaf checks the command against it. The resume continues in $dir and removes it.
    resume=("resume=$dir") into="$dir.resuming"
  fi
  echo "== $dir: $* $EXTRA ${resume[*]}"
  # shellcheck disable=SC2086  # EXTRA is a list of overrides
  "$py" train.py experiment=paper_cpu "$@" $EXTRA "${resume[@]}" logger.mode=offline hydra.run.dir="$into"
}

best_lam() {  # best_lam DATASET: the lam its sweep chose (the sweep must be complete)
  local f="$STUDY_DIR/sweep/$1/best_lam"
  if [ ! -f "$f" ]; then
    echo "no best lam for $1: run the sweep stage first ($f is missing)" >&2
    return 1
  fi
  cat "$f"
}

sweep() {
  local d lam
  for d in $DATASETS; do
    for lam in $LAMS; do
      one "$STUDY_DIR/sweep/$d/sparse_lam$lam" "task=$d" attn=sparse "attn.lam=$lam" seed=1 || return 1
    done
    "$py" -m ssaf.report "$STUDY_DIR/sweep/$d" --best-param sparse > "$STUDY_DIR/sweep/$d/best_lam"
    echo "== $d: best lam on dev $(cat "$STUDY_DIR/sweep/$d/best_lam")"
  done
}

run_dir() {  # run_dir DATASET softmax|LAM SEED: that run's folder (SSAF's seed 1 is the sweep's run)
  if [ "$2" = softmax ]; then
    echo "$STUDY_DIR/seeds/$1/softmax_s$3"
  elif [ "$3" = 1 ]; then
    echo "$STUDY_DIR/sweep/$1/sparse_lam$2"
  else
    echo "$STUDY_DIR/seeds/$1/sparse_lam${2}_s$3"
  fi
}

run() {  # run DATASET softmax|LAM SEED: that run, into run_dir's folder
  if [ "$2" = softmax ]; then
    one "$(run_dir "$@")" "task=$1" attn=softmax "seed=$3"
  else
    one "$(run_dir "$@")" "task=$1" attn=sparse "attn.lam=$2" "seed=$3"
  fi
}

seeds() {
  local d s lam
  for d in $DATASETS; do
    lam="$(best_lam "$d")" || return 1
    for s in $SEEDS; do
      run "$d" softmax "$s" || return 1
      if [ "$s" != 1 ]; then  # seed 1 is the sweep's run
        run "$d" "$lam" "$s" || return 1
      fi
    done
  done
}

nopretrain() {
  local s lam
  lam="$(best_lam sst2_sentences)" || return 1
  for s in $SEEDS; do
    one "$STUDY_DIR/nopretrain/softmax_s$s" task=sst2_sentences model.pretrained=false attn=softmax "seed=$s" || return 1
    one "$STUDY_DIR/nopretrain/sparse_lam${lam}_s$s" task=sst2_sentences model.pretrained=false attn=sparse \
      "attn.lam=$lam" "seed=$s" || return 1
  done
}

explain() {
  local spec d seeds lam attn s dir models
  for spec in $EXPLAIN; do
    d="${spec%%:*}" seeds="${spec#*:}"
    if [ "$d" = "$spec" ] || [ -z "$d" ] || [ -z "$seeds" ]; then
      echo "EXPLAIN entry '$spec': write dataset:seeds, e.g. EXPLAIN=\"sst2_sentences:1,2,3 semeval:1\"" >&2
      return 1
    fi
    lam="$(best_lam "$d")" || return 1
    local attns=(softmax "$lam" 0)
    [ "$lam" = 0 ] && attns=(softmax 0)  # the best lam is sparsemax's: trained and scored once
    models=()
    for s in ${seeds//,/ }; do  # seed by seed: an interrupted scoring has whole seeds of every attention
      for attn in "${attns[@]}"; do
        run "$d" "$attn" "$s" || return 1
        dir="$(run_dir "$d" "$attn" "$s")"
        if [ ! -f "$dir/model/config.json" ]; then
          echo "$dir is completed but keeps no model/ (its metrics.json copied from an archive?): move the" \
            "folder away and run the stage again to retrain it" >&2
          return 1
        fi
        models+=("$dir/model")
      done
    done
    # shellcheck disable=SC2086  # EXPLAIN_ARGS is a list of options
    "$py" -m ssaf.explain.cli "${models[@]}" --task "$d" --split test --out "$REPORT_DIR/explain/$d" \
      $EXPLAIN_ARGS || return 1
  done
}

report() {
  # The report is written from an archive, not from the study folder: each completed run's metrics.json
  # (~25 kB; no checkpoints, no W&B files) is copied to $ARCHIVE_DIR, which is committed with the report.
  # Run folders live in a clone's outputs/ and are lost with it; the archive keeps every number traceable
  # and lets a study that spans several clones report all of its runs.
  local f rel n=0
  while IFS= read -r -d '' f; do
    completed "$f" || continue
    rel="${f#"$STUDY_DIR"/}"
    mkdir -p "$ARCHIVE_DIR/$(dirname "$rel")"
    cp "$f" "$ARCHIVE_DIR/$rel"
    n=$((n + 1))
  done < <(find "$STUDY_DIR" -name metrics.json -not -path "*/checkpoints/*" -print0)
  echo "== $n completed run(s) of $STUDY_DIR archived in $ARCHIVE_DIR"
  "$py" -m ssaf.report "$ARCHIVE_DIR" --paper --out "$REPORT_DIR" --title "ssaf: the SSAF paper's protocol at CPU scale"
}

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=("${STAGES[@]}")
for s in "${stages[@]}"; do
  if [[ ! " ${STAGES[*]} " =~ \ $s\  ]]; then
    echo "unknown stage '$s'; stages: ${STAGES[*]}" >&2
    exit 2
  fi
done
for s in "${stages[@]}"; do
  "$s" || { echo "stage $s failed: see the log above; running the script again resumes it" >&2; exit 1; }
done
