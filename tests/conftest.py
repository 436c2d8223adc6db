import fcntl
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINER = os.path.join(ROOT, "rpo_continuous_action.py")
sys.path.insert(0, ROOT)

# A suite started in the background (`pytest &` in a script) inherits SIGINT ignored, passes that on to every run it
# starts, and the tests that Ctrl-C a sweep or a trainer then wait forever: runs get the default disposition back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Small but complete runs: every code path of an iteration, a fraction of the default's work.
FAST = ["--num-steps", "512", "--num-minibatches", "4", "--update-epochs", "2"]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def run_trainer(cwd, *flags, env=None, timeout=600, check=True, script=TRAINER):
    proc = subprocess.run([sys.executable, script, *flags], cwd=cwd, capture_output=True, text=True,
                          env=env or clean_env(), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"trainer exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def run_dirs(cwd):
    """The run directories under cwd/runs (dm_control ids nest one level deeper)."""
    events = glob.glob(os.path.join(cwd, "runs", "**", "events.out.tfevents.*"), recursive=True)
    return sorted({os.path.dirname(e) for e in events})


def scalars(run_dir):
    """{tag: [(step, value), ...]} from every event file of a run, with TensorBoard's purge rules."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wait_for(condition, what, timeout=300, every=0.2):
    """Polls until condition() holds, every `every` seconds; the timeout only stops a hung test, it asserts nothing
    about speed."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(every)


def alive(pid):
    """Whether process pid is running: it exists and is not a zombie (ended, its status not yet collected)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return "zombie" not in status.read()
    except OSError:
        return False


def processes_in(directory):
    """The running processes whose working directory is `directory` or under it (each run works in its own)."""
    directory, found = os.path.abspath(directory), []
    for entry in os.listdir("/proc"):
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd") if entry.isdigit() else ""
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if (cwd == directory or cwd.startswith(directory + os.sep)) and alive(entry):
            found.append(int(entry))
    return found


def episodic_returns(run_dir):
    """(step, value) of charts/episodic_return, read straight from a run's event files, not via benchmark/score.py."""
    from pathlib import Path

    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.util import tensor_util

    points = []
    for path in sorted(Path(run_dir).rglob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "charts/episodic_return":
                    v = value.simple_value if value.HasField("simple_value") else tensor_util.make_ndarray(value.tensor)
                    points.append((event.step, float(v)))
    return points


@pytest.fixture
def workdir(tmp_path):
    return str(tmp_path)


# One-node Slurm for the tests marked `slurm` (test_benchmark.py, test_tune.py): started by
# benchmark/slurm/start_local_slurm.sh if it is not up already, and stopped at the end only if a test started it.
# pytest-xdist's workers (pyproject's -n) each hold this session fixture: each keeps a shared lock on SLURM_LOCK.users
# while it may submit jobs, and the last to let go stops Slurm, so no worker stops it under another one's jobs. Starting
# and stopping happen under SLURM_LOCK.start.
SBIN_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
START_SLURM = os.path.join(ROOT, "benchmark", "slurm", "start_local_slurm.sh")
SLURM_LOCK = os.path.join(tempfile.gettempdir(), "rpo-tests-slurm")


def slurm_up():
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, env={**os.environ, "PATH": SBIN_PATH})
    return ping.returncode == 0 and "UP" in ping.stdout


@pytest.fixture(scope="session")
def slurm():
    missing = [b for b in ("sbatch", "squeue", "scontrol", "slurmctld", "slurmd", "munged")
               if not shutil.which(b, path=SBIN_PATH)]
    if missing:
        pytest.skip(f"Slurm is not installed (no {', '.join(missing)}); apt-get install -y slurm-wlm munge")
    env, started = {**os.environ, "PATH": SBIN_PATH}, SLURM_LOCK + ".started"  # a test started it: stop it at the end
    with open(SLURM_LOCK + ".start", "a") as start, open(SLURM_LOCK + ".users", "a") as users:
        fcntl.flock(start, fcntl.LOCK_EX)
        if not slurm_up():
            subprocess.run([START_SLURM], check=True, env=env)
            open(started, "w").close()
        fcntl.flock(users, fcntl.LOCK_SH)
        fcntl.flock(start, fcntl.LOCK_UN)
        yield
        fcntl.flock(start, fcntl.LOCK_EX)
        fcntl.flock(users, fcntl.LOCK_UN)
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another worker still uses Slurm and stops it when done
        if os.path.exists(started):
            subprocess.run([START_SLURM, "--stop"], check=True, env=env)
            os.remove(started)


def job_done(job_id):
    queue = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i %T"], capture_output=True, text=True)
    if queue.returncode != 0:  # Slurm forgets a job some minutes after it ended
        return "Invalid job id" in queue.stderr
    return queue.stdout.strip() == ""


# Python lines that import the reference's script (the path in sys.argv[1]) as the module `ref`, without running it
# (it parses its flags and trains only under `if __name__ == "__main__":`).
IMPORT_REFERENCE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("rpo_reference", sys.argv[1])
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
"""


@pytest.fixture(scope="session")
def reference():
    """(python, script) of the reference RPO script (CleanRL's, from the cleanrl 1.2.0 wheel) on its own stack
    (gymnasium 0.29, mujoco 2.3.7): benchmark/reference.sh builds it in /tmp/rpo-reference (REF_DIR moves it) where
    it is not yet, and checks it where it is (the script's hash, the venv's versions) in seconds."""
    ref_dir = os.environ.get("REF_DIR", "/tmp/rpo-reference")
    with open(ref_dir.rstrip("/") + ".lock", "a") as lock:  # pytest-xdist's workers: one builds, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run([os.path.join(ROOT, "benchmark", "reference.sh")], capture_output=True, text=True,
                              timeout=1800, env={**os.environ, "REF_DIR": ref_dir})
    why = (proc.stderr.strip() or "(no message)").splitlines()[-1]
    # reference.sh's status when the package index cannot be reached (offline), or when PYTHON3 is not Python 3.10 or
    # 3.11 (torch 2.13.0's and mujoco 2.3.7's wheels)
    if proc.returncode in (3, 4):
        pytest.skip(f"could not build the reference with benchmark/reference.sh: {why}")
    if proc.returncode != 0:  # a failed install, a hash that does not match, ...: not to be skipped silently
        pytest.fail(f"benchmark/reference.sh exited {proc.returncode}: {why}", pytrace=False)
    return os.path.join(ref_dir, "venv", "bin", "python"), os.path.join(ref_dir, "rpo_reference.py")


def table(markdown, header_start, labels=1):
    """{row label: other cells} of the markdown table whose header starts with header_start;
    with labels=2 a row's label is its first two cells."""
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[:len(header_start)] == header_start:
            rows = {}
            for body in lines[i + 2:]:
                if not body.startswith("|"):
                    break
                cells = [c.strip() for c in body.strip().strip("|").split("|")]
                rows[tuple(cells[:labels]) if labels > 1 else cells[0]] = cells[labels:]
            return rows
    raise AssertionError(f"no table starting with {header_start} in:\n{markdown}")
