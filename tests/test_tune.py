"""benchmark/tune.py: Optuna studies over the trainer's flags, locally and as Slurm workers.

The studies train the real trainer on Pendulum-v1 for 2048 steps a run (eight iterations of 256
steps). The pruning and interruption tests use a stand-in trainer (TRAINER=...) whose returns are
set by --rpo-alpha, so that which trial is bad does not depend on chance. The Slurm test runs
against a real one-node Slurm (benchmark/slurm/start_local_slurm.sh, as root) and is skipped only
where Slurm's binaries are not installed (apt-get install -y slurm-wlm munge).
"""

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import job_done

ROOT = Path(__file__).resolve().parents[1]
TUNE = ROOT / "benchmark" / "tune.py"
ENV = "Pendulum-v1"
TINY = ["--total-timesteps", "2048", "--num-steps", "256", "--num-minibatches", "4", "--update-epochs", "2"]
# Pendulum's returns lie in about [-1600, 0]: a fixed range makes the values checkable.
TARGET = ["--target", f"{ENV}=-1600:0"]
PNG = b"\x89PNG\r\n\x1a\n"

# A stand-in trainer: every 200 steps an episode of return -1000 * alpha; alpha >= 0.85 is slow.
STUB = r'''
import os, signal, sys, time
argv = sys.argv[1:]
alpha = float(argv[argv.index("--rpo-alpha") + 1])
total = int(argv[argv.index("--total-timesteps") + 1])
with open("pid", "w") as f:
    f.write(str(os.getpid()))
def stop(signum, frame):
    print(f"stub: got signal {signum}", flush=True)
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
for step in range(200, total + 1, 200):
    time.sleep(0.5 if alpha >= 0.85 else 0.02)
    print(f"global_step={step}, episodic_return={-1000 * alpha}", flush=True)
'''


def tune_env(**extra):
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def tune(out, *args, trainer=TINY, env=None, timeout=600):
    return subprocess.run([sys.executable, str(TUNE), "--env-ids", ENV, "--out", str(out), *args, "--", *trainer],
                          capture_output=True, text=True, env=env or tune_env(), timeout=timeout)


def rows(out):
    with open(out / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def processes_in(directory):
    """Processes whose working directory is under `directory` (the trainers run in their run directories)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.readlink(proc / "cwd").startswith(str(directory)):
                    found.append(int(proc.name))
            except OSError:
                pass
    return [pid for pid in found if alive(pid)]


def final_return(run_dir):
    """Mean of the last 10 charts/episodic_return values, read from the event files (not from tune.py's parsing)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.util import tensor_util

    points = []
    for path in sorted(run_dir.rglob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "charts/episodic_return":
                    v = value.simple_value if value.HasField("simple_value") else tensor_util.make_ndarray(value.tensor)
                    points.append((event.step, float(v)))
    return np.mean([v for _, v in sorted(points)][-10:])


def wait_for(condition, what, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.2)


def stub_env(tmp_path):
    stub = tmp_path / "stub_trainer.py"
    stub.write_text(STUB)
    return tune_env(TRAINER=str(stub))


def assert_png(path):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 5000, path
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 300 and image.std() > 0, path


# ------------------------------------------------------------------------------- a local study
@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "study"
    result = tune(out, "--seeds", "1", "--n-trials", "3", *TARGET)
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result


def test_study_writes_one_row_per_trial_with_values_from_the_runs(tiny_study):
    out, result = tiny_study
    table = rows(out)
    assert [r["number"] for r in table] == ["0", "1", "2"]
    assert {"number", "state", "value", "rpo_alpha", f"return:{ENV}"} <= set(table[0])
    for r in table:
        assert r["state"] == "COMPLETE"
        alpha = float(r["rpo_alpha"])
        assert 0.001 <= alpha <= 1
        # the trainer got the trial's alpha, and the value is the normalized final return of its run
        run = out / "trials" / r["number"] / f"{ENV}__seed1"
        log = (run / "train.log").read_text()
        assert f"--rpo-alpha {alpha!r}" in log and "--torch-threads 1" in log and "--seed 1" in log
        assert "trainer exited with status 0" in log
        final = final_return(run)
        assert float(r[f"return:{ENV}"]) == pytest.approx(final, abs=0.01)
        assert float(r["value"]) == pytest.approx((final + 1600) / 1600, abs=1e-5)
    # one progress line per finished trial
    lines = re.findall(r"^\[(\d)/3\] trial (\d) COMPLETE value=(\S+) rpo_alpha=\S+ .*\| best: trial \d",
                       result.stdout, re.M)
    assert sorted(n for _, n, _ in lines) == ["0", "1", "2"]
    # the best trial, on stdout and in trials.md
    best = max(table, key=lambda r: float(r["value"]))
    assert f"best: trial {best['number']}, value {float(best['value']):.4g}" in result.stdout
    assert f"--rpo-alpha {float(best['rpo_alpha'])!r}" in result.stdout
    md = (out / "trials.md").read_text()
    assert f"**best: trial {best['number']}, value {float(best['value']):.4g}" in md
    assert len([line for line in md.splitlines() if re.match(r"\| \d+ \| COMPLETE \|", line)]) == 3
    assert f"{ENV} -1600..0 (--target)" in md
    assert processes_in(out) == []


def test_study_draws_the_plots_it_can(tiny_study):
    out, result = tiny_study
    for name in ("optimization_history.png", "slice.png", "intermediate_values.png"):
        assert_png(out / name)
        assert f"]({name})" in (out / "trials.md").read_text()
    # one searched flag: no importance plot, and it says why
    assert not (out / "param_importances.png").exists()
    assert "no param_importances.png: needs two or more searched flags" in result.stdout


def test_rerun_with_more_trials_continues_the_study(tiny_study, tmp_path):
    out = tmp_path / "study"
    shutil.copytree(tiny_study[0], out)
    before = rows(out)
    old_logs = {p: p.stat().st_mtime_ns for p in (out / "trials").rglob("train.log")}

    result = tune(out, "--seeds", "1", "--n-trials", "5", *TARGET)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "running 2 of 5 trials (3 done earlier)" in result.stdout
    after = rows(out)
    assert [r["number"] for r in after] == ["0", "1", "2", "3", "4"]
    assert after[:3] == before  # the old trials are kept as they were, not run again
    assert all(r["state"] == "COMPLETE" for r in after)
    assert {p: p.stat().st_mtime_ns for p in old_logs} == old_logs
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0", "1", "2", "3", "4"]

    again = tune(out, "--seeds", "1", "--n-trials", "5", *TARGET)
    assert again.returncode == 0, again.stderr
    assert "has 5 trials (--n-trials 5); nothing to run" in again.stdout
    assert rows(out) == after

    # the same DIR with other settings is refused rather than mixed in
    other = tune(out, "--seeds", "2", "--n-trials", "6", *TARGET)
    assert other.returncode == 2
    assert other.stderr.count("\n") == 1 and "holds a study with other seeds" in other.stderr
    assert rows(out) == after


def test_two_local_workers_share_one_study(tmp_path):
    out = tmp_path / "study"
    result = tune(out, "--seeds", "1", "--n-trials", "4", "--workers", "2", *TARGET,
                  "--param", "num-minibatches=2,4,8", "--param", "anneal-lr=true,false",
                  "--param", "learning-rate=1e-4:1e-3:log",
                  trainer=["--total-timesteps", "2048", "--num-steps", "256", "--update-epochs", "2"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 worker(s)" in result.stdout
    table = rows(out)
    assert sorted(int(r["number"]) for r in table) == [0, 1, 2, 3]  # none lost, none extra
    assert all(r["state"] == "COMPLETE" for r in table)
    assert len({r["worker"] for r in table}) == 2  # both workers ran trials
    assert len(set(re.findall(r"^\[\d/4\] trial (\d) COMPLETE", result.stdout, re.M))) == 4
    assert (out / "study.db").is_file() and not (out / "study.journal").exists()
    # every searched flag reached the trainer in its own form: an integer, a switch, a float
    for r in table:
        log = (out / "trials" / r["number"] / f"{ENV}__seed1" / "train.log").read_text()
        assert r["num_minibatches"] in ("2", "4", "8") and f"--num-minibatches {r['num_minibatches']} " in log
        assert (" --anneal-lr " if r["anneal_lr"] == "True" else " --no-anneal-lr ") in log
        assert 1e-4 <= float(r["learning_rate"]) <= 1e-3 and f"--learning-rate {float(r['learning_rate'])!r}" in log
        assert f"--rpo-alpha {float(r['rpo_alpha'])!r}" in log
    # several searched flags and complete trials: the importance plot can be drawn
    assert_png(out / "param_importances.png")
    assert processes_in(out) == []


# ------------------------------------------------------------------------------- pruning and interruption
def test_a_bad_trial_is_pruned_and_its_trainer_stopped(tmp_path):
    out = tmp_path / "study"
    # trials 0 and 1 score -10 and -20; trial 2 scores -900 and would run 20 s (0.5 s an episode)
    result = tune(out, "--seeds", "1", "--n-trials", "3", "--target", f"{ENV}=-1000:0",
                  "--enqueue", "rpo-alpha=0.01", "--enqueue", "rpo-alpha=0.02", "--enqueue", "rpo-alpha=0.9",
                  "--prune-startup", "2", "--prune-warmup", "0", "--report-every", "400",
                  trainer=["--total-timesteps", "8000"], env=stub_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    table = rows(out)
    assert [(r["number"], r["state"]) for r in table] == [("0", "COMPLETE"), ("1", "COMPLETE"), ("2", "PRUNED")]
    assert [float(r["rpo_alpha"]) for r in table] == [0.01, 0.02, 0.9]
    assert float(table[0]["value"]) == pytest.approx(0.99) and float(table[1]["value"]) == pytest.approx(0.98)
    pruned = table[2]
    assert float(pruned["value"]) == pytest.approx(0.1)  # its last intermediate value
    assert pruned["pruned_at_step"] == "400"
    assert float(pruned["seconds"]) < 10
    assert re.search(r"^\[3/3\] trial 2 PRUNED at step 400 value=0.1 rpo_alpha=0.9 ", result.stdout, re.M)
    # its trainer got SIGTERM, exited, and nothing is left running
    run = out / "trials" / "2" / f"{ENV}__seed1"
    log = (run / "train.log").read_text()
    assert "stub: got signal 15" in log and "trainer exited with status 143" in log
    assert not alive(int((run / "pid").read_text()))
    assert processes_in(out) == []
    assert_png(out / "intermediate_values.png")


def test_interrupted_study_marks_the_trial_failed_and_a_rerun_replaces_it(tmp_path):
    out = tmp_path / "study"
    env = stub_env(tmp_path)
    args = [sys.executable, str(TUNE), "--env-ids", ENV, "--out", str(out), "--n-trials", "2", "--no-prune",
            "--", "--total-timesteps", "4000"]
    runner = subprocess.Popen([*args[:-3], "--enqueue", "rpo-alpha=0.9", *args[-3:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    pid_file = out / "trials" / "0" / f"{ENV}__seed1" / "pid"
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), "trial 0's trainer to start")
    finally:
        runner.send_signal(signal.SIGINT)
        stdout, stderr = runner.communicate(timeout=120)
    assert runner.returncode == 130, stdout + stderr
    assert "trial 0 interrupted by SIGINT: marked FAIL, it will be run again" in stdout
    assert stderr.strip().endswith("interrupted; rerun the same command to continue the study")
    assert not alive(int(pid_file.read_text()))
    assert processes_in(out) == []
    assert [(r["number"], r["state"]) for r in rows(out)] == [("0", "FAIL")]

    # the interrupted trial does not count: the rerun runs two more
    rerun = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "running 2 of 2 trials (0 done earlier)" in rerun.stdout
    assert [(r["number"], r["state"]) for r in rows(out)] == [("0", "FAIL"), ("1", "COMPLETE"), ("2", "COMPLETE")]


def test_a_killed_worker_leaves_no_trainer_and_its_trial_is_run_again(tmp_path):
    out = tmp_path / "study"
    env = stub_env(tmp_path)
    args = [sys.executable, str(TUNE), "--env-ids", ENV, "--out", str(out), "--n-trials", "1", "--no-prune",
            "--", "--total-timesteps", "4000"]
    runner = subprocess.Popen([*args[:-3], "--enqueue", "rpo-alpha=0.9", *args[-3:]], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    pid_file = out / "trials" / "0" / f"{ENV}__seed1" / "pid"
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), "trial 0's trainer to start")
    finally:
        runner.kill()  # no chance to clean up: SIGKILL, as a lost node or the OOM killer
        runner.communicate(timeout=60)
    wait_for(lambda: not alive(int(pid_file.read_text())), "the orphaned trainer to stop", timeout=30)
    assert processes_in(out) == []
    # the trial stays RUNNING until its heartbeat is old; pretend that time has passed
    heartbeat = out / "trials" / "0" / "heartbeat"
    os.utime(heartbeat, (time.time() - 600, time.time() - 600))
    rerun = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "trial 0 lost its worker (no heartbeat for 6" in rerun.stdout
    assert [(r["number"], r["state"]) for r in rows(out)] == [("0", "FAIL"), ("1", "COMPLETE")]


# ------------------------------------------------------------------------------- the objective's arithmetic
def test_score_ranges_and_the_iqm(tmp_path, monkeypatch):
    sys.path.insert(0, str(TUNE.parent))
    import tune as tune_module

    published = tmp_path / "published.csv"
    published.write_text("table,suite,env_id,method,rpo_alpha,mean,std,timesteps,seeds\n"
                         "a,a,Pendulum-v1,ppo,0,-1141.98,135.55,8000000,10\n"
                         "a,a,Pendulum-v1,rpo,0.5,-151.08,3.73,8000000,10\n"
                         "a,a,Hopper-v4,ppo,0,2741.42,269.11,8000000,10\n")
    monkeypatch.setattr(tune_module, "PUBLISHED", published)
    ranges = tune_module.targets(["Pendulum-v1", "dm_control/cartpole-balance-v0", "Hopper-v4"],
                                 {"Hopper-v4": (0.0, 3000.0)})
    assert [r[:2] for r in ranges.values()] == [[-1141.98, -151.08], [0.0, 1000.0], [0.0, 3000.0]]
    assert tune_module.normalized(-646.53, ranges["Pendulum-v1"]) == pytest.approx(0.5)
    # one published mean is no range; with two envs a missing range is an error, with one the raw return is used
    with pytest.raises(tune_module.UserError, match="give --target Hopper-v4=LOW:HIGH"):
        tune_module.targets(["Pendulum-v1", "Hopper-v4"], {})
    assert tune_module.targets(["Hopper-v4"], {})["Hopper-v4"][:2] == [None, None]
    # IQM: the mean of the middle half; below 4 runs, the mean
    assert tune_module.aggregate([100, 0, 1, 2, 3, 4, 5, -100], "iqm") == pytest.approx(2.5)
    assert tune_module.aggregate([100, 0, 1, 2, 3, 4, 5, -100], "mean") == pytest.approx(15 / 8)
    assert tune_module.aggregate([0, 1, 5], "iqm") == pytest.approx(2)


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, trainer, message", [
    (["--bogus"], [], "unrecognized arguments: --bogus"),
    (["--seeds", "0"], [], "--seeds must be an integer >= 1"),
    (["--n-trials", "many"], [], "argument --n-trials: invalid int value: 'many'"),
    (["--param", "no-such-flag=1:2"], [], "the trainer has no flag --no-such-flag"),
    (["--param", "learning-rate=1e-3:1e-3"], [], "empty range"),
    (["--param", "learning-rate=1e-3:1e-4:log"], [], "empty range"),
    (["--param", "rpo-alpha=0:1:log"], [], "a log range needs LOW > 0"),
    (["--param", "num-minibatches=16"], [], "expected FLAG=LOW:HIGH[:log] or FLAG=A,B,C"),
    (["--param", "seed=1:5"], [], "--seed: this flag cannot be searched"),
    (["--target", f"{ENV}=0:-1"], [], "empty range"),
    (["--env-ids", "NoSuchEnv-v0"], [], "cannot make environment 'NoSuchEnv-v0'"),
    (["--env-ids", "dm_control/nosuch-task-v0"], [], "cannot make environment 'dm_control/nosuch-task-v0'"),
    (["--env-ids", f"{ENV} MountainCarContinuous-v0"], [], "no score range for MountainCarContinuous-v0"),
    (["--partition", "cpu"], [], "only make sense with --slurm"),
    ([], ["--bogus-flag", "1"], "unknown trainer flag --bogus-flag"),
    ([], ["--seed", "3"], "trainer flag --seed is set by the tuner"),
    ([], ["--num-minibatches", "3"], "--num-minibatches 3 does not divide the batch"),
    (["--param", "learning-rate=1e-4:1e-3"], ["--learning-rate", "1e-3"], "--learning-rate is searched"),
])
def test_bad_input_gets_one_line_and_no_study(tmp_path, args, trainer, message):
    out = tmp_path / "study"
    result = subprocess.run([sys.executable, str(TUNE), "--env-ids", ENV, "--out", str(out), *args, "--", *trainer],
                            capture_output=True, text=True, env=tune_env())
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("tune.py: error: "), result.stderr
    assert message in result.stderr
    assert not out.exists()


def test_slurm_without_sbatch_on_path_is_an_error(tmp_path):
    result = subprocess.run([sys.executable, str(TUNE), "--env-ids", ENV, "--slurm", "--out", str(tmp_path / "s")],
                            capture_output=True, text=True, env=tune_env(PATH=str(tmp_path)))
    assert result.returncode == 2
    assert result.stderr == "tune.py: error: --slurm given but sbatch is not on PATH\n"


# ------------------------------------------------------------------------------- Slurm
@pytest.mark.slurm
def test_slurm_workers_share_one_journal_study(slurm, tmp_path):
    out = tmp_path / "study"
    args = ["--seeds", "1", "--n-trials", "3", "--workers", "2", *TARGET, "--slurm", "--time", "00:10:00"]
    result = tune(out, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    job_id = re.search(r"submitted Slurm job array (\d+): 2 worker\(s\) for 3 of 3 trials", result.stdout)[1]
    wait_for(lambda: job_done(job_id), f"Slurm job {job_id} to finish")

    logs = sorted(p.name for p in (out / "slurm" / "logs").iterdir())
    assert logs == [f"{job_id}_0.out", f"{job_id}_1.out"]
    table = rows(out)
    text = "".join((out / "slurm" / "logs" / name).read_text() for name in logs)
    assert sorted(int(r["number"]) for r in table) == [0, 1, 2], text
    assert all(r["state"] == "COMPLETE" for r in table), text
    # every trial ran in one of the array's tasks (both, unless the node ran only one at a time)
    tasks = {re.search(r"\(Slurm (\d+_\d)\)", r["worker"])[1] for r in table}
    assert tasks and tasks <= {f"{job_id}_0", f"{job_id}_1"}, table
    for r in table:  # the runs trained for real
        assert float(r["value"]) == pytest.approx((final_return(out / "trials" / r["number"] / f"{ENV}__seed1")
                                                   + 1600) / 1600, abs=1e-5)
    assert (out / "study.journal").is_file() and not (out / "study.db").exists()
    assert_png(out / "optimization_history.png")

    # the finished study: a rerun submits nothing
    again = tune(out, *args)
    assert again.returncode == 0, again.stderr
    assert "nothing to run" in again.stdout and "submitted" not in again.stdout
