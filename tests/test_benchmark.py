"""benchmark/: sweep.sh runs (locally and as a Slurm job array), resumes, and report.py's tables.

Every sweep here trains the real trainer on Pendulum-v1 for a few thousand steps. Where a
test interrupts a run, the trainer is the real one with one wait added (HOLD below): after
its first checkpoint it waits until it is told to stop, so the interruption comes at that
point whatever the machine's speed. The Slurm tests (marked `slurm`) run against a real one-node Slurm that
benchmark/slurm/start_local_slurm.sh starts (as root); they are skipped only where
Slurm's binaries are not installed (apt-get install -y slurm-wlm munge).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import FAST, alive, episodic_returns, job_done, processes_in, table, wait_for

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "benchmark" / "sweep.sh"
REPORT = ROOT / "benchmark" / "report.py"
ENV = "Pendulum-v1"  # 200-step episodes
# conftest's small but complete runs, with one evaluation episode after training rather than ten
FAST_EVAL = [*FAST, "--eval-episodes", "1"]
TINY = ["--total-timesteps", "4096", *FAST_EVAL]  # 20 Pendulum episodes
# The header of report.py's first table (mean ± std of the runs' final returns), for sweeps of alphas 0.5 and 0
SUMMARY = ["", "PPO (α=0)", "RPO α=0.5"]


def sweep_env(**extra):
    return {**os.environ, "PYTHON": sys.executable, **extra}


# The real trainer, but a run of seed HOLD_SEED that is not resumed waits after its first checkpoint until a signal
# asks it to stop; it then stops as the trainer does (a checkpoint, exit 130 or 143).
HOLD = f'''
import os, sys, time
sys.path.insert(0, {str(ROOT)!r})
import rpo_continuous_action as rpo
requests, save, enter = [], rpo.save_checkpoint, rpo.StopRequest.__enter__
def enter_and_keep(self):
    requests.append(enter(self))
    return self
def save_and_hold(*args, **kwargs):
    save(*args, **kwargs)
    held = "--resume" not in sys.argv and sys.argv[sys.argv.index("--seed") + 1] == os.environ["HOLD_SEED"]
    while held and requests[-1].signum is None:
        time.sleep(0.05)
rpo.StopRequest.__enter__, rpo.save_checkpoint = enter_and_keep, save_and_hold
sys.exit(rpo.main())
'''


def hold_env(tmp_path, seed):
    (tmp_path / "held_trainer.py").write_text(HOLD)
    return sweep_env(TRAINER=str(tmp_path / "held_trainer.py"), HOLD_SEED=str(seed))


def sweep(out, *args, workers="2", trainer=TINY):
    return subprocess.run(
        [str(SWEEP), "--env-ids", ENV, "--out", str(out), *args, "--workers", workers, "--", *trainer],
        capture_output=True, text=True, env=sweep_env(), timeout=600,
    )


def event_files(run_dir):
    return sorted(run_dir.rglob("events.out.tfevents.*"))


def checkpoints(run_dir):
    return sorted(run_dir.rglob("*.cleanrl_model"))


# ------------------------------------------------------------------------------- local runner
@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "runs"
    result = sweep(out, "--seeds", "2", "--alphas", "0.5 0")
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result


def test_sweep_runs_each_env_seed_alpha_once(tiny_sweep):
    out, result = tiny_sweep
    names = {f"{ENV}__alpha{a}__seed{s}" for a in ("0.5", "0") for s in (1, 2)}
    assert {p.name for p in out.iterdir() if p.is_dir()} == names
    for name in names:
        run = out / name
        assert (run / "DONE").is_file(), name
        assert len(event_files(run)) == 1, name
        assert len(checkpoints(run)) == 1, name
        assert (run / "env_id").read_text().strip() == ENV
        # the trainer got this run's env, seed and alpha
        alpha, seed = re.match(r".*__alpha(.+)__seed(\d+)", name).groups()
        log = (run / "train.log").read_text()
        assert "trainer exited with status 0" in log
        assert f"{ENV}__rpo_continuous_action__{seed}__" in str(event_files(run)[0])
    assert "[4/4] done" in result.stdout
    assert len(re.findall(r"^\[\d/4\] done Pendulum-v1 alpha=(0\.5|0) seed=[12] \(\d+s\)$",
                          result.stdout, re.M)) == 4


def test_rerun_of_a_finished_sweep_runs_nothing(tiny_sweep):
    out, _ = tiny_sweep
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    result = sweep(out, "--seeds", "2", "--alphas", "0.5 0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(finished earlier)") == 4
    assert "nothing to do" in result.stdout
    after = {p: p.stat().st_mtime_ns for p in before}
    assert [p for p in before if before[p] != after[p]] == []


def test_interrupted_sweep_resumes_unfinished_runs_and_skips_finished_ones(tmp_path):
    out = tmp_path / "runs"
    trainer = ["--total-timesteps", "8192", *FAST_EVAL, "--checkpoint-interval", "1"]
    args = [str(SWEEP), "--env-ids", ENV, "--seeds", "2", "--alphas", "0", "--workers", "1", "--out", str(out),
            "--", *trainer]
    first, second = out / f"{ENV}__alpha0__seed1", out / f"{ENV}__alpha0__seed2"

    env = hold_env(tmp_path, 2)
    runner = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        # One worker: seed 1 finishes, then seed 2 starts; it holds at its first checkpoint until interrupted.
        wait_for(lambda: (first / "DONE").exists() and checkpoints(second), "seed 2 to write a checkpoint")
    finally:
        runner.send_signal(signal.SIGINT)
        stdout, stderr = runner.communicate(timeout=300)
    assert runner.returncode == 130, stdout + stderr
    assert "stopped Pendulum-v1 alpha=0 seed=2" in stdout
    assert "rerun the same command to resume" in stderr
    # the runner waited for the trainer, which saved a checkpoint and exited with 130
    assert (second / "train.log").read_text().rstrip().endswith("trainer exited with status 130")
    assert not (second / "DONE").exists()
    interrupted_at = max(step for step, _ in episodic_returns(second))
    assert interrupted_at <= 512  # where it held: its first checkpoint, iteration 1 of 16
    first_files = {p: p.stat().st_mtime_ns for p in event_files(first) + checkpoints(first)}

    rerun = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "[1/2] skip Pendulum-v1 alpha=0 seed=1 (finished earlier)" in rerun.stdout
    assert "resume from checkpoint Pendulum-v1 alpha=0 seed=2" in rerun.stdout
    assert "[2/2] done Pendulum-v1 alpha=0 seed=2" in rerun.stdout
    assert {p: p.stat().st_mtime_ns for p in first_files} == first_files  # seed 1 untouched
    assert (second / "DONE").is_file()
    assert "resuming from" in (second / "train.log").read_text()
    # same run directory, continued up to the full budget
    assert len({p.parent for p in event_files(second)}) == 1
    steps = [step for step, _ in episodic_returns(second)]
    assert max(steps) > interrupted_at
    assert max(steps) >= 8192 - 200


# A stand-in trainer that ignores SIGINT (with "TERM" in IGNORE, SIGTERM too) and never ends by itself.
STUBBORN = r'''
import os, signal, time
for name in os.environ["IGNORE"].split():
    signal.signal(getattr(signal, "SIG" + name), signal.SIG_IGN)
with open("pid", "w") as f:
    f.write(str(os.getpid()))
while True:
    time.sleep(1)
'''


@pytest.mark.parametrize("sig, ignored, status", [(signal.SIGINT, "INT", 130), (signal.SIGTERM, "INT TERM", 143)])
def test_a_second_signal_stops_every_run_even_a_trainer_that_ignores_the_first(tmp_path, sig, ignored, status):
    (tmp_path / "stubborn.py").write_text(STUBBORN)
    out, stderr_file = tmp_path / "runs", tmp_path / "stderr"
    with open(stderr_file, "w") as err:
        runner = subprocess.Popen([str(SWEEP), "--env-ids", ENV, "--seeds", "2", "--alphas", "0", "--workers", "2",
                                   "--out", str(out)], stdout=subprocess.PIPE, stderr=err, text=True,
                                  env=sweep_env(TRAINER=str(tmp_path / "stubborn.py"), IGNORE=ignored))
    pid_files = [out / f"{ENV}__alpha0__seed{seed}" / "pid" for seed in (1, 2)]
    try:
        wait_for(lambda: all(p.exists() and p.read_text() for p in pid_files), "both trainers to start")
        runner.send_signal(sig)
        wait_for(lambda: f"got {sig.name}; stopping 2 running trainer(s)" in stderr_file.read_text(),
                 "the sweep to pass the first signal on")
        assert runner.poll() is None and all(alive(int(p.read_text())) for p in pid_files)  # ignored: still running
        runner.send_signal(sig)
        stdout, _ = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
    stderr = stderr_file.read_text()
    assert runner.returncode == status, stdout + stderr
    assert "killing 2 run(s) now" in stderr and "rerun the same command to resume" in stderr
    assert stdout.count("      stopped Pendulum-v1 alpha=0 seed=") == 2
    assert not any(alive(int(p.read_text())) for p in pid_files)
    assert processes_in(out) == []


@pytest.mark.parametrize("args, message", [
    (["--env-ids", ENV, "--bogus"], "unknown option '--bogus'"),
    ([], "no env ids"),
    (["--env-ids", ""], "no env ids"),
    (["--env-ids", ENV, "--seeds", "0"], "--seeds must be an integer >= 1"),
    (["--env-ids", ENV, "--seeds", "two"], "--seeds must be an integer >= 1"),
    (["--env-ids", ENV, "--workers", "0"], "--workers must be an integer >= 1"),
    (["--env-ids", ENV, "--alphas", "-0.5"], "--alphas must be numbers >= 0"),
    (["--env-ids", ENV, "--seeds"], "--seeds needs a value"),
    (["--env-ids", ENV, "--out", "/proc/1/no-such-dir/runs"], "cannot create the --out directory /proc/1/no-such-dir/runs"),
])
def test_bad_arguments_get_one_clear_line(tmp_path, args, message):
    out = tmp_path / "runs"
    result = subprocess.run([str(SWEEP), "--out", str(out), *args], capture_output=True, text=True, env=sweep_env())
    assert result.returncode == 2  # bad input, which rpo.sh tells from failed runs (1)
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not out.exists()


@pytest.mark.parametrize("args, runs, workers", [
    (["--seeds", "010"], 10, 1),
    (["--seeds", "08"], 8, 1),  # not an octal digit: bash's arithmetic would have stopped here
    (["--seeds", "2", "--workers", "010"], 2, 10),
])
def test_counts_with_a_leading_zero_are_decimal(tmp_path, args, runs, workers):
    # a stand-in python that does nothing: each run ends at once (exit 0), so the runs are what sweep.sh made
    out = tmp_path / "runs"
    result = subprocess.run([str(SWEEP), "--env-ids", ENV, "--alphas", "0", "--workers", "1", "--out", str(out), *args],
                            capture_output=True, text=True, env=sweep_env(PYTHON=shutil.which("true")), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{ENV}__alpha0__seed{s}" for s in range(1, runs + 1))
    assert f"running {runs} of {runs} runs, {workers} at a time" in result.stdout
    assert f"sweep finished: {runs} ran" in result.stdout


def test_slurm_without_sbatch_on_path_is_an_error(tmp_path):
    # A PATH with the few tools sweep.sh needs, and no sbatch.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "basename"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    result = subprocess.run([str(SWEEP), "--env-ids", ENV, "--slurm", "--out", str(tmp_path / "runs")],
                            capture_output=True, text=True, env={**sweep_env(), "PATH": str(bin_dir)})
    assert result.returncode != 0
    assert result.stderr == "sweep.sh: error: --slurm given but sbatch is not on PATH\n"


def test_rpo_sh_submits_the_reference_experiment_sets(tmp_path):
    # A stand-in sbatch that records its arguments: this checks what rpo.sh asks for
    # (1290 runs of 8M steps), not Slurm.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/calls\necho 7\n")
    (bin_dir / "sbatch").chmod(0o755)
    published = bin_dir / "python-mujoco237"  # answers rpo.sh's check of the published simulator's python
    published.write_text("#!/bin/sh\necho 2.3.7\n")
    published.chmod(0o755)
    out = tmp_path / "runs"
    result = subprocess.run([str(ROOT / "benchmark" / "rpo.sh"), "--slurm", "--out", str(out)], capture_output=True,
                            text=True, env={**sweep_env(), "PATH": f"{bin_dir}:{os.environ['PATH']}",
                                            "PUBLISHED_PYTHON": str(published)})
    assert result.returncode == 0, result.stderr
    arrays = re.findall(r"--array=0-(\d+) ", (tmp_path / "calls").read_text())
    assert [int(n) + 1 for n in arrays] == [48 * 2 * 10, 2 * 2 * 10, 4 * 2 * 10, 6 * 3 * 10, 1 * 3 * 10]
    runs = {p.name for p in out.iterdir() if p.name != "slurm"}
    assert len(runs) == 1290
    assert {"dm_control-walker-run-v0__alpha0__seed10", "BipedalWalker-v3__alpha0.5__seed1",
            "Walker2d-v4__alpha0.5__seed3", "Hopper-v4__alpha0.01__seed7", "Pusher-v4__alpha0.5__seed1"} <= runs
    assert not any("v2" in name for name in runs)
    scripts = {p.read_text() for p in (out / "slurm").glob("sweep-*.sh")}
    assert len(scripts) == 5
    for script in scripts:
        assert script.rstrip().endswith("-- --total-timesteps 8000000")
        # Pusher-v4 alone runs on the published simulator (gymnasium 1.x makes it only with mujoco < 3)
        assert (f"PYTHON={published} " in script) == ("Pusher-v4" in script), script


def test_rpo_sh_checks_the_published_simulator_before_it_runs_anything(tmp_path):
    result = subprocess.run([str(ROOT / "benchmark" / "rpo.sh"), "--out", str(tmp_path / "runs")],
                            capture_output=True, text=True,
                            env={**sweep_env(), "PUBLISHED_PYTHON": str(tmp_path / "no-such-venv" / "python")})
    assert result.returncode == 2
    assert result.stderr == (f"rpo.sh: error: set pusher: no python at {tmp_path}/no-such-venv/python; build it with "
                             "'python3 -m venv .venv-mujoco237 && .venv-mujoco237/bin/pip install torch==2.13.0 -e "
                             "\".[mujoco-published]\"' (Python 3.10 or 3.11), set PUBLISHED_PYTHON, or leave the set "
                             "out with --set\n")
    assert result.stdout == "" and not (tmp_path / "runs").exists()
    # this venv's mujoco 3 cannot make Pusher-v4
    result = subprocess.run([str(ROOT / "benchmark" / "rpo.sh"), "--set", "pusher", "--out", str(tmp_path / "runs")],
                            capture_output=True, text=True, env={**sweep_env(), "PUBLISHED_PYTHON": sys.executable})
    assert result.returncode == 2
    assert result.stderr.startswith(f"rpo.sh: error: set pusher needs mujoco 2.x (Pusher-v4 on gymnasium 1.x) but "
                                    f"{sys.executable} has mujoco 3."), result.stderr


def test_rpo_sh_runs_every_set_when_one_has_failed_runs_and_then_exits_1(tmp_path):
    # rpo.sh from a copy whose sweep.sh records each set's envs and fails the gym set as a failed run would
    bench = tmp_path / "benchmark"
    bench.mkdir()
    for script in ("rpo.sh", "mujoco_python.sh"):
        shutil.copy(ROOT / "benchmark" / script, bench)
    (bench / "sweep.sh").write_text(f"""#!/usr/bin/env bash
echo "$PYTHON $2" >> {tmp_path}/calls
[[ $2 != Pendulum-v1* ]]
""")
    (bench / "sweep.sh").chmod(0o755)
    result = subprocess.run([str(bench / "rpo.sh"), "--set", "gym", "--set", "mujoco"], capture_output=True,
                            text=True, env={**sweep_env(), "PYTHON": "python-mujoco3"})
    assert result.returncode == 1
    assert (tmp_path / "calls").read_text().splitlines() == [
        "python-mujoco3 Pendulum-v1 BipedalWalker-v3",
        "python-mujoco3 HumanoidStandup-v4 Humanoid-v4 InvertedPendulum-v4 Walker2d-v4"]
    assert result.stderr == "rpo.sh: runs failed in set(s): gym; see the sweep's lines above\n"
    # a sweep stopped by Ctrl-C (130) or SIGTERM (143), or given bad input (2), stops rpo.sh with its status
    for status in (130, 143, 2):
        (tmp_path / "calls").unlink()
        (bench / "sweep.sh").write_text(f"#!/usr/bin/env bash\necho \"$2\" >> {tmp_path}/calls\nexit {status}\n")
        result = subprocess.run([str(bench / "rpo.sh"), "--set", "gym", "--set", "mujoco"], capture_output=True,
                                text=True, env=sweep_env())
        assert result.returncode == status
        assert (tmp_path / "calls").read_text().splitlines() == ["Pendulum-v1 BipedalWalker-v3"]


def test_speed_takes_the_batch_from_the_trainer_flags():
    sys.path.insert(0, str(ROOT / "benchmark"))
    import speed

    assert speed.batch_size(ENV, []) == 2048
    assert speed.batch_size(ENV, ["--num-steps", "512"]) == 512
    assert speed.batch_size(ENV, ["--num-envs", "2", "--num-steps", "256"]) == 512


@pytest.mark.parametrize("args, message", [
    (["--env-id", "NoSuchEnv-v0"], "cannot make environment 'NoSuchEnv-v0'"),
    (["--env-id", "CartPole-v1"], "RPO needs a vector of continuous actions"),
    (["--iterations", "0"], "--iterations must be at least 2, got 0"),
    (["--iterations", "1"], "--iterations must be at least 2, got 1"),  # the first is warm-up: no rate from one
    (["--ceiling-steps", "0"], "--ceiling-steps must be at least 1, got 0"),
    (["--repeats", "0"], "--repeats must be at least 1, got 0"),
    (["--iterations", "six"], "argument --iterations: invalid int value: 'six'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--", "--num-minibatches", "3"], "--num-minibatches 3 does not divide the batch"),
])
def test_speed_bad_input_gets_one_line(args, message):
    result = subprocess.run([sys.executable, str(ROOT / "benchmark" / "speed.py"), *args], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("speed.py: error: "), result.stderr
    assert message in result.stderr
    assert result.stdout == ""  # nothing measured


# ------------------------------------------------------------------------------- report
def test_report_table_matches_the_event_files(tiny_sweep, tmp_path):
    out, _ = tiny_sweep
    runs = tmp_path / "runs"
    shutil.copytree(out, runs)
    (runs / f"{ENV}__alpha0.5__seed3").mkdir()  # a run that has not started
    (runs / f"{ENV}__alpha0__seed2" / "DONE").unlink()  # a run still going
    result = subprocess.run([sys.executable, str(REPORT), str(runs), "--out", str(tmp_path / "report")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

    md = (tmp_path / "report" / "results.md").read_text()
    rows = table(md, SUMMARY)
    assert list(rows) == [ENV] and len(rows[ENV]) == 2
    # one cell per alpha, mean ± std over seeds; PPO's holds the unfinished run (alpha 0, seed 2): marked †
    for alpha, cell in zip(("0", "0.5"), rows[ENV]):
        finals = [np.mean([v for _, v in episodic_returns(runs / f"{ENV}__alpha{alpha}__seed{s}")][-10:])
                  for s in (1, 2)]
        mean, std, mark = re.fullmatch(r"(-?\d+\.\d\d) ± (\d+\.\d\d)( †)?", cell).groups()
        assert float(mean) == pytest.approx(np.mean(finals), abs=0.006)
        assert float(std) == pytest.approx(np.std(finals), abs=0.006)
        assert bool(mark) == (alpha == "0"), cell
    assert "† includes 1 unfinished run(s)" in md
    # the empty run is reported as skipped
    assert f"skipped {ENV}__alpha0.5__seed3: no event file" in result.stdout
    assert f"{ENV}__alpha0.5__seed3: no event file" in md
    assert "last 10 training episodes" in md
    # the same table on stdout
    assert f"| {ENV} |" in result.stdout
    png = tmp_path / "report" / "learning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "learning_curves.png" in md


def test_report_on_a_sweep_without_episodes_yet(tmp_path):
    (tmp_path / "runs" / f"{ENV}__alpha0.5__seed1").mkdir(parents=True)
    result = subprocess.run([sys.executable, str(REPORT), str(tmp_path / "runs"), "--out", str(tmp_path / "r")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "no runs with episodes yet" in result.stdout
    assert "no event file" in (tmp_path / "r" / "results.md").read_text()


# ------------------------------------------------------------------------------- Slurm
def submit(out, *args, trainer=TINY, env=None):
    result = subprocess.run([str(SWEEP), "--env-ids", ENV, "--out", str(out), "--slurm", "--time", "00:10:00", *args,
                             "--", *trainer], capture_output=True, text=True, env=env or sweep_env(), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return re.search(r"submitted Slurm job array (\d+)", result.stdout)[1]


@pytest.mark.slurm
def test_slurm_job_array_runs_the_sweep_and_report_sees_it(slurm, tmp_path):
    out = tmp_path / "runs"
    job_id = submit(out, "--seeds", "1", "--alphas", "0.5 0")
    wait_for(lambda: job_done(job_id), f"Slurm job {job_id} to finish")

    for alpha in ("0.5", "0"):
        run = out / f"{ENV}__alpha{alpha}__seed1"
        assert (run / "DONE").is_file(), (run / "train.log").read_text()
        assert len(event_files(run)) == 1
    logs = sorted(p.name for p in (out / "slurm" / "logs").iterdir())
    assert logs == [f"{job_id}_0.out", f"{job_id}_1.out"]  # one log per task

    report = subprocess.run([sys.executable, str(REPORT), str(out), "--out", str(tmp_path / "report")],
                            capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    rows = table((tmp_path / "report" / "results.md").read_text(), SUMMARY)
    assert list(rows) == [ENV] and all(re.fullmatch(r"-?\d+\.\d\d ± \d+\.\d\d", c) for c in rows[ENV]), rows

    # submitting the finished sweep again submits nothing
    again = subprocess.run([str(SWEEP), "--env-ids", ENV, "--out", str(out), "--slurm", "--alphas", "0.5 0"],
                           capture_output=True, text=True, env=sweep_env())
    assert again.returncode == 0 and "nothing to do" in again.stdout


@pytest.mark.slurm
def test_slurm_task_warned_of_its_time_limit_requeues_and_resumes(slurm, tmp_path):
    out = tmp_path / "runs"
    run = out / f"{ENV}__alpha0.5__seed1"
    job_id = submit(out, "--seeds", "1", "--alphas", "0.5", trainer=["--total-timesteps", "8192", *FAST_EVAL,
                                                                     "--checkpoint-interval", "1"],
                    env=hold_env(tmp_path, 1))
    task = f"{job_id}_0"
    wait_for(lambda: checkpoints(run), "the task's first checkpoint")  # where the run holds until it is stopped
    # What Slurm sends 60 s before the time limit (--signal=B:USR1@60).
    subprocess.run(["scancel", "--batch", "--signal=USR1", task], check=True)
    def log():
        return (run / "train.log").read_text()

    wait_for(lambda: "requeueing" in log(), "the task to requeue itself")
    wait_for(lambda: log().count("trainer exited") == 2 and job_done(job_id), f"Slurm job {job_id} to finish")

    log = log()
    assert "trainer exited with status 143" in log
    assert "resuming from" in log and "restart 1" in log
    assert (run / "DONE").is_file(), log
    assert len({p.parent for p in event_files(run)}) == 1
    assert max(step for step, _ in episodic_returns(run)) >= 8192 - 200
