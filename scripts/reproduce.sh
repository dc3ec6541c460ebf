#!/usr/bin/env bash
# The CPU-scale reproduction of the SSAF paper (docs/RESULTS.md): every run of the study, then the
# comparison report that the tables and plots of RESULTS.md come from.
#
#   SSAF_DATA_DIR=../shared/data bash scripts/reproduce.sh [STAGE ...]
#
# Stages, in the default order (each is a Hydra multirun into $STUDY_DIR/<stage>; a stage that is
# already complete there is skipped, so an interrupted study resumes where it stopped):
#   lam         SST-2, sparse, lam in {-8, -4, -2, -1, 0, 0.5}, seed 1        (the lam-sensitivity plot)
#   headline    SST-2, softmax / sparse / sparsemax / entmax15 / learned_alpha, seeds $SEEDS
#   nopretrain  SST-2 from random init (model.pretrained=false), softmax / sparse, seeds $SEEDS
#   sst5        SST-5 (the paper's SST-1), softmax / sparse, seeds $SEEDS
#   mnli        MNLI (train subset; dev matched capped at 2000 + mismatched), softmax / sparse, seeds $SEEDS
#   squad       SQuAD v1.1 (3000 training questions; the full dev set), softmax / sparse, seed 1
#   report      ssaf-compare over everything -> $REPORT_DIR (report.md, report.html, plots)
#
# Every training cap is in conf/experiment/*.yaml and in the report's "training" column. Sizes: about
# 20 minutes per SST-2 run on 2 CPU cores (cpu_sst2: 8000 phrases, 1 epoch, 64 tokens), so the whole
# study is a night on a laptop and well under an hour on one GPU. Extra Hydra overrides for every run
# go in $EXTRA, e.g. EXTRA="trainer.max_train_samples=2000" for a quicker, smaller study.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
STUDY_DIR="${STUDY_DIR:-outputs/study}"
REPORT_DIR="${REPORT_DIR:-docs/results}"
SEEDS="${SEEDS:-1,2,3}"
LAMS="${LAMS:--8,-4,-2,-1,0,0.5}"
SPARSE_LAM="${SPARSE_LAM:--1}"  # the lam of the headline rows; set it to the best of the lam stage
EXTRA="${EXTRA:-}"
: "${SSAF_DATA_DIR:?set SSAF_DATA_DIR to the folder with sst2/, mnli/, squad/ ... (e.g. ../shared/data)}"
export SSAF_DATA_DIR

multirun() {  # multirun STAGE OVERRIDES...: one Hydra sweep into $STUDY_DIR/STAGE, skipped when complete
  local stage="$1"; shift
  local dir="$STUDY_DIR/$stage"
  if [ -f "$dir/.complete" ]; then
    echo "== $stage: complete in $dir (delete $dir/.complete to run it again)"
    return
  fi
  echo "== $stage: $*"
  # shellcheck disable=SC2086  # EXTRA is a list of overrides
  "$py" train.py -m "$@" $EXTRA hydra.sweep.dir="$dir"
  touch "$dir/.complete"
}

stage_lam() { multirun lam experiment=cpu_sst2 attn=sparse "attn.lam=$LAMS" seed=1; }
stage_headline() {
  multirun headline experiment=cpu_sst2 attn=softmax,sparse,sparsemax,entmax15,learned_alpha \
    "attn.lam=$SPARSE_LAM" "seed=$SEEDS"
}
stage_nopretrain() { multirun nopretrain experiment=no_pretraining attn=softmax,sparse "attn.lam=$SPARSE_LAM" "seed=$SEEDS"; }
stage_sst5() { multirun sst5 experiment=cpu_sst2 task=sst5 trainer.max_seq_length=128 attn=softmax,sparse "attn.lam=$SPARSE_LAM" "seed=$SEEDS"; }
stage_mnli() { multirun mnli experiment=cpu_mnli attn=softmax,sparse "attn.lam=$SPARSE_LAM" "seed=$SEEDS"; }
stage_squad() {
  multirun squad task=squad data.source=local attn=softmax,sparse "attn.lam=$SPARSE_LAM" seed=1 \
    trainer.max_train_samples=3000 trainer.epochs=1 trainer.eval_every=0 trainer.learning_rate=1e-4 \
    trainer.stats_sample_every=8
}
stage_report() { "$py" -m ssaf.report "$STUDY_DIR" --out "$REPORT_DIR" --title "ssaf: CPU-scale reproduction of SSAF"; }

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(lam headline nopretrain sst5 mnli squad report)
for s in "${stages[@]}"; do
  if ! declare -F "stage_$s" > /dev/null; then
    echo "unknown stage '$s'; stages: lam headline nopretrain sst5 mnli squad report" >&2
    exit 2
  fi
  "stage_$s"
done
