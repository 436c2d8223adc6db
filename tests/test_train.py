"""End-to-end runs of the trainer, read back from what a user sees: TensorBoard files, output, exit codes."""
import os
import re
import shutil
import signal
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import rpo_continuous_action as rpo
from conftest import FAST, ROOT, TRAINER, clean_env, run_dirs, run_trainer, scalars

TAGS = {"charts/episodic_return", "charts/episodic_length", "charts/learning_rate", "charts/SPS",
        "losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/old_approx_kl",
        "losses/approx_kl", "losses/clipfrac", "losses/explained_variance", "losses/approx_kl_unperturbed",
        "charts/action_std"}


@pytest.mark.parametrize("env_id", ["Hopper-v4", "Pendulum-v1", "dm_control/cartpole-balance-v0", "BipedalWalker-v3"])
def test_short_run_logs_every_metric(workdir, env_id):
    proc = run_trainer(workdir, "--env-id", env_id, "--total-timesteps", "2048", *FAST)
    [run] = run_dirs(workdir)
    assert os.path.relpath(run, workdir).startswith(os.path.join("runs", env_id + "__rpo_continuous_action__1__"))
    logged = scalars(run)
    assert TAGS <= set(logged)
    # one update per 512-step iteration, the learning rate annealed linearly from 3e-4
    assert [s for s, _ in logged["losses/value_loss"]] == [512, 1024, 1536, 2048]
    np.testing.assert_allclose([v for _, v in logged["charts/learning_rate"]], [3e-4, 2.25e-4, 1.5e-4, 0.75e-4], rtol=1e-5)
    assert all(v > 0 for _, v in logged["charts/SPS"])
    assert all(np.isfinite(v) for tag in TAGS for _, v in logged[tag] if tag != "losses/explained_variance")
    # every finished episode is logged once and printed once
    returns, lengths = logged["charts/episodic_return"], logged["charts/episodic_length"]
    assert len(returns) == len(lengths) == proc.stdout.count("episodic_return=") >= 1
    if env_id == "Pendulum-v1":
        assert {v for _, v in lengths} == {200.0}
    if env_id.startswith("dm_control"):
        assert {v for _, v in lengths} == {1000.0}


def test_episodes_of_several_envs_ending_on_the_same_step(workdir):
    # Pendulum-v1 episodes are exactly 200 steps: 3 sub-envs x 400 steps end 6 episodes, 3 at a time
    proc = run_trainer(workdir, "--env-id", "Pendulum-v1", "--num-envs", "3", "--num-steps", "200",
                       "--num-minibatches", "4", "--update-epochs", "1", "--total-timesteps", "1200")
    [run] = run_dirs(workdir)
    logged = scalars(run)
    assert [s for s, _ in logged["charts/episodic_length"]] == [600, 600, 600, 1200, 1200, 1200]
    assert [v for _, v in logged["charts/episodic_length"]] == [200.0] * 6
    first_three = [v for _, v in logged["charts/episodic_return"][:3]]
    assert len(set(first_three)) == 3  # three different sub-envs, not one counted thrice
    assert proc.stdout.count("episodic_return=") == 6


def losses(workdir):
    [run] = run_dirs(workdir)
    return {tag: values for tag, values in scalars(run).items() if tag.startswith("losses/")}


def test_same_seed_same_losses(tmp_path):
    runs = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        os.makedirs(tmp_path / name)
        run_trainer(str(tmp_path / name), "--env-id", "Pendulum-v1", "--seed", seed, "--total-timesteps", "1536", *FAST)
        runs.append(losses(str(tmp_path / name)))
    assert runs[0] == runs[1]
    assert runs[0]["losses/value_loss"] != runs[2]["losses/value_loss"]


def test_progress_bar_on_a_terminal_only(workdir):
    if shutil.which("script") is None:
        pytest.skip("needs util-linux's script for a pseudo-terminal")
    command = f"stty cols 120 rows 40; {sys.executable} {TRAINER} --env-id Pendulum-v1 --total-timesteps 1024 " + " ".join(FAST)
    tty = subprocess.run(["script", "-qec", command, "/dev/null"], cwd=workdir, capture_output=True, text=True,
                         env=clean_env(), timeout=300)
    assert tty.returncode == 0, tty.stdout[-2000:]
    assert "step/s" in tty.stdout and "episodic_return=" in tty.stdout and "1.02k/1.02k" in tty.stdout
    logs = run_trainer(workdir, "--env-id", "Pendulum-v1", "--total-timesteps", "1024", *FAST)
    assert "step/s" not in logs.stderr and "\r" not in logs.stderr  # no bar in a log file
    assert logs.stdout.count("SPS:") == 2  # but a line per iteration, as the reference prints


def test_track_with_wandb_offline(workdir):
    pytest.importorskip("wandb")
    run_trainer(workdir, "--env-id", "Pendulum-v1", "--total-timesteps", "512", "--track",
                "--wandb-project-name", "rpo-test", *FAST, env=clean_env(WANDB_MODE="offline", WANDB_SILENT="true"))
    offline = [d for d in os.listdir(os.path.join(workdir, "wandb")) if d.startswith("offline-run-")]
    assert len(offline) == 1
    run = os.path.join(workdir, "wandb", offline[0])
    [record] = [os.path.join(run, f) for f in os.listdir(run) if f.endswith(".wandb")]
    data = open(record, "rb").read()  # what `wandb sync` would upload: the config with the run's flags
    assert b"Pendulum-v1" in data and b"rpo_alpha" in data
    # the TensorBoard metrics are mirrored into the W&B run
    synced = [f for _, _, files in os.walk(os.path.join(run, "files", "runs")) for f in files]
    assert any(f.startswith("events.out.tfevents") for f in synced)


BAD_INPUTS = [
    (["--env-id", "CartPole-v1"], "Discrete action space"),
    (["--env-id", "NoSuchEnv-v0"], "cannot make environment 'NoSuchEnv-v0'"),
    (["--env-id", "dm_control/foo-bar-v0"], "cannot make environment 'dm_control/foo-bar-v0'"),
    (["--env-id", "Pendulum-v1", "--num-steps", "100"], "--num-minibatches 32 does not divide the batch of 100"),
    (["--env-id", "Pendulum-v1", "--total-timesteps", "1000"], "--total-timesteps 1000 is less than one batch of 2048"),
    (["--env-id", "Pendulum-v1", "--rpo-alpha", "-0.1"], "--rpo-alpha must be >= 0"),
    (["--env-id", "Pendulum-v1", "--num-envs", "0"], "--num-envs must be at least 1"),
    (["--env-id", "Pendulum-v1", "--gamma", "1.5"], "--gamma must be in (0, 1]"),
    (["--env-id", "Pendulum-v1", "--learning-rate", "-0.001"], "--learning-rate must be > 0"),
    (["--env-id", "Pendulum-v1", "--num-steps", "32"], "minibatches of one sample cannot normalize advantages"),
    (["--resume", "a.cleanrl_model", "--eval-checkpoint", "b.cleanrl_model"], "give --resume or --eval-checkpoint, not both"),
    (["--env-id", "Hopper-v2"], "Hopper-v2 needs mujoco-py, which gymnasium 1.x dropped: use Hopper-v4 or Hopper-v5"),
    (["--env-id", "HalfCheetah-v3"], "use HalfCheetah-v4 or HalfCheetah-v5"),
    (["--env-id", "Pendulum-v1", "--clip-coef", "-0.2"], "--clip-coef must be >= 0, got -0.2"),
    (["--env-id", "Pendulum-v1", "--vf-coef", "-1"], "--vf-coef must be >= 0, got -1.0"),
    (["--env-id", "Pendulum-v1", "--max-grad-norm", "0"], "--max-grad-norm must be > 0, got 0.0"),
    (["--env-id", "Pendulum-v1", "--target-kl", "0"], "--target-kl must be > 0, got 0.0"),
    # the reference accepts these and overwrites them without a word
    (["--env-id", "Pendulum-v1", "--batch-size", "4096"], "--batch-size 4096 cannot be set: it is --num-envs x "
                                                           "--num-steps, 2048 here"),
    (["--env-id", "Pendulum-v1", "--num-iterations", "5", "--total-timesteps", "4096"],
     "--num-iterations 5 cannot be set: it is --total-timesteps / the batch, 2 here"),
]


@pytest.mark.parametrize("flags,message", BAD_INPUTS, ids=[" ".join(f) for f, _ in BAD_INPUTS])
def test_bad_input_gets_one_line(workdir, flags, message):
    proc = run_trainer(workdir, *flags, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "error:" in lines[0], proc.stderr
    assert not os.path.exists(os.path.join(workdir, "runs")) or not run_dirs(workdir)


class MatrixActionEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2, 3), np.float32)


def test_an_action_matrix_is_refused_by_name():
    gym.register("MatrixAction-v0", entry_point=MatrixActionEnv)
    with pytest.raises(rpo.UserError, match=r"MatrixAction-v0 has actions of shape \(2, 3\)"):
        rpo.make_env("MatrixAction-v0", 0, False, "matrix")()


MISSING_PACKAGES = [
    (["shimmy", "dm_control"], ["--env-id", "dm_control/cartpole-balance-v0"], ".[dm-control]"),
    (["wandb"], ["--env-id", "Pendulum-v1", "--track"], ".[wandb]"),
    (["moviepy"], ["--env-id", "Pendulum-v1", "--capture-video"], "--capture-video needs moviepy: pip install -e '.[video]'"),
]


@pytest.mark.parametrize("missing,flags,message", MISSING_PACKAGES, ids=[m[0][0] for m in MISSING_PACKAGES])
def test_missing_package_names_what_to_install(workdir, missing, flags, message):
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in missing)  # import fails as if not installed
    code = (f"import sys, runpy; {blocked}; sys.argv = ['rpo_continuous_action.py', *{flags!r}, '--total-timesteps', "
            f"'512', *{FAST!r}]; runpy.run_path({TRAINER!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, env=clean_env())
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and message in lines[0], proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without a GPU")
def test_cuda_flag_without_gpu_runs_on_cpu(tmp_path):
    """--cuda (the default) on a machine without a GPU trains on the CPU: the run is --no-cuda's, bit for bit."""
    batch = FAST[FAST.index("--num-steps") + 1]  # one iteration
    runs = {}
    for flag in ("--cuda", "--no-cuda"):
        (tmp_path / flag).mkdir()
        run_trainer(str(tmp_path / flag), "--env-id", "Pendulum-v1", flag, "--total-timesteps", batch, *FAST)
        [run] = run_dirs(str(tmp_path / flag))
        runs[flag] = {tag: values for tag, values in scalars(run).items() if tag != "charts/SPS"}
    assert [s for s, _ in runs["--cuda"]["losses/value_loss"]] == [int(batch)]
    assert runs["--cuda"] == runs["--no-cuda"]  # every (step, value) of every tag but the speed


def test_nan_loss_stops_with_the_iteration(workdir):
    code = (f"import sys; sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'tests')!r}]; import nan_env; "
            "import rpo_continuous_action as rpo; "
            "sys.exit(rpo.main(['--env-id', 'NanReward-v0', '--total-timesteps', '2048', '--num-steps', '512', "
            "'--num-minibatches', '4', '--update-epochs', '2', '--save-model']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, env=clean_env())
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "the loss became nan at iteration 1" in lines[0], proc.stderr
    [run] = run_dirs(workdir)
    assert not any(f.endswith(".cleanrl_model") for f in os.listdir(run))  # no garbage checkpoint
    assert "losses/value_loss" not in scalars(run)


def test_interrupted_run_keeps_its_log(workdir):
    # a run far too long to end by itself, interrupted once it has reported its 2nd iteration
    proc = subprocess.Popen([sys.executable, TRAINER, "--env-id", "Pendulum-v1", "--total-timesteps", str(10**8), *FAST],
                            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    iterations = 0
    for line in proc.stdout:
        iterations += line.startswith("SPS:")
        if iterations == 2:
            break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    stopped_at = int(re.search(r"SIGINT: stopped at global_step=(\d+)\n", stderr).group(1))
    assert "Traceback" not in stderr
    [run] = run_dirs(workdir)
    logged = scalars(run)["losses/value_loss"]
    # every iteration up to the stop, the two reported ones at least (a stop during an update finishes it)
    assert stopped_at >= 2 * 512 and [s for s, _ in logged] == list(range(512, stopped_at + 1, 512))


def test_pusher_v4_on_mujoco_3_points_to_the_published_simulator(workdir):
    """gymnasium refuses Pusher-v4 on mujoco 3 with an ImportError: one line that says where it runs, no traceback."""
    proc = run_trainer(workdir, "--env-id", "Pusher-v4", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "error: cannot make environment 'Pusher-v4'" in line and "mujoco<3" in line
    assert line.endswith("(the published simulator: pip install -e '.[mujoco-published]' in a venv of its own)")
