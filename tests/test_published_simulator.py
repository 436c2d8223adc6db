"""The published MuJoCo results were run on mujoco 2.3.7: the trainer installs and trains on it with gymnasium 1.x.

The test builds the README's second venv (`pip install torch==2.13.0 -e ".[mujoco-published]"`) and trains
HalfCheetah-v4 in it beside the project's own venv (mujoco 3.x), from the same seed.
"""
import os
import subprocess
import sys

import pytest

from conftest import FAST, ROOT, TRAINER, clean_env, run_dirs, scalars

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
    assert abs(published_return - ours_return) < 0.5 * abs(ours_return) + 50  # the same policy, a nearby trajectory


def test_pusher_v4_trains_on_the_published_simulator(published_python, tmp_path):
    """Pusher-v4, which gymnasium refuses on mujoco 3, trains here: 100-step episodes, every one logged."""
    cwd = str(tmp_path)
    proc = subprocess.run([published_python, TRAINER, "--env-id", "Pusher-v4", "--total-timesteps", "1024", *FAST],
                          cwd=cwd, capture_output=True, text=True, env=clean_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = run_dirs(cwd)
    logged = scalars(run)
    assert [v for _, v in logged["charts/episodic_length"]] == [100.0] * 10
    assert all(v < 0 for _, v in logged["charts/episodic_return"])  # Pusher's reward is a cost
