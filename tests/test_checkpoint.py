"""Policies you can keep: save, evaluate in a fresh process, resume after a signal, watch on video."""
import ctypes.util
import os
import pickle
import re
import signal
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import rpo_continuous_action as rpo
from conftest import FAST, TRAINER, clean_env, run_dirs, run_trainer, scalars


def eval_mean(stdout):
    return float(re.search(r"eval: episodic_return=(-?[\d.]+) ±", stdout).group(1))


def model_file(run_dir):
    [path] = [os.path.join(run_dir, f) for f in os.listdir(run_dir) if f.endswith(".cleanrl_model")]
    return path


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """An (untrained) InvertedPendulum-v4 policy: quick to make, quick to evaluate."""
    cwd = str(tmp_path_factory.mktemp("small"))
    run_trainer(cwd, "--env-id", "InvertedPendulum-v4", "--total-timesteps", "512", "--save-model",
                "--eval-episodes", "0", *FAST)
    [run] = run_dirs(cwd)
    return model_file(run)


def test_learned_policy_scores_the_same_in_a_fresh_process(workdir):
    # InvertedPendulum-v4 balances (return 1000) within 50k steps
    train = run_trainer(workdir, "--env-id", "InvertedPendulum-v4", "--total-timesteps", "51200", "--save-model",
                        "--eval-episodes", "5")
    [run] = run_dirs(workdir)
    logged = scalars(run)
    training_eval = [v for _, v in logged["eval/episodic_return"]]
    assert len(training_eval) == 5 and eval_mean(train.stdout) == pytest.approx(np.mean(training_eval), abs=0.01)
    assert np.mean(training_eval) >= 900, "the test policy did not learn"
    last_training = [v for _, v in logged["charts/episodic_return"][-5:]]
    assert max(last_training) == 1000.0

    path = model_file(run)
    assert path == os.path.join(run, "rpo_continuous_action.cleanrl_model")
    fresh = run_trainer(workdir, "--eval-checkpoint", path, "--eval-episodes", "5")
    assert eval_mean(fresh.stdout) == pytest.approx(np.mean(training_eval), rel=0.05)
    assert "episode=4" in fresh.stdout

    # what the checkpoint holds, opened the safe way
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["global_step"] == 51200 and checkpoint["iteration"] == 25
    assert checkpoint["args"]["env_id"] == "InvertedPendulum-v4"
    for key in ("agent", "optimizer", "obs_rms", "return_rms", "rng"):
        assert key in checkpoint
    assert checkpoint["obs_rms"]["count"] > 51200  # statistics of every observation seen
    assert os.path.getsize(path) < 1_000_000

    # The case that breaks when the normalizer statistics are not saved: the same weights,
    # evaluated on unnormalized observations, fall over.
    args, _ = rpo.parse_args(["--env-id", "InvertedPendulum-v4"])
    identity = {"mean": torch.zeros(4), "var": torch.ones(4)}
    without_stats = rpo.evaluate(rpo.agent_from_checkpoint(checkpoint), identity, args, "unused", 3, seed=1)
    assert np.mean(without_stats) < 0.5 * np.mean(training_eval)

    # one call to act in the user's own code, on the raw env
    act = rpo.load_policy(path)
    env = gym.make("InvertedPendulum-v4")
    obs, _ = env.reset(seed=5)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(act(obs))
        total, done = total + reward, terminated or truncated
    assert total >= 900
    assert act(np.stack([obs, obs])).shape == (2, 1)


def test_sigterm_writes_a_checkpoint_of_the_last_finished_iteration(workdir):
    """SIGTERM from outside (Slurm's pre-emption): exit 143 and a checkpoint of the last finished iteration, named on
    stderr for --resume. That the resumed run is the uninterrupted one, bit for bit, is test_resume.py's."""
    flags = ["--env-id", "Pendulum-v1", "--total-timesteps", str(10**8), "--save-model", *FAST]  # cannot end first
    proc = subprocess.Popen([sys.executable, TRAINER, *flags], cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean_env())
    iterations = 0
    for line in proc.stdout:  # the run reports its 2nd iteration
        iterations += line.startswith("SPS:")
        if iterations == 2:
            break
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    [run] = run_dirs(workdir)
    path = model_file(run)
    stop = re.search(r"SIGTERM: stopped at global_step=(\d+); continue with --resume (\S+)\n", stderr)
    assert stop and stop.group(2) == os.path.relpath(path, workdir) and "Traceback" not in stderr, stderr
    stopped_at = int(stop.group(1))
    # the 2 reported iterations at least (a stop during an update finishes that iteration), and all of them logged
    assert stopped_at >= 2 * 512 and stopped_at % 512 == 0
    assert [s for s, _ in scalars(run)["losses/value_loss"]] == list(range(512, stopped_at + 1, 512))
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["global_step"] == stopped_at and checkpoint["iteration"] == stopped_at // 512


def test_checkpoint_is_replaced_atomically(small_checkpoint, tmp_path):
    target = tmp_path / "model.cleanrl_model"
    target.write_bytes(open(small_checkpoint, "rb").read())
    before = target.read_bytes()
    # the file written aside is /dev/full: every write fails with the OS's own ENOSPC, as on a full disk
    os.symlink("/dev/full", f"{target}.tmp")

    checkpoint = rpo.load_checkpoint(small_checkpoint)
    args, _ = rpo.parse_args(["--env-id", "InvertedPendulum-v4"])
    envs = rpo.make_envs(args, "atomic")
    next_obs, _ = envs.reset(seed=1)
    agent = rpo.agent_from_checkpoint(checkpoint)
    optimizer = torch.optim.Adam(agent.parameters(), lr=3e-4, eps=1e-5)
    point = rpo.resume_point(envs, next_obs, 0, 0, np.random.default_rng())
    with pytest.raises(rpo.UserError, match=f"cannot write the checkpoint {target}: No space left on device"):
        rpo.save_checkpoint(str(target), args, "atomic", agent, optimizer, envs, point)
    envs.close()
    assert target.read_bytes() == before
    assert rpo.load_checkpoint(str(target))["global_step"] == 512
    assert sorted(os.listdir(tmp_path)) == ["model.cleanrl_model"]  # no .tmp left behind


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def bad_files(directory, good):
    data = open(good, "rb").read()
    files = {
        "missing": os.path.join(directory, "nothing-here.cleanrl_model"),
        "truncated": os.path.join(directory, "truncated.cleanrl_model"),
        "foreign": os.path.join(directory, "foreign.cleanrl_model"),
        "code": os.path.join(directory, "code.cleanrl_model"),
    }
    open(files["truncated"], "wb").write(data[: len(data) // 2])
    torch.save({"state_dict": {"w": torch.zeros(3)}}, files["foreign"])
    with open(files["code"], "wb") as f:
        pickle.dump(Exploit(), f)
    return files


# --eval-checkpoint and --resume open a checkpoint through the same code: each kind of bad file once, modes alternating
@pytest.mark.parametrize("kind,mode,message", [
    ("missing", "--eval-checkpoint", "no checkpoint file at"),
    ("truncated", "--resume", "is not a readable checkpoint"),
    ("foreign", "--eval-checkpoint", "is not a checkpoint of rpo_continuous_action.py"),
    ("code", "--resume", "is not a readable checkpoint")])
def test_bad_checkpoint_files(workdir, small_checkpoint, kind, mode, message):
    path = bad_files(workdir, small_checkpoint)[kind]
    proc = run_trainer(workdir, mode, path, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not os.path.exists(os.path.join(workdir, "pwned"))  # opening a file never runs its code


def test_resume_keeps_the_batch_shape_and_takes_the_given_learning_rate(workdir, small_checkpoint):
    proc = run_trainer(workdir, "--resume", small_checkpoint, "--num-envs", "2", check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--num-envs 2 differs from the saved run's 1" in lines[0], proc.stderr
    # a resumed run that extends the budget with a constant rate uses the rate it is given
    import shutil
    run = os.path.join(workdir, "runs", os.path.basename(os.path.dirname(small_checkpoint)))
    shutil.copytree(os.path.dirname(small_checkpoint), run)
    path = os.path.join(os.path.relpath(run, workdir), os.path.basename(small_checkpoint))
    run_trainer(workdir, "--resume", path, "--total-timesteps", "1024", "--no-anneal-lr", "--learning-rate", "0.001")
    logged = scalars(run)
    assert [(s, round(v, 6)) for s, v in logged["charts/learning_rate"]] == [(512, 0.0003), (1024, 0.001)]


def test_resuming_a_finished_run_says_so_and_writes_nothing(workdir, small_checkpoint):
    import shutil
    run = os.path.join(workdir, "runs", os.path.basename(os.path.dirname(small_checkpoint)))
    shutil.copytree(os.path.dirname(small_checkpoint), run)
    before = {f: os.path.getsize(os.path.join(run, f)) for f in os.listdir(run)}
    path = os.path.join(os.path.relpath(run, workdir), os.path.basename(small_checkpoint))
    proc = run_trainer(workdir, "--resume", path, "--eval-episodes", "2")
    assert proc.returncode == 0 and proc.stdout.strip().splitlines() == [
        f"{os.path.basename(run)} has trained its 512 steps; give a larger --total-timesteps to train it further"]
    # no second evaluation, no second event file
    assert {f: os.path.getsize(os.path.join(run, f)) for f in os.listdir(run)} == before


def test_load_policy_rejects_a_wrong_observation_shape(small_checkpoint):
    act = rpo.load_policy(small_checkpoint)
    assert act(np.zeros(4)).shape == (1,)
    with pytest.raises(ValueError, match=r"expected an observation of shape \(4,\)"):
        act(np.zeros(8))


# --resume goes on past the checkpoint's 512 steps: a finished run is only reported as finished
@pytest.mark.parametrize("flags", [["--eval-checkpoint"], ["--total-timesteps", "1024", "--resume"]], ids=lambda f: f[-1])
def test_checkpoint_for_another_env(workdir, small_checkpoint, flags):
    run = os.path.dirname(small_checkpoint)
    before = {f: os.path.getmtime(os.path.join(run, f)) for f in os.listdir(run)}
    proc = run_trainer(workdir, *flags, small_checkpoint, "--env-id", "Pendulum-v1", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "made for observations (4,) and actions (1,), but Pendulum-v1 has (3,) and (1,)" in lines[0], \
        proc.stderr
    assert {f: os.path.getmtime(os.path.join(run, f)) for f in os.listdir(run)} == before  # the run is left as it was
    assert not os.path.exists(os.path.join(workdir, "runs"))


def video_frames(path):
    import imageio.v2 as imageio

    with imageio.get_reader(path, "ffmpeg") as reader:
        return np.stack([frame for frame in reader])  # list() would trust its infinite length hint


def assert_real_video(folder):
    videos = sorted(f for f in os.listdir(folder) if f.endswith(".mp4"))
    assert videos, f"no video in {folder}"
    frames = video_frames(os.path.join(folder, videos[0]))
    assert frames.ndim == 4 and len(frames) > 1
    assert frames[0].std() > 5, "the frame is all one colour"
    return frames


needs_offscreen_gl = pytest.mark.skipif(
    not (ctypes.util.find_library("OSMesa") or ctypes.util.find_library("EGL")),
    reason="needs OSMesa or EGL for rendering without a display (apt-get install libosmesa6)")


@needs_offscreen_gl
@pytest.mark.parametrize("env_id", ["InvertedPendulum-v4", "dm_control/cartpole-balance-v0"])
def test_training_video_without_a_display(workdir, env_id):
    run_trainer(workdir, "--env-id", env_id, "--total-timesteps", "128", "--num-steps", "128", "--num-minibatches", "4",
                "--update-epochs", "1", "--capture-video")  # clean_env: neither DISPLAY nor MUJOCO_GL set
    [run] = run_dirs(workdir)
    assert_real_video(os.path.join(workdir, "videos", os.path.relpath(run, os.path.join(workdir, "runs"))))


@needs_offscreen_gl
def test_evaluation_video(workdir, small_checkpoint):
    proc = run_trainer(workdir, "--eval-checkpoint", small_checkpoint, "--eval-episodes", "2", "--capture-video")
    run_name = os.path.basename(os.path.dirname(small_checkpoint))
    folder = os.path.join(workdir, "videos", f"{run_name}-eval")
    assert sorted(os.listdir(folder)) == ["rl-video-episode-0.mp4", "rl-video-episode-1.mp4"]
    frames = assert_real_video(folder)
    assert not np.array_equal(frames[0], frames[-1])  # the pendulum moves
    assert "eval: episodic_return=" in proc.stdout
