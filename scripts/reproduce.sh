#!/usr/bin/env bash
# The CPU-scale reproduction of the SSAF paper (docs/RESULTS.md): every run of the study, then the
# comparison report that the tables and plots of RESULTS.md come from.
#
#   SSAF_DATA_DIR=../shared/data bash scripts/reproduce.sh [STAGE ...]
#
# Stages, in the default order (each is one or two Hydra multiruns into $STUDY_DIR/<stage>/<part>; a part
# already complete there is skipped, so an interrupted study resumes where it stopped):
#   lam         SST-2, sparse, lam in $LAMS, seed 1: the dev sweep that chooses lam, and the lam plot
#   headline    SST-2: softmax / sparsemax / entmax15 / learned_alpha (part base) and sparse (part sparse),
#               seeds $HEADLINE_SEEDS
#   nopretrain  SST-2 from random init (model.pretrained=false), softmax / sparse, seeds $SEEDS
#   sst5        SST-5 (the paper's SST-1), softmax / sparse, seeds $SEEDS
#   mnli        MNLI (8000 pairs of the train subset; dev matched capped at 2000 + mismatched), softmax /
#               sparse, seeds $SEEDS
#   squad       SQuAD v1.1 (3000 training questions; the full dev set), softmax / sparse, seed 1
#   report      ssaf-compare over $STUDY_DIR (and $EXTRA_ROOTS) -> $REPORT_DIR (report.md, report.html, plots)
#
# The sparse rows use SPARSE_LAM: "auto" (default) takes the lam with the best dev accuracy in the lam
# stage, which must then be complete; a number overrides it.
#
# LANES=2 runs two lanes side by side, each with half the cores: one runs the lam sweep and then every
# sparse part, the other every part that does not depend on lam (logs: $STUDY_DIR/lane-{sparse,base}.log).
# It does not buy throughput on 2 CPU cores (measured: two 1-thread runs side by side took 8-9.5 minutes
# each, one 2-thread run ~4), so the default is LANES=1: everything in order, all cores per run.
#
# Every training cap is in conf/experiment/*.yaml (or below) and in the report's "training" column. An
# SST-2 run (cpu_sst2: 8000 phrases, 1 epoch, 64 tokens, length-grouped batches) takes about 4-5 minutes on
# 2 cores, so the study is hours on a laptop and well under an hour on one GPU. Extra Hydra overrides for
# every run go in $EXTRA, e.g. EXTRA="trainer.max_train_samples=2000" for a quicker, smaller study.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
STUDY_DIR="${STUDY_DIR:-outputs/study}"
REPORT_DIR="${REPORT_DIR:-docs/results}"
EXTRA_ROOTS="${EXTRA_ROOTS:-}"
HEADLINE_SEEDS="${HEADLINE_SEEDS:-1,2,3}"
SEEDS="${SEEDS:-1,2,3}"
LAMS="${LAMS:--8,-4,-2,-1,0,0.5}"
SPARSE_LAM="${SPARSE_LAM:-auto}"
EXTRA="${EXTRA:-}"
cores="$(nproc 2> /dev/null || echo 1)"
LANES="${LANES:-1}"
: "${SSAF_DATA_DIR:?set SSAF_DATA_DIR to the folder with sst2/, mnli/, squad/ ... (e.g. ../shared/data)}"
export SSAF_DATA_DIR
STAGES=(lam headline nopretrain sst5 mnli squad report)

multirun() {  # multirun DIR OVERRIDES...: one Hydra sweep into DIR, skipped when complete
  local dir="$1"; shift
  if [ -f "$dir/.complete" ]; then
    echo "== $dir: complete (delete $dir/.complete to run it again)"
    return
  fi
  echo "== $dir: $* $EXTRA"
  # shellcheck disable=SC2086  # EXTRA is a list of overrides
  "$py" train.py -m "$@" $EXTRA hydra.sweep.dir="$dir" || return 1  # set -e is off inside `lane ... ||`
  touch "$dir/.complete"
}

lam() {  # the lam of the sparse rows
  if [ "$SPARSE_LAM" != auto ]; then echo "$SPARSE_LAM"; return; fi
  if [ ! -f "$STUDY_DIR/lam/.complete" ]; then
    echo "SPARSE_LAM=auto needs the lam stage; run it first or set SPARSE_LAM=<lam>" >&2
    return 1
  fi
  "$py" -m ssaf.report "$STUDY_DIR/lam" --best-param sparse
}

# part STAGE base|sparse: the runs of a stage that do not use lam (base) or that do (sparse)
part() {
  local stage="$1" which="$2" attn=softmax dir="$STUDY_DIR/$1/$2" l=()
  if [ "$stage" = lam ]; then
    [ "$which" = base ] || multirun "$STUDY_DIR/lam" experiment=cpu_sst2 attn=sparse "attn.lam=$LAMS" seed=1
    return
  fi
  if [ "$which" = sparse ]; then
    attn=sparse
    l=("attn.lam=$(lam)") || return 1
  fi
  case "$stage" in
    headline)
      [ "$which" = base ] && attn=softmax,sparsemax,entmax15,learned_alpha
      multirun "$dir" experiment=cpu_sst2 "attn=$attn" "${l[@]}" "seed=$HEADLINE_SEEDS" ;;
    nopretrain) multirun "$dir" experiment=no_pretraining "attn=$attn" "${l[@]}" "seed=$SEEDS" ;;
    sst5) multirun "$dir" experiment=cpu_sst2 task=sst5 trainer.max_seq_length=128 "attn=$attn" "${l[@]}" "seed=$SEEDS" ;;
    mnli) multirun "$dir" experiment=cpu_mnli trainer.max_train_samples=8000 "attn=$attn" "${l[@]}" "seed=$SEEDS" ;;
    squad)
      multirun "$dir" task=squad data.source=local "attn=$attn" "${l[@]}" seed=1 \
        trainer.max_train_samples=3000 trainer.epochs=1 trainer.eval_every=0 trainer.learning_rate=1e-4 \
        trainer.stats_sample_every=8 ;;
  esac
}

lane() {  # lane base|sparse STAGE...: that part of every stage, in order; keeps going past a failure
  local which="$1" status=0 s; shift
  for s in "$@"; do
    part "$s" "$which" || { echo "== $s/$which: FAILED (the other stages go on)" >&2; status=1; }
  done
  return "$status"
}

report() {
  # shellcheck disable=SC2086  # EXTRA_ROOTS is a list of folders
  "$py" -m ssaf.report "$STUDY_DIR" $EXTRA_ROOTS --out "$REPORT_DIR" --title "ssaf: CPU-scale reproduction of SSAF"
}

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=("${STAGES[@]}")
runs=()
for s in "${stages[@]}"; do
  if [[ ! " ${STAGES[*]} " =~ \ $s\  ]]; then
    echo "unknown stage '$s'; stages: ${STAGES[*]}" >&2
    exit 2
  fi
  [ "$s" != report ] && runs+=("$s")
done

status=0
if [ ${#runs[@]} -gt 0 ]; then
  if [ "$LANES" -ge 2 ]; then
    mkdir -p "$STUDY_DIR"
    threads=$((cores / 2 > 0 ? cores / 2 : 1))
    echo "== two lanes, $threads thread(s) each: logs in $STUDY_DIR/lane-sparse.log and lane-base.log"
    OMP_NUM_THREADS=$threads lane sparse "${runs[@]}" > "$STUDY_DIR/lane-sparse.log" 2>&1 &
    sparse_pid=$!
    OMP_NUM_THREADS=$threads lane base "${runs[@]}" > "$STUDY_DIR/lane-base.log" 2>&1 &
    base_pid=$!
    wait "$sparse_pid" || status=1
    wait "$base_pid" || status=1
  else
    for s in "${runs[@]}"; do
      lane base "$s" || status=1
      lane sparse "$s" || status=1
    done
  fi
fi
[ "$status" -ne 0 ] && echo "some stages failed: see the logs above (or $STUDY_DIR/lane-*.log)" >&2
if [[ " ${stages[*]} " =~ \ report\  ]]; then report || status=1; fi
exit "$status"
