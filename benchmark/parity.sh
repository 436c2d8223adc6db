#!/usr/bin/env bash
# Parity with the reference, measured: the reference RPO script and ours trained on the same envs,
# alphas, seeds and budget, each arm a sweep of benchmark/sweep.sh into OUT/<arm>/.
#
#   benchmark/parity.sh --env-ids HalfCheetah-v4 --seeds 10 --alphas 0.01 --workers 2 \
#       --out benchmark/runs/parity [--arms "ours-mujoco3"] -- --total-timesteps 1000000
#
# The arms (all three unless --arms names some), one after another:
#   reference-mujoco237  the reference script (CleanRL's, from the cleanrl 1.2.0 wheel) on its own stack
#                        (gymnasium 0.29, mujoco 2.3.7), run by REFERENCE_PYTHON (default
#                        REF_DIR/venv/bin/python) through benchmark/reference_trainer.py, on the CPU;
#                        RPO_REFERENCE is the script (default REF_DIR/rpo_reference.py); benchmark/reference.sh
#                        builds both (REF_DIR defaults to /tmp/rpo-reference, there and here)
#   ours-mujoco237       ours on the published simulator, PUBLISHED_PYTHON (default .venv-mujoco237/bin/python)
#   ours-mujoco3         ours on mujoco 3.x, PYTHON (default .venv/bin/python)
# Each python is checked first, and its mujoco version against the arm's name; OUT/<arm>/versions
# records what it ran on (a line per stack). Options other than --out and --arms go to sweep.sh as they are (--workers,
# --slurm, ...); the trainer flags after `--` go to every arm, so give only flags both scripts know
# (--total-timesteps, --num-steps, --num-minibatches, --update-epochs, --no-anneal-lr, ...), in our
# trainer's syntax: the adapter writes booleans the reference's way.
#
# Rerun the same command after an interruption: finished runs are skipped and ours resume from their
# checkpoints; the reference writes none, so its interrupted runs start again from scratch.
# Then compare the arms (the first is the one the others are compared with):
#   .venv/bin/python benchmark/report.py --arms OUT/reference-mujoco237 OUT/ours-mujoco237 OUT/ours-mujoco3 --out DIR
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
ARMS=(reference-mujoco237 ours-mujoco237 ours-mujoco3)

die() {
    echo "parity.sh: error: $*" >&2
    exit 2
}
source "$HERE/mujoco_python.sh"

out="" arms="${ARMS[*]}" sweep_args=() trainer_args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --out) [[ $# -ge 2 ]] || die "option --out needs a value"; out=$2; shift 2 ;;
        --arms) [[ $# -ge 2 ]] || die "option --arms needs a value"; arms=$2; shift 2 ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
        --) shift; trainer_args=("$@"); break ;;
        *) sweep_args+=("$1"); shift ;;
    esac
done
[[ -n $out ]] || die "no --out given (the folder that gets one sweep per arm)"
read -r -d '' -a arm_list <<<"$arms" || true
[[ ${#arm_list[@]} -gt 0 ]] || die "no arms given (--arms \"${ARMS[*]}\")"

# arm -> python, trainer, the mujoco version it must run on, and how to get that python
declare -A python trainer want how
REF_DIR=${REF_DIR:-/tmp/rpo-reference}
python[reference-mujoco237]=${REFERENCE_PYTHON:-$REF_DIR/venv/bin/python}
python[ours-mujoco237]=${PUBLISHED_PYTHON:-$ROOT/.venv-mujoco237/bin/python}
python[ours-mujoco3]=${PYTHON:-$ROOT/.venv/bin/python}
trainer[reference-mujoco237]=$HERE/reference_trainer.py
trainer[ours-mujoco237]=$ROOT/rpo_continuous_action.py
trainer[ours-mujoco3]=$ROOT/rpo_continuous_action.py
want[reference-mujoco237]="2.3.7" want[ours-mujoco237]="2.3.7" want[ours-mujoco3]="3."
how[reference-mujoco237]="build it with 'benchmark/reference.sh' or set REFERENCE_PYTHON"
how[ours-mujoco237]="$PUBLISHED_VENV_HOW or set PUBLISHED_PYTHON"
how[ours-mujoco3]="build it with 'python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e \".[mujoco]\"' or set PYTHON"

for arm in "${arm_list[@]}"; do
    [[ -n ${python[$arm]:-} ]] || die "unknown arm '$arm' (the arms: ${ARMS[*]})"
    check_mujoco_python "arm $arm" "${python[$arm]}" "${want[$arm]}" "${how[$arm]}"
done
if [[ " ${arm_list[*]} " == *" reference-mujoco237 "* ]]; then
    script=${RPO_REFERENCE:-$REF_DIR/rpo_reference.py}
    [[ -f $script ]] || die "arm reference-mujoco237: no reference script at $script; build it with 'benchmark/reference.sh' or set RPO_REFERENCE"
    # for benchmark/reference_trainer.py, which sweep.sh runs inside each run's directory
    [[ $script == /* ]] || script=$(cd "$(dirname "$script")" && pwd)/$(basename "$script")
    export RPO_REFERENCE=$script
fi

# sweep.sh in a process group of its own: a Ctrl-C reaches only this script, which passes it on once, and
# sweep.sh has its trainers checkpoint (ours) or stop (the reference) before it exits.
set -m
child="" stopping=""
trap 'stopping=INT; [[ -z $child ]] || kill -INT "$child" 2>/dev/null || true' INT
trap 'stopping=TERM; [[ -z $child ]] || kill -TERM "$child" 2>/dev/null || true' TERM
rc=0
for arm in "${arm_list[@]}"; do
    [[ -z $stopping ]] || break
    py=${python[$arm]}
    mkdir -p "$out/$arm" || die "cannot create $out/$arm"
    # one line per stack this arm has run on: more than one line means a mixed arm
    versions=$("$py" -c 'import sys, gymnasium, mujoco, torch
print(f"python {sys.version.split()[0]} ({sys.executable}), gymnasium {gymnasium.__version__}, "
      f"mujoco {mujoco.__version__}, torch {torch.__version__}")')
    grep -qxF "$versions" "$out/$arm/versions" 2>/dev/null || echo "$versions" >>"$out/$arm/versions"
    echo "=== $arm: $versions -> $out/$arm"
    PYTHON=$py TRAINER=${trainer[$arm]} "$HERE/sweep.sh" "${sweep_args[@]}" --out "$out/$arm" -- "${trainer_args[@]}" &
    child=$!
    [[ -z $stopping ]] || kill -"$stopping" "$child" 2>/dev/null || true # a signal that came before it started
    # wait returns early when a trap ran; the last wait fetches sweep.sh's status (127: already fetched)
    until arm_rc=0; wait "$child" || arm_rc=$?; ! kill -0 "$child" 2>/dev/null; do :; done
    last=0
    wait "$child" 2>/dev/null || last=$?
    [[ $last == 127 ]] || arm_rc=$last
    child=""
    case $arm_rc in
        0) ;;
        2 | 130 | 143) exit "$arm_rc" ;; # bad input (sweep.sh said why) or interrupted: rerun to resume
        *) rc=$arm_rc ;;                 # some runs failed: the other arms still run
    esac
done
[[ $stopping == INT ]] && exit 130
[[ $stopping == TERM ]] && exit 143
[[ $rc == 0 ]] && echo "parity: all arms finished in $out"
exit "$rc"
