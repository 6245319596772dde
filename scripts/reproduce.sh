#!/usr/bin/env bash
# Every run behind REPRODUCTION.md, in order. Resumable: each `fltool sweep` skips the runs it has finished, so
# this script can be stopped and started again.
#   RUNS=work_dirs/repro scripts/reproduce.sh [scale] [regime]
#   (then prints the tables of REPRODUCTION.md: scripts/reproduction_tables.py with the lengths below)
# scale: the embedded set, BCCD, Figure 4 and Table 1e of the default model.
# regime: "The regime the paper studied" (the sparse set, OHEM, the prior); ITERS=... sets the length of its
#   comparison runs (default 1200, the default recipe's), LONG_ITERS="..." (default "2xITERS 4xITERS 8xITERS")
#   the lengths at which the chosen points train again to show where AP stops rising. REPRODUCTION.md states each
#   part's run time.
# errors: "Where focal loss's gain comes from": FL, the best alpha-balanced CE and the best OHEM of the sparse set
#   (then FL and CE of the dense set) trained again at ERR_ITERS (default 9600, where they differ) with ERR_SEEDS
#   (default 0), their checkpoints kept, and TIDE's breakdown of each (fltool analyze errors at foreground IoU 0.5,
#   0.75, 0.9 and 0.95).
# Without arguments: scale and regime, in that order.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-work_dirs/repro}
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p "$RUNS"
PARTS=${*:-scale regime}
ERR_ITERS=${ERR_ITERS:-9600}
ERR_SEEDS=${ERR_SEEDS:-0}
# the regime's lengths, defined here alone (the tables at the end are given them):
ITERS=${ITERS:-1200}  # every comparison run, both sets; a multiple of 400 (checkpoints every 400, logs every 20)
# the chosen points again, longer (multiples of 400 too)
LONG_ITERS=${LONG_ITERS:-"$((2 * ITERS)) $((4 * ITERS)) $((8 * ITERS))"}
# the record of every finished run (JSON/CSV, no checkpoints) into docs/runs, which git keeps when work_dirs/ is gone
archive() { python scripts/archive_runs.py --runs "$RUNS" --to docs/runs; }

if [[ " $PARTS " == *" scale "* ]]; then
# Table 1b: gamma x alpha on the embedded dataset, half the default schedule (600 of 1200 iterations) per run (its
# gamma = 0 row is Table 1a's middle)
fltool sweep retinanet_r18-gn_synth_256 --work-dir "$RUNS/synth_grid" \
  --set loss.gamma=0,0.5,1,2,5 --set loss.alpha=0.25,0.5,0.75 --seeds 0,1 --max-iters 600
# Table 1a: the other alphas of alpha-balanced CE
fltool sweep retinanet_r18-gn_synth_256 --work-dir "$RUNS/synth_ce_alpha" \
  --set loss=CE-a0.1,CE-a0.9,CE-a0.99,CE-a0.999 --seeds 0,1 --max-iters 600
# Table 3: FL* (FL with gamma 2, alpha 0.25 is in the grid)
fltool sweep retinanet_r18-gn_synth_256 --work-dir "$RUNS/synth_flstar" --set 'loss=FL*,FL*-g4-b0' --seeds 0,1 \
  --max-iters 600
# The same question at the default run's full schedule (1200 iterations)
fltool sweep retinanet_r18-gn_synth_256 --work-dir "$RUNS/synth_full" \
  --set 'loss=CE-a0.5,CE-a0.75,FL,FL-g0.5-a0.25' --seeds 0,1
# BCCD (real photos): CE, FL and FL*, 1000 iterations of 4 images per run
fltool sweep retinanet_r18-gn_bccd_320 --work-dir "$RUNS/bccd_losses" \
  --set 'loss=CE-a0.25,CE-a0.75,FL-g1-a0.25,FL,FL*,FL*-g4-b0' --seeds 0,1 --max-iters 1000

# Your own data (README): BCCD through --data, without a config file, against the shipped BCCD config, same length
# (2,000 of both recipes' 4,000 iterations: 27 epochs of BCCD's 292 train images). --resume auto: a run stopped
# midway continues (fltool train never starts over a work dir that holds a run)
for seed in 0 1; do
  [ -f "$RUNS/bccd_data_s$seed/metrics.json" ] || fltool train --data ../shared/data/bccd --seed $seed --precision fp32 \
    --max-iters 2000 --work-dir "$RUNS/bccd_data_s$seed" --resume auto
  [ -f "$RUNS/bccd_cfg_s$seed/metrics.json" ] || fltool train retinanet_r18-gn_bccd_320 --seed $seed --precision fp32 \
    --max-iters 2000 --work-dir "$RUNS/bccd_cfg_s$seed" --resume auto
done

# Figure 4 and Table 1e on the default model (the README's main job)
if [ ! -f "$RUNS/default/metrics.json" ]; then
  fltool train --work-dir "$RUNS/default" --resume auto --precision fp32
fi
[ -f "$RUNS/loss_cdf/loss_cdf.json" ] || \
  fltool analyze loss-cdf retinanet_r18-gn_synth_256 "$RUNS/default/iter_1200.pth" --work-dir "$RUNS/loss_cdf"
# Timings: run this one on an otherwise idle machine (delete its folder to measure again)
[ -f "$RUNS/speed_accuracy/results.json" ] || \
  fltool bench speed-accuracy retinanet_r18-gn_synth_256 --checkpoint "$RUNS/default/iter_1200.pth" --num-images 50 \
  --threads 1 --paper --backend pytorch,mmdet,onnxruntime,openvino --precision fp32,bf16,int8 \
  --work-dir "$RUNS/speed_accuracy"
archive
fi

if [[ " $PARTS " == *" regime "* ]]; then
# ---- The regime the paper studied: 1 positive anchor in 1,172 (the sparse set) against 1 in 85 (the default set).
SPARSE=retinanet_r18-gn_synth-sparse_384
DENSE=retinanet_r18-gn_synth_256
EVAL="train_cfg.val_interval=$((ITERS / 4))"  # AP at 1/4, 1/2, 3/4 and the end: has it stopped rising?
CE_GRID=CE-a0.5,CE-a0.75,CE-a0.9
FL_GRID=FL-g0.5-a0.25,FL-g1-a0.25,FL
OHEM_GRID=OHEM-b128,OHEM-b512,OHEM-b128-nms0.7
SPARSE_LOSSES="$CE_GRID,$FL_GRID,FL*,$OHEM_GRID,OHEM-1:3-b128"
DENSE_LOSSES="$CE_GRID,$FL_GRID"  # scripts/reproduction_tables.py names the same families: keep them in step

sweep_runs() {  # fltool sweep; a run that fails (e.g. a diverging loss) is a result of its row, not a stop
  fltool sweep "$@" || { rc=$?; [ "$rc" -eq 1 ] || exit "$rc"; echo "reproduce: runs failed; see their rows" >&2; }
}
# chosen CONFIG FOLDER N FROM LOSSES GROUP...: seeds 0,1,2 at N iterations (AP every N/4) for the best point of each
# GROUP in the sweep FROM (highest seed-0 AP; a group of one is a fixed point), the choice recorded in
# FOLDER/chosen.json (the tables name the rows by it when FROM is gone); then the report of FOLDER.
chosen() {
  local config=$1 dir=$2 n=$3 from=$4 losses=$5; shift 5
  local common=(--work-dir "$dir" --set "loss=$losses" --max-iters "$n"
                --cfg-options "train_cfg.val_interval=$((n / 4))")
  local points
  points=$(python scripts/reproduction_tables.py --pick-best "$from" "$@" --record "$dir/chosen.json")
  for point in $points; do
    sweep_runs "$config" "${common[@]}" --seeds 0,1,2 --point "$point"
  done
  fltool sweep "$config" "${common[@]}" --seeds 0,1,2 --report-only
  archive
}
# regime CONFIG FOLDER LOSSES GROUP...: every loss with seed 0 at ITERS; then the best of each GROUP with 3 seeds
regime() {
  local config=$1 dir=$2 losses=$3; shift 3
  sweep_runs "$config" --work-dir "$dir" --set "loss=$losses" --max-iters "$ITERS" --cfg-options "$EVAL" --seeds 0
  chosen "$config" "$dir" "$ITERS" "$dir" "$losses" "$@"
}

fltool analyze anchors $SPARSE --work-dir "$RUNS/anchors_sparse"
fltool analyze anchors $DENSE --work-dir "$RUNS/anchors_dense"
# The prior's role: CE and FL with pi = 0.01 and with bias 0, 300 iterations, as configured (AdamW, gradient
# clipping) and with the paper's optimiser (SGD, momentum 0.9, no clipping; lr 0.0025: the paper's 0.01 for 16 images
# per batch, scaled linearly to 4)
fltool analyze prior $SPARSE --work-dir "$RUNS/sparse_prior" --max-iters 300
fltool analyze prior $SPARSE --work-dir "$RUNS/sparse_prior_sgd" --max-iters 300 --cfg-options \
  optim_wrapper.optimizer.type=SGD optim_wrapper.optimizer.lr=0.0025 +optim_wrapper.optimizer.momentum=0.9 \
  optim_wrapper.optimizer.weight_decay=0.0001 optim_wrapper.clip_grad=None
# best alpha-balanced CE, FL (gamma 2, alpha 0.25), best gamma of FL, FL*, best OHEM, OHEM 1:3: 3 seeds each
regime $SPARSE "$RUNS/sparse_$ITERS" "$SPARSE_LOSSES" "$CE_GRID" FL "$FL_GRID" 'FL*' "$OHEM_GRID" OHEM-1:3-b128
# the same grid's best CE and FL on the default (dense) set, at the same length
regime $DENSE "$RUNS/dense_$ITERS" "$DENSE_LOSSES" "$CE_GRID" "$FL_GRID"
# Where does AP stop rising? The chosen points of both sets, three seeds, at each of LONG_ITERS
# (the points chosen at ITERS: the schedule, not the choice, is what is tested)
for n in $LONG_ITERS; do
  chosen $SPARSE "$RUNS/sparse_$n" "$n" "$RUNS/sparse_$ITERS" "$SPARSE_LOSSES" \
    "$CE_GRID" FL "$FL_GRID" 'FL*' "$OHEM_GRID" OHEM-1:3-b128
  chosen $DENSE "$RUNS/dense_$n" "$n" "$RUNS/dense_$ITERS" "$DENSE_LOSSES" "$CE_GRID" "$FL_GRID"
done
# Figure 4 of the sparse-set model (FL, seed 0), at every length
for n in "$ITERS" $LONG_ITERS; do
  out="$RUNS/sparse_loss_cdf_$n"
  if [ ! -f "$out/loss_cdf.json" ]; then
    fltool analyze loss-cdf $SPARSE "$RUNS/sparse_$n/loss=FL/seed0/iter_$n.pth" --work-dir "$out"
  fi
done
archive
fi

if [[ " $PARTS " == *" errors "* ]]; then
# ---- Where FL's gain comes from. The points are the regime's choices at 1,200 iterations (chosen.json of
# sparse_9600/dense_9600 in docs/runs); each run is a plain fltool train (--resume auto: a stopped run continues) whose
# checkpoint stays for the analyses.
errors_run() {  # CONFIG SET PRESET GAMMA ALPHA [more --cfg-options]
  local config=$1 set=$2 preset=$3 gamma=$4 alpha=$5; shift 5
  for seed in ${ERR_SEEDS//,/ }; do
    local dir="$RUNS/errors_${set}_$ERR_ITERS/loss=$preset/seed$seed"
    [ -f "$dir/metrics.json" ] || fltool train "$config" --work-dir "$dir" --seed "$seed" --max-iters "$ERR_ITERS" \
      --precision fp32 --resume auto --cfg-options "train_cfg.val_interval=$((ERR_ITERS / 4))" \
      model.bbox_head.loss_cls.type=SigmoidFocalLoss model.bbox_head.loss_cls.use_sigmoid=True \
      "model.bbox_head.loss_cls.gamma=$gamma" "model.bbox_head.loss_cls.alpha=$alpha" \
      model.bbox_head.loss_cls.loss_weight=1.0 "$@"
    [ -f "$dir/analysis/errors.json" ] || fltool analyze errors "$dir"
    [ -f "$dir/analysis/errors_iou75.json" ] || fltool analyze errors "$dir" --iou 0.75
    [ -f "$dir/analysis/errors_iou90.json" ] || fltool analyze errors "$dir" --iou 0.9
    [ -f "$dir/analysis/errors_iou95.json" ] || fltool analyze errors "$dir" --iou 0.95
  done
}
SPARSE=retinanet_r18-gn_synth-sparse_384
DENSE=retinanet_r18-gn_synth_256
errors_run $SPARSE sparse FL 2.0 0.25
errors_run $SPARSE sparse CE-a0.75 0.0 0.75
errors_run $SPARSE sparse OHEM-b128-nms0.7 0.0 None model.bbox_head.type=OHEMRetinaHead \
  +model.bbox_head.ohem.num=128 +model.bbox_head.ohem.pos_fraction=None +model.bbox_head.ohem.nms_thr=0.7
errors_run $DENSE dense FL-g0.5-a0.25 0.5 0.25
errors_run $DENSE dense CE-a0.5 0.0 0.5
archive
fi

# the tables of REPRODUCTION.md, from every run in $RUNS (those of a part not run this time included)
python scripts/reproduction_tables.py --runs "$RUNS" --iters "$ITERS" --long-iters "$LONG_ITERS"
