#!/usr/bin/env bash
# The CPU-scale reproduction of the SSAF paper (docs/RESULTS.md): every run of the study, then the
# comparison report that the tables and plots of RESULTS.md come from.
#
#   SSAF_DATA_DIR=../shared/data bash scripts/reproduce_cpu_scale.sh [STAGE ...]
#
# Stages, in the default order (each is up to three Hydra multiruns into $STUDY_DIR/<stage>/<part>: part
# "base" is softmax, "sparse" is SSAF at the chosen lam, "others" is sparsemax / entmax15 / learned alpha
# (learned at its own rate $ATTN_LR); a part already complete there is skipped, so an interrupted study
# resumes where it stopped):
#   lam         SST-2, sparse, lam in $LAMS, seed 1: the dev sweep that chooses lam, and the lam plot
#   headline    SST-2 (cpu_sst2: 8000 phrases, 1 epoch, 64 tokens), every attention, seeds $HEADLINE_SEEDS
#   nopretrain  SST-2 from random init (model.pretrained=false), softmax / sparse at the chosen lam and at
#               lam = $NOPRETRAIN_LAM (from scratch the chosen lam is hardly sparse), seeds $SEEDS
#   sst5        SST-5 (the paper's SST-1), 128 tokens, seeds $SEEDS (others: $OTHER_SEEDS)
#   mnli        MNLI ($MNLI_TRAIN pairs of the train subset; dev matched capped at 2000 + mismatched),
#               seeds $SEEDS (others: $OTHER_SEEDS)
#   snli        SNLI ($MNLI_TRAIN pairs of the train subset; dev capped at 2000), seeds $SEEDS (others: $OTHER_SEEDS)
#   barnes      the Barnes et al. (2017) sentiment sets SemEval-2013, SenTube-A, SenTube-T (dev and test),
#               softmax / sparse, seeds $SEEDS
#   squad       SQuAD v1.1 (3000 training questions; the full dev set), softmax / sparse, seed $SQUAD_SEED
#   report      ssaf-compare over $STUDY_DIR (and $EXTRA_ROOTS) -> $REPORT_DIR (report.md, plots)
# SciTail is not a stage: ../shared/data has only its test split (train and dev need the hub).
#
# Every run is evaluated once, after its last step (trainer.eval_every=0): the presets evaluate during
# training and keep the best checkpoint, which would select on the dev set the table reports.
#
# The sparse rows use SPARSE_LAM: "auto" (default) takes the lam with the best dev accuracy in the lam
# stage, which must then be complete; a number overrides it.
#
# LANES=2 runs two lanes side by side, each with half the cores: one runs the lam sweep and then every
# sparse part, the other every part that does not depend on lam (logs: $STUDY_DIR/lane-{sparse,base}.log).
# It does not buy throughput on 2 CPU cores (measured: two 1-thread runs side by side took 8-9.5 minutes
# each, one 2-thread run ~4), so the default is LANES=1: everything in order, all cores per run.
#
# Every training cap is in conf/experiment/*.yaml (or below) and in the report's "training" column. On 2
# cores (measured, uncontended) an SST-2 run takes 3-4 minutes, SST-5 5.5-7, MNLI 6-8, SNLI 4-5, a Barnes
# set 6-8 (dev and test evaluation), SQuAD 60-90: the whole study is a day on a laptop (and, estimated from
# the GPU step times in README, not run, about an hour on one GPU). Extra Hydra overrides for every run go in
# $EXTRA, e.g. EXTRA="trainer.max_train_samples=2000" for a quicker, smaller study.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
STUDY_DIR="${STUDY_DIR:-outputs/study}"
REPORT_DIR="${REPORT_DIR:-docs/results}"
EXTRA_ROOTS="${EXTRA_ROOTS:-}"
HEADLINE_SEEDS="${HEADLINE_SEEDS:-1,2,3}"
SEEDS="${SEEDS:-1,2,3}"
SQUAD_SEED="${SQUAD_SEED:-42}"  # one SQuAD run is 60-90 min on 2 cores; 42 is the seed of the published runs
OTHER_SEEDS="${OTHER_SEEDS:-$SEEDS}"
OTHERS="${OTHERS:-sparsemax,entmax15,learned_alpha}"
ATTN_LR="${ATTN_LR:-0.1}"  # learned alpha's own learning rate (trainer.attn_learning_rate; best of 1e-2, 1e-1 on SST-2 dev)
LAMS="${LAMS:--8,-4,-2,-1,0,0.5}"
NOPRETRAIN_LAM="${NOPRETRAIN_LAM:-0}"
MNLI_TRAIN="${MNLI_TRAIN:-6000}"
SPARSE_LAM="${SPARSE_LAM:-auto}"
EXTRA="${EXTRA:-}"
cores="$(nproc 2> /dev/null || echo 1)"
LANES="${LANES:-1}"
: "${SSAF_DATA_DIR:?set SSAF_DATA_DIR to the folder with sst2/, mnli/, squad/ ... (e.g. ../shared/data)}"
export SSAF_DATA_DIR
STAGES=(lam headline nopretrain sst5 mnli snli barnes squad report)

multirun() {  # multirun DIR OVERRIDES...: one Hydra sweep into DIR, skipped when complete
  local dir="$1"; shift
  if [ -f "$dir/.complete" ]; then
    echo "== $dir: complete (delete $dir/.complete to run it again)"
    return
  fi
  echo "== $dir: $* $EXTRA"
  # shellcheck disable=SC2086  # EXTRA is a list of overrides
  "$py" train.py -m "$@" trainer.eval_every=0 $EXTRA hydra.sweep.dir="$dir" || return 1  # no set -e in `lane ... ||`
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

# part STAGE base|sparse|others: a stage's softmax runs (base), its SSAF runs at the chosen lam (sparse: the
# only part that needs the lam stage) and its other sparse attentions (others)
part() {
  local stage="$1" which="$2" dir="$STUDY_DIR/$1/$2" attn=softmax seeds="$SEEDS" lams l=() task=()
  if [ "$stage" = lam ]; then
    if [ "$which" = sparse ]; then
      multirun "$STUDY_DIR/lam" experiment=cpu_sst2 attn=sparse "attn.lam=$LAMS" seed=1
    fi
    return
  fi
  if [ "$which" = others ]; then
    case "$stage" in nopretrain | barnes | squad) return ;; esac  # softmax vs SSAF only, as in the paper
    attn="$OTHERS"
    seeds="$OTHER_SEEDS"
    l=("trainer.attn_learning_rate=$ATTN_LR")  # moves learned alpha only (the others log that it has no effect)
  elif [ "$which" = sparse ]; then
    attn=sparse
    lams="$(lam)" || return 1
    if [ "$stage" = nopretrain ] && [ "$lams" != "$NOPRETRAIN_LAM" ]; then lams="$lams,$NOPRETRAIN_LAM"; fi
    l=("attn.lam=$lams")
  fi
  case "$stage" in
    headline) multirun "$dir" experiment=cpu_sst2 "attn=$attn" "${l[@]}" "seed=$HEADLINE_SEEDS" ;;
    nopretrain) multirun "$dir" experiment=no_pretraining "attn=$attn" "${l[@]}" "seed=$seeds" ;;
    sst5) multirun "$dir" experiment=cpu_sst2 task=sst5 trainer.max_seq_length=128 "attn=$attn" "${l[@]}" "seed=$seeds" ;;
    mnli | snli)
      [ "$stage" = snli ] && task=(task=snli)
      multirun "$dir" experiment=cpu_mnli "${task[@]}" "trainer.max_train_samples=$MNLI_TRAIN" "attn=$attn" "${l[@]}" \
        "seed=$seeds" ;;
    barnes)
      multirun "$dir" experiment=cpu_sst2 task=semeval,sentube_auto,sentube_tablets trainer.max_seq_length=128 \
        "attn=$attn" "${l[@]}" "seed=$seeds" ;;
    squad)
      # 384-token rows at lam = -8 are mostly candidates, where the eager CPU path is 8x slower than the
      # compiled one (same result); softmax has no compiled kernel
      [ "$which" = sparse ] && l+=(attn.backend=compiled)
      multirun "$dir" task=squad data.source=local "attn=$attn" "${l[@]}" "seed=$SQUAD_SEED" \
        trainer.max_train_samples=3000 trainer.epochs=1 trainer.learning_rate=1e-4 trainer.stats_sample_every=8 ;;
  esac
}

# lane base|sparse STAGE...: every stage's parts that lane owns, in order (base: base and others, which do not
# depend on lam; sparse: the lam sweep and the sparse parts); keeps going past a failure
lane() {
  local which="$1" status=0 s p parts=("$1"); shift
  [ "$which" = base ] && parts=(base others)
  for s in "$@"; do
    for p in "${parts[@]}"; do
      part "$s" "$p" || { echo "== $s/$p: FAILED (the other stages go on)" >&2; status=1; }
    done
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
