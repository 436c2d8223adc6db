"""A run survives its machine: stopped or killed and resumed, it logs what the uninterrupted run logs, bit for bit;
a checkpoint or log that cannot be written stops it with one line and loses nothing."""
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from conftest import TRAINER, clean_env, run_dirs, run_trainer, scalars

STEPS = 64  # a rollout's steps per env: every stop and checkpoint below is counted in them
TINY = ["--num-steps", str(STEPS), "--num-minibatches", "2", "--update-epochs", "1", "--save-model", "--eval-episodes", "0"]

# The trainer as its own process, sending itself a signal just before the vector env's `at`-th step (or the optimizer's,
# counted from the start of this process): a stop that arrives at a known point, through the real signal handler.
SIGNAL_AT = """
import os, runpy, signal, sys
import gymnasium as gym, torch
at, signum, calls = int(sys.argv[2]), int(sys.argv[3]), [0]
cls = {"rollout": gym.vector.SyncVectorEnv, "update": torch.optim.Adam}[sys.argv[1]]
step = cls.step
def step_and_signal(self, *args, **kwargs):
    calls[0] += 1
    if calls[0] == at:
        os.kill(os.getpid(), signum)
    return step(self, *args, **kwargs)
cls.step = step_and_signal
sys.argv = sys.argv[4:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def interrupted(cwd, at_step, signum, *flags, during="rollout"):
    return subprocess.run([sys.executable, "-c", SIGNAL_AT, during, str(at_step), str(int(signum)), TRAINER, *flags],
                          cwd=cwd, capture_output=True, text=True, env=clean_env(), timeout=600)


def logged(cwd):
    [run] = run_dirs(cwd)
    return {tag: values for tag, values in scalars(run).items() if tag != "charts/SPS"}, run


def final_checkpoint(run):
    return torch.load(os.path.join(run, "rpo_continuous_action.cleanrl_model"), weights_only=True)


def assert_same_run(straight_dir, resumed_dir):
    straight, straight_run = logged(straight_dir)
    resumed, resumed_run = logged(resumed_dir)
    assert sorted(straight) == sorted(resumed)
    for tag in straight:
        assert resumed[tag] == straight[tag], tag  # every (step, value), float32 bit for bit
    a, b = final_checkpoint(straight_run), final_checkpoint(resumed_run)
    assert a["global_step"] == b["global_step"]
    for name, tensor in a["agent"].items():
        assert torch.equal(tensor, b["agent"][name]), name
    assert torch.equal(a["obs_rms"]["mean"], b["obs_rms"]["mean"]) and torch.equal(a["next_obs"], b["next_obs"])


def resume(cwd):
    [run] = run_dirs(cwd)
    path = os.path.relpath(os.path.join(run, "rpo_continuous_action.cleanrl_model"), cwd)
    return run_trainer(cwd, "--resume", path)


@pytest.fixture(scope="module")
def straight_runs(tmp_path_factory):
    """The uninterrupted runs, made once per env and number of envs."""
    made = {}

    def straight(env_id, num_envs, iterations):
        key = (env_id, num_envs, iterations)
        if key not in made:
            made[key] = str(tmp_path_factory.mktemp("straight"))
            run_trainer(made[key], *flags(env_id, num_envs, iterations))
        return made[key]

    return straight


def flags(env_id, num_envs, iterations):
    return ["--env-id", env_id, "--num-envs", str(num_envs), "--total-timesteps", str(STEPS * num_envs * iterations), *TINY]


FAMILIES = ["Pendulum-v1", "Hopper-v4", "dm_control/cartpole-swingup-v0"]


@pytest.mark.parametrize("num_envs", [1, 3])
@pytest.mark.parametrize("env_id", FAMILIES)
def test_sigterm_mid_rollout_then_resume_is_the_same_run(tmp_path, straight_runs, env_id, num_envs):
    iterations = 6
    # the stop arrives at step 40 of the 4th rollout: the checkpoint is of the end of the 3rd iteration
    stop = interrupted(str(tmp_path), 3 * STEPS + 40, signal.SIGTERM, *flags(env_id, num_envs, iterations))
    assert stop.returncode == 128 + signal.SIGTERM, stop.stderr
    assert f"stopped at global_step={3 * STEPS * num_envs}" in stop.stderr
    proc = resume(str(tmp_path))
    assert "note:" not in proc.stderr
    assert_same_run(straight_runs(env_id, num_envs, iterations), str(tmp_path))


def test_sigterm_during_an_update_finishes_the_iteration_then_resume_is_the_same_run(tmp_path, straight_runs):
    # 2 minibatches a rollout: the stop arrives at the first minibatch of the 4th update, which still completes
    stop = interrupted(str(tmp_path), 3 * 2 + 1, signal.SIGTERM, *flags("Hopper-v4", 1, 6), during="update")
    assert stop.returncode == 128 + signal.SIGTERM, stop.stderr
    assert f"stopped at global_step={4 * STEPS}" in stop.stderr
    resume(str(tmp_path))
    assert_same_run(straight_runs("Hopper-v4", 1, 6), str(tmp_path))


def test_kill_9_after_a_checkpoint_then_resume_is_the_same_run(tmp_path, straight_runs):
    # what a kill -9 adds to the stops above is an older checkpoint and logs past it, whatever the env: one env suffices
    iterations = 6
    # checkpoints every 2 iterations; killed in the 4th rollout, after its 3rd iteration's logs were written
    kill = interrupted(str(tmp_path), 3 * STEPS + 10, signal.SIGKILL, *flags("Pendulum-v1", 1, iterations),
                       "--checkpoint-interval", "2")
    assert kill.returncode == -signal.SIGKILL
    assert torch.load(os.path.join(logged(str(tmp_path))[1], "rpo_continuous_action.cleanrl_model"),
                      weights_only=True)["global_step"] == 2 * STEPS
    # logged past the checkpoint
    assert [s for s, _ in logged(str(tmp_path))[0]["losses/loss"]] == [STEPS, 2 * STEPS, 3 * STEPS]
    resume(str(tmp_path))
    assert_same_run(straight_runs("Pendulum-v1", 1, iterations), str(tmp_path))


def test_hopper_interrupted_twice_ends_with_the_same_weights(tmp_path, straight_runs):
    iterations, first, second = 20, 5, 8  # the iterations of the run, before the first stop, then before the second
    stop = interrupted(str(tmp_path), first * STEPS + 17, signal.SIGTERM, *flags("Hopper-v4", 1, iterations))
    assert stop.returncode == 128 + signal.SIGTERM, stop.stderr
    [run] = run_dirs(str(tmp_path))
    path = os.path.relpath(os.path.join(run, "rpo_continuous_action.cleanrl_model"), str(tmp_path))
    # the resumed process counts its steps from 0: `second` more iterations, then SIGINT in the next rollout
    stop = interrupted(str(tmp_path), second * STEPS + 50, signal.SIGINT, "--resume", path)
    assert stop.returncode == 128 + signal.SIGINT, stop.stderr
    assert f"stopped at global_step={(first + second) * STEPS}" in stop.stderr
    resume(str(tmp_path))
    assert_same_run(straight_runs("Hopper-v4", 1, iterations), str(tmp_path))


# Faults of the machine, made real: the trainer runs in a folder that is a filesystem of its own (a tmpfs in a user
# namespace), full or read-only. What it wrote there is copied to `out` before the namespace goes.
def own_filesystem_works():
    return shutil.which("unshare") and subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


needs_own_filesystem = pytest.mark.skipif(not own_filesystem_works(), reason="needs `unshare -rm` (user namespaces)")


def in_own_filesystem(tmp_path, size, *flags, read_only=False):
    fs, out = tmp_path / "fs", tmp_path / "out"
    fs.mkdir()
    script = (f"mount -t tmpfs -o size={size} tmpfs {fs} && {f'mount -o remount,ro {fs} && ' if read_only else ''}"
              f'cd {fs} && "$@"; rc=$?; cp -r {fs} {out}; exit $rc')
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", sys.executable, TRAINER, *flags],
                          capture_output=True, text=True, env=clean_env(), timeout=600)
    return proc, str(out)


def one_line(proc):
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@needs_own_filesystem
def test_read_only_folder_is_one_line(tmp_path):
    proc, _ = in_own_filesystem(tmp_path, "1m", "--env-id", "Pendulum-v1", "--total-timesteps", str(2 * STEPS), *TINY,
                                read_only=True)
    assert one_line(proc) == "rpo_continuous_action.py: error: cannot write the run's logs to runs: Read-only file system"


@needs_own_filesystem
def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path):
    # room for the first checkpoint (140 kB) and the logs, not for a second one written aside
    proc, out = in_own_filesystem(tmp_path, "200k", "--env-id", "Pendulum-v1", "--total-timesteps", str(10 * STEPS),
                                  "--checkpoint-interval", "1", *TINY)
    line = one_line(proc)
    [run] = run_dirs(out)
    path = os.path.join(run, "rpo_continuous_action.cleanrl_model")
    assert line == (f"rpo_continuous_action.py: error: cannot write the checkpoint {os.path.relpath(path, out)}: "
                    "No space left on device; the run stops here (the previous checkpoint, if any, is whole)")
    assert not [f for f in os.listdir(run) if f.endswith(".tmp")]
    assert torch.load(path, weights_only=True)["global_step"] == STEPS  # the first checkpoint, whole
    assert [s for s, _ in scalars(run)["losses/loss"]][:2] == [STEPS, 2 * STEPS]


@needs_own_filesystem
def test_full_disk_during_logging_is_one_line(tmp_path):
    proc, _ = in_own_filesystem(tmp_path, "8k", "--env-id", "Pendulum-v1", "--total-timesteps", str(STEPS * 500),
                                "--num-steps", str(STEPS), "--num-minibatches", "2", "--update-epochs", "1")
    assert re.fullmatch(r"rpo_continuous_action.py: error: cannot write the run's logs to runs/Pendulum-v1__\S+: "
                        r"No space left on device", one_line(proc))


def test_an_env_whose_state_cannot_be_taken_resumes_with_a_note(tmp_path):
    flags = ["--env-id", "BipedalWalker-v3", "--total-timesteps", str(4 * STEPS), *TINY]
    stop = interrupted(str(tmp_path), STEPS + 10, signal.SIGTERM, *flags)
    assert stop.returncode == 128 + signal.SIGTERM, stop.stderr
    proc = resume(str(tmp_path))
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: the episodes in flight restart from a reset (this script cannot take the state of "
                     "BipedalWalker-v3's envs)"]
    assert [s for s, _ in logged(str(tmp_path))[0]["losses/loss"]] == [STEPS, 2 * STEPS, 3 * STEPS, 4 * STEPS]
