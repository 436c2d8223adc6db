"""The published MuJoCo results were run on mujoco 2.3.7: the trainer installs and trains on it with gymnasium 1.x.

The test builds the README's second venv (`pip install torch==2.13.0 -e ".[mujoco-published]"`) and trains
HalfCheetah-v4 in it beside the project's own venv (mujoco 3.x), from the same seed.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import FAST, IMPORT_REFERENCE, ROOT, TRAINER, clean_env, run_dirs, scalars

if sys.version_info >= (3, 12):  # the venv is made with this python
    pytest.skip(f"mujoco 2.3.7 (the published simulator) has no wheel for Python {sys.version_info.major}."
                f"{sys.version_info.minor}, only for 3.8 to 3.11: run these tests with Python 3.11",
                allow_module_level=True)

FLAGS = ["--env-id", "HalfCheetah-v4", "--total-timesteps", "1024", *FAST]


@pytest.fixture(scope="module")
def published_python(tmp_path_factory):
    venv = tmp_path_factory.mktemp("venv-mujoco-published")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "torch==2.13.0", "-e", f"{ROOT}[mujoco-published]"]
    proc = subprocess.run(pip, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return str(venv / "bin" / "python")


def train(python, cwd):
    os.makedirs(cwd)
    proc = subprocess.run([python, TRAINER, *FLAGS], cwd=cwd, capture_output=True, text=True, env=clean_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    version = subprocess.run([python, "-c", "import mujoco; print(mujoco.__version__)"], capture_output=True, text=True)
    [run] = run_dirs(cwd)
    return version.stdout.strip(), scalars(run)


def test_trains_on_the_published_simulator(published_python, tmp_path):
    version, logged = train(published_python, str(tmp_path / "published"))
    assert version == "2.3.7"
    assert [s for s, _ in logged["losses/value_loss"]] == [512, 1024]
    assert [v for _, v in logged["charts/episodic_length"]] == [1000.0]  # HalfCheetah's one time-limited episode
    # the same seed on mujoco 3.x: the same run up to the simulator, which already moves the first episode's return
    ours_version, ours = train(sys.executable, str(tmp_path / "ours"))
    assert ours_version.startswith("3.")
    [(_, published_return)], [(_, ours_return)] = logged["charts/episodic_return"], ours["charts/episodic_return"]
    assert published_return != ours_return
    # up to the simulator: our env chain on either simulator, the same seed and actions. The reset (the seeded RNG's
    # noise on the initial state, no physics step yet) gives the network the same first observation, bit for bit,
    # and the first step the same observation and reward to float32 rounding; the physics then part them.
    on_published, on_ours = (env_stream(python, OURS_STREAM, ROOT, tmp_path / f"{name}.npz")
                             for name, python in (("published", published_python), ("ours", sys.executable)))
    assert np.array_equal(on_published["obs"][0], on_ours["obs"][0])
    np.testing.assert_allclose(on_published["obs"][1], on_ours["obs"][1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(on_published["rewards"][0], on_ours["rewards"][0], rtol=1e-6)
    assert not np.array_equal(on_published["obs"], on_ours["obs"])


def test_pusher_v4_trains_on_the_published_simulator(published_python, tmp_path):
    """Pusher-v4, which gymnasium refuses on mujoco 3, trains here: 100-step episodes, every one logged."""
    cwd = str(tmp_path)
    proc = subprocess.run([published_python, TRAINER, "--env-id", "Pusher-v4", "--total-timesteps", "1024", *FAST],
                          cwd=cwd, capture_output=True, text=True, env=clean_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = run_dirs(cwd)
    logged = scalars(run)
    assert [v for _, v in logged["charts/episodic_length"]] == [100.0] * 10


# The reference's own env factory, imported from its script, in its own venv (gymnasium 0.29, mujoco 2.3.7).
REFERENCE_STREAM = IMPORT_REFERENCE + """
import gymnasium as gym, numpy as np
envs = gym.vector.SyncVectorEnv([ref.make_env("HalfCheetah-v4", 0, False, "stream", 0.99)])
"""
OURS_STREAM = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import rpo_continuous_action as rpo
args, _ = rpo.parse_args(["--env-id", "HalfCheetah-v4"])
envs = rpo.make_envs(args, "stream")
"""
STEP = """
obs, _ = envs.reset(seed=5)
steps = [(obs, None, None)]
for action in np.random.default_rng(1).uniform(-1.5, 1.5, (3000, 1, 6)).astype(np.float32):
    obs, reward, terminated, truncated, _ = envs.step(action)
    steps.append((obs, reward, terminated | truncated))
np.savez(sys.argv[2], obs=np.array([s[0] for s in steps]), rewards=np.array([s[1] for s in steps[1:]]),
         dones=np.array([s[2] for s in steps[1:]]))
"""


def env_stream(python, code, first, path):
    """Runs code (an `envs` maker) and STEP in python with sys.argv[1] = first: the observations, rewards and dones
    of 3,000 seeded random actions."""
    proc = subprocess.run([python, "-c", code + STEP, str(first), str(path)], cwd=path.parent, capture_output=True,
                          text=True, timeout=300)  # cwd: mujoco 3 writes its MUJOCO_LOG.TXT there
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(path)


def test_the_network_sees_what_the_references_envs_give_it(published_python, reference, tmp_path):
    """On the published simulator, ours and the reference's wrapper chain (gymnasium 0.29's per-env normalizers)
    give the network the same observations and rewards for the same actions, bit for bit, over 3,000 steps and
    3 time limits: the first observation alone differs, by rounding, as 0.29 starts its statistics in float64."""
    python, script = reference
    theirs = env_stream(python, REFERENCE_STREAM, script, tmp_path / "theirs.npz")
    ours = env_stream(published_python, OURS_STREAM, ROOT, tmp_path / "ours.npz")
    assert theirs["dones"].sum() == 3 and np.array_equal(theirs["dones"], ours["dones"])
    assert np.array_equal(theirs["rewards"], ours["rewards"])
    fed = theirs["obs"].astype(np.float32)  # the reference's torch.Tensor(next_obs)
    assert ours["obs"].dtype == np.float32
    assert np.array_equal(fed[1:], ours["obs"][1:])
    assert 0 < np.abs(fed[0] - ours["obs"][0]).max() < 1e-9
