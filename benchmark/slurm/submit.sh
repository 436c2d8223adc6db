#!/usr/bin/env bash
# Submits one Slurm job array and prints its id: the one place where benchmark/sweep.sh
# and benchmark/tune.py call sbatch.
#
#   benchmark/slurm/submit.sh LOGDIR [sbatch options: --job-name, --array, --cpus-per-task, ...] -- COMMAND [ARGS]
#
# Every task of the array runs COMMAND (with SLURM_ARRAY_TASK_ID set) and appends its output
# to LOGDIR/<job>_<task>.out. --signal=B:USR1@60: COMMAND is warned 60 s before the time
# limit, so that it can have its runs checkpoint; --requeue: a preempted or requeued task
# runs COMMAND again. sbatch's own input variables (SBATCH_QOS, ...) apply as usual.
# When sbatch fails, its message is on stderr and the exit status is 2.
set -euo pipefail
logs=$1
shift
options=()
while [[ $# -gt 0 && $1 != -- ]]; do
    options+=("$1")
    shift
done
[[ $# -gt 1 ]] || { echo "usage: submit.sh LOGDIR [sbatch options] -- COMMAND [ARGS]" >&2; exit 2; }
shift
mkdir -p "$logs"
# printf %q quotes each word for the /bin/sh that runs --wrap; exec: the signals reach COMMAND itself.
job=$(sbatch --parsable --ntasks=1 --output="$logs/%A_%a.out" --open-mode=append --requeue --signal=B:USR1@60 \
    "${options[@]}" --wrap="exec $(printf '%q ' "$@")") || exit 2
echo "${job%%;*}"
