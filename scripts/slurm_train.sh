#!/usr/bin/env bash
# fltool train on a SLURM cluster: srun starts one task per process (a GPU each, or a CPU process), on every node
# of the allocation; fltool joins them with --launcher slurm (rank, world size and local rank from SLURM's
# variables, the first node as the rendezvous) and continues a requeued or restarted job (--resume auto).
#
#   sbatch scripts/slurm_train.sh CONFIG --work-dir work_dirs/NAME [more fltool train options]
#   sbatch --nodes=4 --ntasks-per-node=8 --gpus-per-node=8 scripts/slurm_train.sh retinanet_r50_fpn_1x_coco \
#       --work-dir work_dirs/r50_1x
#
# Environment: FLTOOL_PYTHON (default: .venv/bin/python of the folder sbatch ran in), MASTER_PORT (default: one
# derived from the job id), OMP_NUM_THREADS (default: the task's CPUs).
#SBATCH --job-name=fltool-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --output=%x-%j.out
set -euo pipefail

if [ "$#" -lt 1 ]; then
  echo "usage: sbatch scripts/slurm_train.sh CONFIG --work-dir DIR [fltool train options]" >&2
  exit 2
fi
ROOT="${SLURM_SUBMIT_DIR:-$(pwd)}"
PY="${FLTOOL_PYTHON:-$ROOT/.venv/bin/python}"
MASTER_ADDR="$(scontrol show hostnames "${SLURM_JOB_NODELIST:-127.0.0.1}" | head -n 1)"
MASTER_PORT="${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
export MASTER_ADDR MASTER_PORT OMP_NUM_THREADS
echo "fltool: ${SLURM_NTASKS:-?} tasks on ${SLURM_JOB_NUM_NODES:-?} node(s), rendezvous ${MASTER_ADDR}:${MASTER_PORT}"

# --kill-on-bad-exit: a task that fails ends the others (no rank waits forever in a collective).
srun --kill-on-bad-exit=1 "$PY" -m fltool train "$@" --launcher slurm --resume auto
