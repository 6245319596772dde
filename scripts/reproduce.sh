#!/usr/bin/env bash
# Every run behind REPRODUCTION.md, in order. Resumable: each `fltool sweep` skips the runs it has finished, so
# this script can be stopped and started again. About 3 hours on a 2-core CPU (most of it the 15-point grid).
#   RUNS=work_dirs/repro scripts/reproduce.sh     then    .venv/bin/python scripts/reproduction_tables.py
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-work_dirs/repro}
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p "$RUNS"

# Table 1b: gamma x alpha on the embedded dataset, 300 iterations per run (its gamma = 0 row is Table 1a's middle)
fltool sweep retinanet_r18-gn_synth_256 --work-dir "$RUNS/synth_grid" \
  --set loss.gamma=0,0.5,1,2,5 --set loss.alpha=0.25,0.5,0.75 --seeds 0,1 --max-iters 300
# Table 1a: the other alphas of alpha-balanced CE
fltool sweep retinanet_r18-gn_synth_256 --work-dir "$RUNS/synth_ce_alpha" \
  --set loss=CE-a0.1,CE-a0.9,CE-a0.99,CE-a0.999 --seeds 0,1 --max-iters 300
# Table 3: FL* (FL with gamma 2, alpha 0.25 is in the grid)
fltool sweep retinanet_r18-gn_synth_256 --work-dir "$RUNS/synth_flstar" --set 'loss=FL*,FL*-g4-b0' --seeds 0,1 \
  --max-iters 300
# The same question at the default run's full schedule (600 iterations)
fltool sweep retinanet_r18-gn_synth_256 --work-dir "$RUNS/synth_600" \
  --set 'loss=CE-a0.5,CE-a0.75,FL,FL-g0.5-a0.25' --seeds 0,1
# BCCD (real photos): CE, FL and FL*, 500 iterations per run
fltool sweep retinanet_r18-gn_bccd_320 --work-dir "$RUNS/bccd_losses" \
  --set 'loss=CE-a0.25,CE-a0.75,FL-g1-a0.25,FL,FL*,FL*-g4-b0' --seeds 0,1 --max-iters 500

# Figure 4 and Table 1e on the default model (the README's main job)
if [ ! -f "$RUNS/default/metrics.json" ]; then
  fltool train --work-dir "$RUNS/default"
fi
fltool analyze loss-cdf retinanet_r18-gn_synth_256 "$RUNS/default/iter_600.pth" --work-dir "$RUNS/loss_cdf"
fltool bench speed-accuracy retinanet_r18-gn_synth_256 --checkpoint "$RUNS/default/iter_600.pth" --num-images 50 \
  --threads 1 --paper --work-dir "$RUNS/speed_accuracy"
