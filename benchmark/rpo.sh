#!/usr/bin/env bash
# The reference's RPO experiments (its published tables) on today's stack: RPO against
# PPO (rpo_alpha=0), 8M steps, 10 seeds, through benchmark/sweep.sh.
#
#   benchmark/rpo.sh [--set NAME]... [--workers K | --slurm [--partition P] [--time T] [--account A]]
#                    [--out DIR] [--seeds N] [-- extra trainer flags]
#
# Sets (all of them unless --set is given):
#   dm_control    the reference's 48 dm_control ids, alpha 0.5 and 0
#   gym           Pendulum-v1, BipedalWalker-v3 (the box2d extra), alpha 0.5 and 0
#   mujoco        HumanoidStandup, Humanoid, InvertedPendulum, Walker2d (v4), alpha 0.5 and 0
#   mujoco-tuned  Ant, HalfCheetah, Hopper, InvertedDoublePendulum, Reacher, Swimmer (v4):
#                 alpha 0.01 (the reference's tuned value), 0.5 (its failure cases) and 0
#   pusher        Pusher-v4, the last of the reference's tuned envs, at the same alphas: gymnasium
#                 1.x makes it only with mujoco < 3, so it runs on the published simulator,
#                 PUBLISHED_PYTHON (default .venv-mujoco237/bin/python; checked before anything runs)
#
# The reference also ran the MuJoCo v2 envs. They (mujoco-py based) no longer exist in
# gymnasium 1.x, which only points to gymnasium-robotics for them, so only v4 runs here.
#
# All sets write to the same OUT (default benchmark/runs); then, for the tables:
#   python benchmark/report.py benchmark/runs --out benchmark/results/published-sets
# Every run is resumable: rerun the same command after an interruption. A set whose runs
# fail does not stop the next; the script then exits 1. With --slurm, each set is one job
# array. Trainer flags after "--" override the defaults here (e.g. -- --total-timesteps
# 1000000 for a shorter sweep).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

DM_CONTROL="dm_control/acrobot-swingup-v0 dm_control/acrobot-swingup_sparse-v0
    dm_control/ball_in_cup-catch-v0 dm_control/cartpole-balance-v0
    dm_control/cartpole-balance_sparse-v0 dm_control/cartpole-swingup-v0
    dm_control/cartpole-swingup_sparse-v0 dm_control/cartpole-two_poles-v0
    dm_control/cartpole-three_poles-v0 dm_control/cheetah-run-v0 dm_control/dog-stand-v0
    dm_control/dog-walk-v0 dm_control/dog-trot-v0 dm_control/dog-run-v0 dm_control/dog-fetch-v0
    dm_control/finger-spin-v0 dm_control/finger-turn_easy-v0 dm_control/finger-turn_hard-v0
    dm_control/fish-upright-v0 dm_control/fish-swim-v0 dm_control/hopper-stand-v0
    dm_control/hopper-hop-v0 dm_control/humanoid-stand-v0 dm_control/humanoid-walk-v0
    dm_control/humanoid-run-v0 dm_control/humanoid-run_pure_state-v0
    dm_control/humanoid_CMU-stand-v0 dm_control/humanoid_CMU-run-v0
    dm_control/manipulator-bring_ball-v0 dm_control/manipulator-bring_peg-v0
    dm_control/manipulator-insert_ball-v0 dm_control/manipulator-insert_peg-v0
    dm_control/pendulum-swingup-v0 dm_control/point_mass-easy-v0 dm_control/point_mass-hard-v0
    dm_control/quadruped-walk-v0 dm_control/quadruped-run-v0 dm_control/quadruped-escape-v0
    dm_control/quadruped-fetch-v0 dm_control/reacher-easy-v0 dm_control/reacher-hard-v0
    dm_control/stacker-stack_2-v0 dm_control/stacker-stack_4-v0 dm_control/swimmer-swimmer6-v0
    dm_control/swimmer-swimmer15-v0 dm_control/walker-stand-v0 dm_control/walker-walk-v0
    dm_control/walker-run-v0"
GYM="Pendulum-v1 BipedalWalker-v3"
MUJOCO="HumanoidStandup-v4 Humanoid-v4 InvertedPendulum-v4 Walker2d-v4"
MUJOCO_TUNED="Ant-v4 HalfCheetah-v4 Hopper-v4 InvertedDoublePendulum-v4 Reacher-v4 Swimmer-v4"
PUSHER="Pusher-v4"

die() {
    echo "rpo.sh: error: $*" >&2
    exit 2
}
source "$HERE/mujoco_python.sh"

sets=() seeds=10 pass=() trainer_args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --set)
            [[ $# -ge 2 ]] || die "option --set needs a value"
            case $2 in
                dm_control | gym | mujoco | mujoco-tuned | pusher) sets+=("$2") ;;
                *) die "unknown set '$2' (dm_control, gym, mujoco, mujoco-tuned, pusher)" ;;
            esac
            shift 2
            ;;
        --seeds)
            [[ $# -ge 2 ]] || die "option --seeds needs a value"
            seeds=$2
            shift 2
            ;;
        --slurm) pass+=("$1"); shift ;;
        --workers | --out | --partition | --time | --account)
            [[ $# -ge 2 ]] || die "option $1 needs a value"
            pass+=("$1" "$2")
            shift 2
            ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
        --) shift; trainer_args=("$@"); break ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
[[ ${#sets[@]} -gt 0 ]] || sets=(dm_control gym mujoco mujoco-tuned pusher)

published_python=${PUBLISHED_PYTHON:-$ROOT/.venv-mujoco237/bin/python}
if [[ " ${sets[*]} " == *" pusher "* ]]; then  # hours of other sets would run before its runs failed
    check_mujoco_python "set pusher" "$published_python" "2." \
        "$PUBLISHED_VENV_HOW, set PUBLISHED_PYTHON, or leave the set out with --set" "Pusher-v4 on gymnasium 1.x"
fi

failed=()
for set in "${sets[@]}"; do
    python=${PYTHON:-python3}
    case $set in
        dm_control) envs=$DM_CONTROL alphas="0.5 0" ;;
        gym) envs=$GYM alphas="0.5 0" ;;
        mujoco) envs=$MUJOCO alphas="0.5 0" ;;
        mujoco-tuned) envs=$MUJOCO_TUNED alphas="0.01 0.5 0" ;;
        pusher) envs=$PUSHER alphas="0.01 0.5 0" python=$published_python ;;
    esac
    echo "=== set $set"
    rc=0
    PYTHON=$python "$HERE/sweep.sh" --env-ids "$envs" --seeds "$seeds" --alphas "$alphas" "${pass[@]}" \
        -- --total-timesteps 8000000 "${trainer_args[@]}" || rc=$?
    case $rc in
        0) ;;
        1) failed+=("$set") ;;  # some runs failed (sweep.sh named them): the other sets still run
        *) exit "$rc" ;;        # bad input (sweep.sh said why) or interrupted: rerun to resume
    esac
done
[[ ${#failed[@]} == 0 ]] || { echo "rpo.sh: runs failed in set(s): ${failed[*]}; see the sweep's lines above" >&2; exit 1; }
