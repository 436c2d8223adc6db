#!/usr/bin/env bash
# Run the cross product envs x seeds x rpo_alpha of rpo_continuous_action.py,
# locally (K runs at a time) or as one Slurm job array.
#
#   benchmark/sweep.sh --env-ids "Pendulum-v1 Hopper-v4" --seeds 3 --alphas "0.5 0" \
#       [--workers K | --slurm [--partition P] [--time HH:MM:SS] [--account A]] \
#       [--out DIR] -- [trainer flags]
#
# Every run gets its own directory OUT/<env>__alpha<A>__seed<S> ("/" in env ids
# becomes "-"), and the trainer runs inside it, so its runs/<run_name>/ (TensorBoard
# events, checkpoint) and train.log stay there. A run is finished when the trainer
# exited 0; the file DONE then marks it. Rerunning the same command skips finished
# runs, resumes unfinished ones from their checkpoint (--resume) and restarts the
# ones that never wrote a checkpoint: nothing is lost and nothing runs twice.
#
# Locally, K runs at a time (default: all cores), one thread each; Ctrl-C or SIGTERM
# is passed on to the trainers, which save a checkpoint, and the runner waits for them;
# a second Ctrl-C or SIGTERM kills every run at once. Either way it exits 130 or 143.
# --slurm submits one job array (one 1-CPU task per unfinished run; --workers K then
# caps how many run at once) and prints its id. A task warned of its time limit has
# its trainer checkpoint and requeues itself; requeued or preempted tasks resume.
#
# Environment: PYTHON (default python3) runs TRAINER (default
# benchmark/../rpo_continuous_action.py). With --slurm, sbatch's own input
# variables (SBATCH_QOS, SBATCH_MEM_PER_CPU, ...) work as usual.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
PYTHON=${PYTHON:-python3}
TRAINER=${TRAINER:-$HERE/../rpo_continuous_action.py}

die() {
    echo "sweep.sh: error: $*" >&2
    exit 2
}

usage() {
    # The comment block at the top of this file.
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SELF"
}

# Newest checkpoint the trainer left in a run directory (empty if none). run_name
# may itself contain "/" (dm_control ids), hence the recursive search.
find_checkpoint() {
    find "$1/runs" -name '*.cleanrl_model' -type f -printf '%T@ %p\n' 2>/dev/null |
        sort -n | tail -n 1 | cut -d' ' -f2- || true
}

# A line in the run's train.log; Slurm tasks also show it in their task log.
note() {
    echo "=== $(date '+%F %T') $*" >>train.log
    [[ -z ${SLURM_JOB_ID:-} ]] || echo "=== $(date '+%F %T') $PWD: $*"
}

# Runs one trainer in run directory $1 and waits for it; used by the local runner
# (in a background subshell) and by each Slurm array task (via --run-one).
# Signals are forwarded to the trainer, which saves a checkpoint and exits 130/143.
run_one() {
    local dir=$1 env_id=$2 seed=$3 alpha=$4
    shift 4
    local child="" got_signal="" requeue="" rc=0
    # Traps first, so a signal that comes before the trainer starts is not lost.
    trap 'got_signal=INT; [[ -z $child ]] || kill -INT "$child" 2>/dev/null || true' INT
    trap 'got_signal=TERM; [[ -z $child ]] || kill -TERM "$child" 2>/dev/null || true' TERM
    # Slurm's warning before the time limit (--signal=B:USR1@60): checkpoint, then requeue.
    trap 'got_signal=TERM; requeue=1; [[ -z $child ]] || kill -TERM "$child" 2>/dev/null || true' USR1

    cd "$dir"
    local ckpt resume=()
    ckpt=$(find_checkpoint .)
    if [[ -n $ckpt ]]; then
        resume=(--resume "$ckpt")
    else
        # An unfinished run without a checkpoint starts over: drop its partial
        # event files so the report does not mix two attempts.
        rm -rf runs
    fi
    local what="starting from scratch"
    [[ -z $ckpt ]] || what="resuming from $ckpt"
    [[ -z ${SLURM_JOB_ID:-} ]] || what="$what (Slurm job $SLURM_JOB_ID, restart ${SLURM_RESTART_COUNT:-0})"
    note "$what"
    if [[ $got_signal == INT ]]; then return 130; fi
    if [[ $got_signal == TERM ]]; then return 143; fi

    # One thread per run: K runs share K cores without oversubscribing them.
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
        "$PYTHON" "$TRAINER" --env-id "$env_id" --seed "$seed" --rpo-alpha "$alpha" \
        --save-model --torch-threads 1 "${resume[@]}" "$@" </dev/null >>train.log 2>&1 &
    child=$!
    while :; do
        rc=0
        wait "$child" || rc=$?
        # wait returns early (rc > 128) when a trap ran; keep waiting for the trainer.
        kill -0 "$child" 2>/dev/null || break
    done
    # If the last wait was cut short by a trap just as the trainer exited, this one
    # fetches the trainer's own status (127 means it was already collected above).
    local rc2=0
    wait "$child" 2>/dev/null || rc2=$?
    [[ $rc2 == 127 ]] || rc=$rc2
    child=""

    note "trainer exited with status $rc"
    if [[ $rc == 0 ]]; then
        date '+%F %T' >DONE
    elif [[ -n $requeue && -n ${SLURM_ARRAY_JOB_ID:-} ]]; then
        # Time limit near: the trainer has checkpointed; put this task back in the
        # queue so it continues from the checkpoint instead of being killed.
        note "time limit near: requeueing ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} to resume from the checkpoint"
        scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}" || true
    fi
    return "$rc"
}

# Internal entry point for one Slurm array task: sweep.sh --run-one DIR ENV SEED ALPHA -- ARGS
if [[ ${1:-} == --run-one ]]; then
    shift
    dir=$1 env_id=$2 seed=$3 alpha=$4
    shift 4
    [[ ${1:-} == -- ]] && shift
    rc=0
    run_one "$dir" "$env_id" "$seed" "$alpha" "$@" || rc=$?
    exit "$rc"
fi

# ---------------------------------------------------------------- arguments
env_ids="" seeds=1 alphas="0.5 0" workers="" slurm="" out="$HERE/runs"
partition="" time_limit="" account=""
trainer_args=()
need_value() { [[ $# -ge 2 ]] || die "option $1 needs a value"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --env-ids) need_value "$@"; env_ids=$2; shift 2 ;;
        --seeds) need_value "$@"; seeds=$2; shift 2 ;;
        --alphas) need_value "$@"; alphas=$2; shift 2 ;;
        --workers) need_value "$@"; workers=$2; shift 2 ;;
        --out) need_value "$@"; out=$2; shift 2 ;;
        --slurm) slurm=1; shift ;;
        --partition) need_value "$@"; partition=$2; shift 2 ;;
        --time) need_value "$@"; time_limit=$2; shift 2 ;;
        --account) need_value "$@"; account=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        --) shift; trainer_args=("$@"); break ;;
        *) die "unknown option '$1' (trainer flags go after '--'; see --help)" ;;
    esac
done

# Lists may span lines (read -d '' takes all of it; it returns 1 at the end of input).
read -r -d '' -a env_list <<<"$env_ids" || true
read -r -d '' -a alpha_list <<<"$alphas" || true
[[ ${#env_list[@]} -gt 0 ]] || die "no env ids given (--env-ids \"Pendulum-v1 Hopper-v4\")"
# 10#: a leading zero would make bash read 010 as octal (8) and 08 as an error
[[ $seeds =~ ^[0-9]+$ ]] && seeds=$((10#$seeds)) && ((seeds >= 1)) || die "--seeds must be an integer >= 1, got '$seeds'"
[[ ${#alpha_list[@]} -gt 0 ]] || die "no alphas given (--alphas \"0.5 0\")"
for a in "${alpha_list[@]}"; do
    [[ $a =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]] || die "--alphas must be numbers >= 0, got '$a'"
done
if [[ -n $workers ]]; then
    [[ $workers =~ ^[0-9]+$ ]] && workers=$((10#$workers)) && ((workers >= 1)) ||
        die "--workers must be an integer >= 1, got '$workers'"
fi
if [[ -n $slurm ]]; then
    command -v sbatch >/dev/null || die "--slurm given but sbatch is not on PATH"
elif [[ -n $partition || -n $time_limit || -n $account ]]; then
    die "--partition, --time and --account only make sense with --slurm"
fi
[[ -f $TRAINER ]] || die "trainer not found: $TRAINER"
# Absolute paths: runs execute from their own directory (and on Slurm nodes).
TRAINER=$(cd "$(dirname "$TRAINER")" && pwd)/$(basename "$TRAINER")
if [[ $PYTHON == */* ]]; then
    # No symlink resolution: a venv's bin/python must stay the venv's.
    PYTHON=$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")
fi
export PYTHON TRAINER
mkdir -p "$out" 2>/dev/null || die "cannot create the --out directory $out"
out=$(cd "$out" && pwd)

# ---------------------------------------------------------------- the runs
# Order env > seed > alpha, so a partly done sweep already has paired alphas.
run_dirs=() run_envs=() run_seeds=() run_alphas=()
declare -A seen=()
for env_id in "${env_list[@]}"; do
    for ((seed = 1; seed <= seeds; seed++)); do
        for alpha in "${alpha_list[@]}"; do
            name="${env_id//\//-}__alpha${alpha}__seed${seed}"
            [[ -z ${seen[$name]:-} ]] || continue
            seen[$name]=1
            run_dirs+=("$out/$name") run_envs+=("$env_id") run_seeds+=("$seed") run_alphas+=("$alpha")
        done
    done
done
total=${#run_dirs[@]}

label() { echo "${run_envs[$1]} alpha=${run_alphas[$1]} seed=${run_seeds[$1]}"; }

pending=()
finished=0
for i in "${!run_dirs[@]}"; do
    mkdir -p "${run_dirs[$i]}"
    # The directory name cannot hold "/", so keep the real env id beside it.
    [[ -f ${run_dirs[$i]}/env_id ]] || echo "${run_envs[$i]}" >"${run_dirs[$i]}/env_id"
    if [[ -f ${run_dirs[$i]}/DONE ]]; then
        finished=$((finished + 1))
        echo "[$finished/$total] skip $(label "$i") (finished earlier)"
    else
        pending+=("$i")
    fi
done
if [[ ${#pending[@]} -eq 0 ]]; then
    echo "all $total runs in $out are finished; nothing to do"
    exit 0
fi

# ---------------------------------------------------------------- Slurm
if [[ -n $slurm ]]; then
    job_dir="$out/slurm"
    mkdir -p "$job_dir"
    script="$job_dir/sweep-$(date +%Y%m%d-%H%M%S)-$$.sh"
    {
        echo '#!/usr/bin/env bash'
        echo '# Generated by benchmark/sweep.sh: one array task per unfinished run.'
        echo 'set -euo pipefail'
        printf 'export PYTHON=%q TRAINER=%q\n' "$PYTHON" "$TRAINER"
        echo 'runs=('
        for i in "${pending[@]}"; do
            printf '    %q\n' "${run_dirs[$i]}|${run_envs[$i]}|${run_seeds[$i]}|${run_alphas[$i]}"
        done
        echo ')'
        echo 'IFS="|" read -r dir env_id seed alpha <<<"${runs[$SLURM_ARRAY_TASK_ID]}"'
        printf 'exec %q --run-one "$dir" "$env_id" "$seed" "$alpha" --' "$SELF"
        [[ ${#trainer_args[@]} -eq 0 ]] || printf ' %q' "${trainer_args[@]}"
        echo
    } >"$script"
    chmod +x "$script"

    # One 1-CPU task per run; a task warned of its time limit has its trainer checkpoint
    # (SIGTERM) and requeues itself (run_one); preempted or requeued tasks resume.
    job_id=$("$HERE/slurm/submit.sh" "$job_dir/logs" --job-name=rpo-sweep \
        --array="0-$((${#pending[@]} - 1))${workers:+%$workers}" --cpus-per-task=1 ${partition:+--partition="$partition"} \
        ${time_limit:+--time="$time_limit"} ${account:+--account="$account"} -- "$script") ||
        die "sbatch failed (see its message above)"
    echo "submitted Slurm job array $job_id: ${#pending[@]} of $total runs ($finished finished earlier)"
    echo "task logs: $job_dir/logs/${job_id}_<task>.out; task list: $script"
    exit 0
fi

# ---------------------------------------------------------------- local
workers=${workers:-$(nproc)}
# Job control gives every run its own process group, so a Ctrl-C in the terminal
# reaches only this runner, which forwards it once to each run (and waits).
set -m
declare -A running=() started=()
stopping=""
failed=0
done_count=$finished

# (No `return` here: run as a trap during `wait` in reap_one, it would end reap_one too.)
stop_all() {
    local pid
    if [[ -n $stopping ]]; then
        # A second signal: kill each run's process group (its trainer too, even one that ignores
        # the first signal); a rerun resumes them from their last checkpoint.
        echo "sweep.sh: got SIG$1 again; killing ${#running[@]} run(s) now" >&2
        for pid in "${!running[@]}"; do kill -KILL -- -"$pid" 2>/dev/null || true; done
    else
        stopping=$1
        echo "sweep.sh: got SIG$1; stopping ${#running[@]} running trainer(s), which save a checkpoint" \
            "(a second signal kills them)..." >&2
        for pid in "${!running[@]}"; do kill -"$1" "$pid" 2>/dev/null || true; done
    fi
}
trap 'stop_all INT' INT
trap 'stop_all TERM' TERM

start_run() {
    local i=$1 how=start
    [[ -z $(find_checkpoint "${run_dirs[$i]}") ]] || how="resume from checkpoint"
    (run_one "${run_dirs[$i]}" "${run_envs[$i]}" "${run_seeds[$i]}" "${run_alphas[$i]}" "${trainer_args[@]}") &
    running[$!]=$i
    started[$!]=$SECONDS
    # A signal that came while this run was being started has not reached it yet.
    [[ -z $stopping ]] || kill -"$stopping" "$!" 2>/dev/null || true
    echo "      $how $(label "$i") -> ${run_dirs[$i]}/train.log"
}

reap_one() {
    local pid="" rc=0 i secs
    wait -n -p pid "${!running[@]}" || rc=$?
    if [[ -z ${pid:-} && $rc == 127 ]]; then
        # bash reaped a run while a trap ran, and wait -n no longer sees it; wait PID still
        # has its status
        for i in "${!running[@]}"; do kill -0 "$i" 2>/dev/null || pid=$i; done
        [[ -z $pid ]] || { rc=0; wait "$pid" || rc=$?; }
    fi
    [[ -n ${pid:-} ]] || return 0 # a trap interrupted the wait
    i=${running[$pid]}
    secs=$((SECONDS - ${started[$pid]}))
    unset "running[$pid]" "started[$pid]"
    done_count=$((done_count + 1))
    if [[ $rc == 0 ]]; then
        echo "[$done_count/$total] done $(label "$i") (${secs}s)"
    elif [[ -n $stopping ]]; then
        done_count=$((done_count - 1)) # not done: it resumes on the next run
        echo "      stopped $(label "$i") (exit $rc after ${secs}s; rerun to resume)"
    else
        failed=$((failed + 1))
        echo "[$done_count/$total] FAILED $(label "$i") (exit $rc after ${secs}s; see ${run_dirs[$i]}/train.log)"
    fi
}

echo "running ${#pending[@]} of $total runs, $workers at a time, in $out"
for i in "${pending[@]}"; do
    while [[ -z $stopping && ${#running[@]} -ge $workers ]]; do reap_one; done
    [[ -z $stopping ]] || break
    start_run "$i"
done
while [[ ${#running[@]} -gt 0 ]]; do reap_one; done

if [[ -n $stopping ]]; then
    echo "sweep.sh: interrupted; rerun the same command to resume" >&2
    [[ $stopping == INT ]] && exit 130 || exit 143
fi
echo "sweep finished: $((total - finished - failed)) ran, $finished skipped (finished earlier), $failed failed"
[[ $failed == 0 ]] || exit 1
