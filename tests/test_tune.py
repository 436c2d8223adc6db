"""benchmark/tune.py: Optuna studies over the trainer's flags, locally and as Slurm workers.

The studies train the real trainer on Pendulum-v1 for 2048 steps a run (eight iterations of 256
steps), launched by benchmark/sweep.sh. The pruning and interruption tests use a stand-in trainer
(TRAINER=...) that logs episodes to TensorBoard as the trainer does, with returns set by
--rpo-alpha, so that which trial is bad does not depend on chance; a slow trial's stand-in holds
until it is stopped, so nothing depends on the machine's speed. The race tests use a stand-in that
only copies an event file. The Slurm tests run against a real one-node Slurm
(benchmark/slurm/start_local_slurm.sh, as root) and are skipped only where Slurm's binaries are not
installed (apt-get install -y slurm-wlm munge).
"""

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import alive, episodic_returns, job_done, processes_in, wait_for

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmark"))
from score import normalized, score_range  # noqa: E402  (a trial's value: the normalized final returns' IQM)

TUNE = ROOT / "benchmark" / "tune.py"
ENV = "Pendulum-v1"
TINY = ["--total-timesteps", "2048", "--num-steps", "256", "--num-minibatches", "4", "--update-epochs", "2"]
PNG = b"\x89PNG\r\n\x1a\n"

# A stand-in trainer: every 200 steps an episode of return -1000 * alpha, in TensorBoard. With alpha >= 0.85 it is
# a run that has logged all its episodes but not ended: it waits while the file HOLD exists (or until a signal).
STUB = r'''
import os, signal, sys, time
from torch.utils.tensorboard import SummaryWriter  # first: torch's import can swallow the handler's SystemExit
argv = sys.argv[1:]
alpha = float(argv[argv.index("--rpo-alpha") + 1])
total = int(argv[argv.index("--total-timesteps") + 1])
with open("pid", "w") as f:
    f.write(str(os.getpid()))
def stop(signum, frame):
    print(f"stub: got signal {signum}", flush=True)
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
if alpha == 0.77:
    sys.exit("stub: this alpha breaks me")
writer = SummaryWriter("runs/stub")
for step in range(200, total + 1, 200):
    writer.add_scalar("charts/episodic_return", -1000 * alpha, step)
    writer.add_scalar("charts/episodic_length", 200, step)
writer.flush()
while alpha >= 0.85 and os.path.exists(HOLD):
    time.sleep(0.1)
'''


def tune_env(**extra):
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def tune(out, *args, trainer=TINY, env=None, timeout=600):
    return subprocess.run([sys.executable, str(TUNE), "--env-ids", ENV, "--out", str(out), *args, "--", *trainer],
                          capture_output=True, text=True, env=env or tune_env(), timeout=timeout)


def rows(out):
    with open(out / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def final_return(run_dir):
    """Mean of the last 10 charts/episodic_return values, read from the event files (not through score.py)."""
    return np.mean([v for _, v in sorted(episodic_returns(run_dir))][-10:])


def run_dir(out, number, alpha, seed=1):
    """Where sweep.sh put a trial's run: DIR/trials/<number>/<env>__alpha<A>__seed<S>."""
    return out / "trials" / str(number) / f"{ENV}__alpha{alpha}__seed{seed}"


def trainer_args(run):
    """The flags the run's trainer was given, as its checkpoint holds them."""
    import torch

    [checkpoint] = run.rglob("*.cleanrl_model")
    return torch.load(checkpoint, weights_only=True)["args"]


def stub_env(tmp_path, hold=False):
    """The stand-in trainer's environment; hold: its slow runs wait until stopped (or until the hold file goes)."""
    stub, hold_file = tmp_path / "stub_trainer.py", tmp_path / "hold"
    stub.write_text(f"HOLD = {str(hold_file)!r}\n" + STUB)
    if hold:
        hold_file.touch()
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
    result = tune(out, "--seeds", "2", "--n-trials", "3")
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
        # sweep.sh ran seeds 1 and 2 with the trial's alpha, single-threaded, to the end
        finals = []
        for seed in (1, 2):
            run = run_dir(out, r["number"], repr(alpha), seed)
            assert (run / "DONE").is_file() and "trainer exited with status 0" in (run / "train.log").read_text()
            args = trainer_args(run)
            assert (args["rpo_alpha"], args["seed"], args["torch_threads"], args["eval_episodes"]) == (alpha, seed, 1, 0)
            finals.append(final_return(run))
        # the value: the IQM (of two runs, their mean) of the normalized final returns, read from the event files
        assert float(r[f"return:{ENV}"]) == pytest.approx(np.mean(finals), abs=1e-4)
        assert float(r["value"]) == pytest.approx(np.mean([normalized(ENV, f) for f in finals]), abs=1e-6)
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
    low, high, _ = score_range(ENV)
    assert f"{ENV} [{low:g}, {high:g}]" in md  # the range of its normalized score
    assert processes_in(out) == []


def test_a_trials_value_is_what_report_py_prints_for_its_runs(tiny_study, tmp_path):
    out, _ = tiny_study
    for r in rows(out):
        report = subprocess.run([sys.executable, str(ROOT / "benchmark" / "report.py"), str(out / "trials" / r["number"]),
                                 "--out", str(tmp_path / r["number"])], capture_output=True, text=True)
        assert report.returncode == 0, report.stderr
        md = (tmp_path / r["number"] / "results.md").read_text()
        # the aggregate table: | RPO α=<alpha> | envs | runs | IQM [95% CI] | mean [95% CI] |
        printed = re.search(rf"^\| RPO α={re.escape(repr(float(r['rpo_alpha'])))} \| 1 \| 2 \| (-?[\d.]+) \[", md, re.M)
        assert printed, md
        assert printed[1] == f"{float(r['value']):.3f}"


def test_study_draws_the_plots_it_can(tiny_study):
    out, result = tiny_study
    for name in ("optimization_history.png", "slice.png", "intermediate_values.png"):
        assert_png(out / name)
        assert f"]({name})" in (out / "trials.md").read_text()
    # one searched flag: no importance plot, and it says why
    assert not (out / "param_importances.png").exists()
    assert "no param_importances.png: needs two or more searched flags" in result.stdout


def test_rerun_with_more_trials_continues_the_study_and_out_alone_rebuilds_the_tables(tiny_study, tmp_path):
    out = tmp_path / "study"
    shutil.copytree(tiny_study[0], out)
    before = rows(out)
    old_logs = {p: p.stat().st_mtime_ns for p in (out / "trials").rglob("train.log")}

    result = tune(out, "--seeds", "2", "--n-trials", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "running 2 of 5 trials (3 done earlier)" in result.stdout
    after = rows(out)
    assert [r["number"] for r in after] == ["0", "1", "2", "3", "4"]
    assert after[:3] == before  # the old trials are kept as they were, not run again
    assert all(r["state"] == "COMPLETE" for r in after)
    assert {p: p.stat().st_mtime_ns for p in old_logs} == old_logs
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0", "1", "2", "3", "4"]

    again = tune(out, "--seeds", "2", "--n-trials", "5")
    assert again.returncode == 0, again.stderr
    assert "has 5 trials (--n-trials 5); nothing to run" in again.stdout
    assert rows(out) == after

    # the same DIR with other settings is refused rather than mixed in
    other = tune(out, "--seeds", "1", "--n-trials", "6")
    assert other.returncode == 2
    assert other.stderr.count("\n") == 1 and "holds a study with other seeds" in other.stderr
    assert rows(out) == after

    # the study alone (no trial folders) gives the same tables again: what a committed study rebuilds from
    tables = {name: (out / name).read_bytes() for name in ("trials.csv", "trials.md")}
    shutil.rmtree(out / "trials")
    for name in tables:
        (out / name).unlink()
    rebuilt = subprocess.run([sys.executable, str(TUNE), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert {name: (out / name).read_bytes() for name in tables} == tables
    assert_png(out / "optimization_history.png")


def test_two_local_workers_share_one_study(tmp_path):
    out = tmp_path / "study"
    result = tune(out, "--seeds", "1", "--n-trials", "4", "--workers", "2",
                  "--param", "num-minibatches=2,4,8", "--param", "anneal-lr=true,false",
                  "--param", "learning-rate=1e-4:1e-3:log", "--enqueue", "rpo-alpha=0.5,num-minibatches=4",
                  "--enqueue", "rpo-alpha=0.01,num-minibatches=8",
                  trainer=["--total-timesteps", "2048", "--num-steps", "256", "--update-epochs", "2"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 worker(s)" in result.stdout
    table = rows(out)
    assert sorted(int(r["number"]) for r in table) == [0, 1, 2, 3]  # none lost, none extra
    assert all(r["state"] == "COMPLETE" for r in table)
    assert len(set(re.findall(r"^\[\d/4\] trial (\d) COMPLETE", result.stdout, re.M))) == 4
    # the two queued trials started at once, each in one worker (SQLite claims a queued trial for one)
    assert [(r["rpo_alpha"], r["num_minibatches"]) for r in table[:2]] == [("0.5", "4"), ("0.01", "8")]
    assert len(re.findall(r"^trial \d started", result.stdout, re.M)) == 4
    assert (out / "study.db").is_file() and not (out / "study.journal").exists()
    # every searched flag reached the trainer in its own form: an integer, a switch, a float
    for r in table:
        args = trainer_args(run_dir(out, r["number"], repr(float(r["rpo_alpha"]))))
        assert r["num_minibatches"] in ("2", "4", "8") and args["num_minibatches"] == int(r["num_minibatches"])
        assert args["anneal_lr"] == (r["anneal_lr"] == "True")
        assert 1e-4 <= args["learning_rate"] <= 1e-3 and args["learning_rate"] == float(r["learning_rate"])
    # several searched flags and complete trials: the importance plot can be drawn
    assert_png(out / "param_importances.png")
    assert processes_in(out) == []


def test_two_local_workers_run_two_trials_at_once(tmp_path):
    # trial 0 (alpha 0.9) holds until the test lets it go, which it does only once trial 1 (alpha 0.1) has finished:
    # with one trial at a time the study would wait on trial 0 for ever (and the test give up)
    out, log = tmp_path / "study", tmp_path / "stdout"
    with open(log, "w") as stdout:
        runner = subprocess.Popen([sys.executable, str(TUNE), "--env-ids", ENV, "--out", str(out), "--n-trials", "2",
                                   "--workers", "2", "--no-prune", "--enqueue", "rpo-alpha=0.9", "--enqueue",
                                   "rpo-alpha=0.1", "--", "--total-timesteps", "4000"],
                                  stdout=stdout, stderr=subprocess.STDOUT, text=True, env=stub_env(tmp_path, hold=True))
    pid_file = run_dir(out, 0, "0.9") / "pid"
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text() and
                 re.search(r"^\[1/2\] trial 1 COMPLETE", log.read_text(), re.M), "trial 1 to complete")
        assert alive(int(pid_file.read_text()))  # trial 0's trainer, holding
    finally:
        (tmp_path / "hold").unlink()
        runner.communicate(timeout=300)
    lines = log.read_text().splitlines()
    assert runner.returncode == 0, lines
    events = [m[1] for m in (re.match(r"(trial \d started|\[\d/2\] trial \d COMPLETE)", ln) for ln in lines) if m]
    # both started (the two workers print in either order) before either completed
    assert sorted(events[:2]) == ["trial 0 started", "trial 1 started"], lines
    assert events[2:] == ["[1/2] trial 1 COMPLETE", "[2/2] trial 0 COMPLETE"], lines
    assert [r["state"] for r in rows(out)] == ["COMPLETE", "COMPLETE"]
    assert processes_in(out) == []


# ------------------------------------------------------------------------------- the bound, under races
# A stand-in trainer that only copies an event file of ten episodes (return -500), so a race costs little.
QUICK = r'''
import os, shutil, sys
os.makedirs("runs/quick", exist_ok=True)
shutil.copy(os.path.join(os.path.dirname(sys.argv[0]), "events.out.tfevents.0.quick"), "runs/quick")
'''
RACES, RACE = 10, ["--n-trials", "6", "--workers", "4"]
# Without the study's lock 4 of 10 local races made a 7th trial, but only 1 of 10 Slurm races (the node starts its
# workers one by one): the local races guard the lock; the Slurm ones check that its workers share it at all.
SLURM_RACES = 3


@pytest.fixture(scope="module")
def quick_trainer(tmp_path_factory):
    from torch.utils.tensorboard import SummaryWriter

    where = tmp_path_factory.mktemp("quick")
    writer = SummaryWriter(str(where), filename_suffix=".quick")
    for step in range(200, 2001, 200):
        writer.add_scalar("charts/episodic_return", -500.0, step)
        writer.add_scalar("charts/episodic_length", 200, step)
    writer.close()
    next(where.glob("events.out.tfevents.*")).rename(where / "events.out.tfevents.0.quick")
    (where / "quick_trainer.py").write_text(QUICK)
    return str(where / "quick_trainer.py")


def tune_in_process(capsys, *argv):
    """tune.main() in this process (the trainer's import, seconds, is paid once): its exit status and output."""
    import tune as tuner

    status = tuner.main([*argv])
    return status, "".join(capsys.readouterr())


def assert_exactly_six(out, log=""):
    table = rows(out)
    assert [(r["number"], r["state"]) for r in table] == [(str(n), "COMPLETE") for n in range(6)], log
    assert sorted(p.name for p in (out / "trials").iterdir()) == [str(n) for n in range(6)]  # no surplus trained


def test_four_local_workers_run_exactly_the_trials_asked_for(quick_trainer, tmp_path, capsys, monkeypatch):
    # MaxTrialsCallback counts only after a trial ends: four workers finishing together could each start one more
    monkeypatch.setenv("TRAINER", quick_trainer)
    for race in range(RACES):
        out = tmp_path / f"study{race}"
        status, stdout = tune_in_process(capsys, "--env-ids", ENV, "--out", str(out), *RACE, "--",
                                         "--total-timesteps", "2048")
        assert status == 0, stdout
        assert "running 6 of 6 trials (0 done earlier), 4 worker(s)" in stdout
        assert_exactly_six(out, stdout)
        assert len(re.findall(r"^trial \d started", stdout, re.M)) == 6
        assert processes_in(out) == []


@pytest.mark.slurm
def test_four_slurm_workers_run_exactly_the_trials_asked_for(slurm, quick_trainer, tmp_path, capsys, monkeypatch):
    # The workers share the journal and start as the node has CPUs for them (one each); all races at once
    monkeypatch.setenv("TRAINER", quick_trainer)
    jobs = {}
    for race in range(SLURM_RACES):
        out = tmp_path / f"study{race}"
        status, stdout = tune_in_process(capsys, "--env-ids", ENV, "--out", str(out), *RACE, "--slurm",
                                         "--time", "00:10:00", "--", "--total-timesteps", "2048")
        assert status == 0, stdout
        jobs[out] = re.search(r"submitted Slurm job array (\d+): 4 worker\(s\) for 6 of 6 trials", stdout)[1]
    for out, job in jobs.items():
        wait_for(lambda: job_done(job), f"Slurm job {job} to finish", timeout=1800)
        logs = sorted((out / "slurm" / "logs").iterdir())
        assert [p.name for p in logs] == [f"{job}_{task}.out" for task in range(4)]
        text = "".join(p.read_text() for p in logs)
        assert "Traceback" not in text, text
        assert_exactly_six(out, text)
        assert {re.search(r"\(Slurm (\d+)_\d\)", r["worker"])[1] for r in rows(out)} == {job}


@pytest.mark.slurm
def test_a_trial_whose_slurm_task_is_gone_is_run_again_once(slurm, quick_trainer, tmp_path, capsys, monkeypatch):
    import optuna

    monkeypatch.setenv("TRAINER", quick_trainer)
    out = tmp_path / "study"
    args = ["--env-ids", ENV, "--out", str(out), "--workers", "1", "--slurm", "--time", "00:10:00", "--",
            "--total-timesteps", "2048"]
    status, stdout = tune_in_process(capsys, "--n-trials", "1", *args)
    job = re.search(r"submitted Slurm job array (\d+)", stdout)[1]
    wait_for(lambda: job_done(job), f"Slurm job {job} to finish")
    # a trial left RUNNING by a worker on another node whose task Slurm no longer lists (the node was lost)
    study = optuna.load_study(study_name="rpo-tune", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "study.journal"))))
    lost = study.ask({"rpo_alpha": optuna.distributions.FloatDistribution(0.001, 1.0, log=True)})
    lost.set_user_attr("worker", "lost-node:4242 (Slurm 999999_0)")

    status, stdout = tune_in_process(capsys, "--n-trials", "2", *args)
    assert status == 0, stdout
    assert stdout.count("trial 1 lost its worker: marked FAIL, it will be run again") == 1
    job = re.search(r"submitted Slurm job array (\d+): 1 worker\(s\) for 1 of 2 trials \(1 done earlier\)", stdout)[1]
    wait_for(lambda: job_done(job), f"Slurm job {job} to finish")
    table = rows(out)
    assert [(r["number"], r["state"]) for r in table] == [("0", "COMPLETE"), ("1", "FAIL"), ("2", "COMPLETE")]
    assert table[2]["rpo_alpha"] == table[1]["rpo_alpha"]  # the same values, run once more


# ------------------------------------------------------------------------------- pruning and interruption
def test_a_trial_reports_intermediate_values_while_its_runs_train(tmp_path):
    # A real run far longer than the test. Once it has logged two iterations it is frozen (SIGSTOP): what the tuner
    # reports after that, it read from the event file as the trainer had left it in the middle of its run.
    out = tmp_path / "study"
    runner = subprocess.Popen([sys.executable, str(TUNE), "--env-ids", ENV, "--out", str(out), "--n-trials", "1",
                               "--enqueue", "rpo-alpha=0.5", "--no-prune", "--report-every", "256", "--",
                               "--total-timesteps", "1000000", *TINY[2:]],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=tune_env())
    run, trainer = run_dir(out, 0, "0.5"), []
    try:
        wait_for(lambda: (run / "train.log").exists() and (run / "train.log").read_text().count("SPS:") >= 2,
                 "the run to log two iterations")
        trainer = [pid for pid in processes_in(run) if b"rpo_continuous_action.py" in
                   Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(trainer) == 1
        os.kill(trainer[0], signal.SIGSTOP)
        import optuna

        study = optuna.load_study(study_name="rpo-tune", storage=f"sqlite:///{out / 'study.db'}")
        wait_for(lambda: study.trials[0].intermediate_values, "the trial to report a value")
        reported = study.trials[0].intermediate_values
        logged = max(step for step, _ in episodic_returns(run))
        assert alive(trainer[0]) and not (run / "DONE").exists()  # still in the middle of its run
    finally:
        for pid in trainer:
            os.kill(pid, signal.SIGCONT)
        runner.send_signal(signal.SIGINT)
        stdout, stderr = runner.communicate(timeout=300)
    assert min(reported) == 256 and max(reported) <= logged < 1000000
    assert reported[256] == pytest.approx(normalized(ENV, np.mean([v for s, v in episodic_returns(run) if s <= 256])))
    assert runner.returncode == 130, stdout + stderr
    assert processes_in(out) == []


def test_a_bad_trial_is_pruned_and_its_trainer_stopped(tmp_path):
    out = tmp_path / "study"
    # trials 0 and 1 score -10 and -20; trial 2 scores -900 and does not end unless it is stopped
    result = tune(out, "--seeds", "1", "--n-trials", "3",
                  "--enqueue", "rpo-alpha=0.01", "--enqueue", "rpo-alpha=0.02", "--enqueue", "rpo-alpha=0.9",
                  "--prune-startup", "2", "--prune-warmup", "0", "--report-every", "400",
                  trainer=["--total-timesteps", "8000"], env=stub_env(tmp_path, hold=True))
    assert result.returncode == 0, result.stdout + result.stderr
    table = rows(out)
    assert [(r["number"], r["state"]) for r in table] == [("0", "COMPLETE"), ("1", "COMPLETE"), ("2", "PRUNED")]
    assert [float(r["rpo_alpha"]) for r in table] == [0.01, 0.02, 0.9]
    assert float(table[0]["value"]) == pytest.approx(normalized(ENV, -10))
    assert float(table[1]["value"]) == pytest.approx(normalized(ENV, -20))
    pruned = table[2]
    assert float(pruned["value"]) == pytest.approx(normalized(ENV, -900))  # its last intermediate value
    assert pruned["pruned_at_step"] == "400"
    progress = f"[3/3] trial 2 PRUNED at step 400 value={normalized(ENV, -900):.4g} rpo_alpha=0.9 "  # tune.py's .4g
    assert any(line.startswith(progress) for line in result.stdout.splitlines()), result.stdout
    # its trainer got SIGTERM (from sweep.sh) before it ended, exited, and nothing is left running
    run = run_dir(out, 2, "0.9")
    log = (run / "train.log").read_text()
    assert "stub: got signal 15" in log and "trainer exited with status 143" in log and not (run / "DONE").exists()
    assert not alive(int((run / "pid").read_text()))
    assert processes_in(out) == []
    assert_png(out / "intermediate_values.png")


def stop_during_trial_0(out, env, n_trials, stop):
    """Starts a stub study whose trial 0 (alpha 0.9, held) runs first; stop(process) once its trainer runs."""
    args = [sys.executable, str(TUNE), "--env-ids", ENV, "--out", str(out), "--n-trials", str(n_trials), "--no-prune",
            "--", "--total-timesteps", "4000"]
    runner = subprocess.Popen([*args[:-3], "--enqueue", "rpo-alpha=0.9", *args[-3:]], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    pid_file = run_dir(out, 0, "0.9") / "pid"
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), "trial 0's trainer to start")
    finally:
        stop(runner)
        stdout, stderr = runner.communicate(timeout=120)
    return args, runner, stdout, stderr, pid_file


def test_interrupted_study_marks_the_trial_failed_and_a_rerun_runs_it_again(tmp_path):
    out, env = tmp_path / "study", stub_env(tmp_path, hold=True)
    args, runner, stdout, stderr, pid_file = stop_during_trial_0(out, env, 2, lambda p: p.send_signal(signal.SIGINT))
    assert runner.returncode == 130, stdout + stderr
    assert "trial 0 interrupted by SIGINT: marked FAIL, it will be run again" in stdout
    assert stderr.count("\n") == 1 and stderr.strip().endswith("rerun the same command to continue the study")
    assert not alive(int(pid_file.read_text()))
    assert "trainer exited with status 143" in (pid_file.parent / "train.log").read_text()
    assert processes_in(out) == []
    # queued again with the same alpha, for the next run of the command
    assert [(r["number"], r["state"], r["rpo_alpha"]) for r in rows(out)] == [("0", "FAIL", "0.9"), ("1", "WAITING", "0.9")]

    # the interrupted trial does not count; the rerun runs it again (same alpha, not held now) and one more
    (tmp_path / "hold").unlink()
    rerun = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "running 2 of 2 trials (0 done earlier)" in rerun.stdout
    table = rows(out)
    assert [(r["number"], r["state"]) for r in table] == [("0", "FAIL"), ("1", "COMPLETE"), ("2", "COMPLETE")]
    assert float(table[1]["rpo_alpha"]) == 0.9


def test_a_killed_worker_leaves_no_trainer_and_its_trial_is_run_again(tmp_path):
    out, env = tmp_path / "study", stub_env(tmp_path, hold=True)
    # no chance to clean up: SIGKILL, as a lost node or the OOM killer
    args, _, _, _, pid_file = stop_during_trial_0(out, env, 1, lambda p: p.kill())
    wait_for(lambda: not alive(int(pid_file.read_text())), "the orphaned trainer to stop")
    wait_for(lambda: processes_in(out) == [], "sweep.sh to end after its trainer")
    assert [(r["number"], r["state"]) for r in rows(out)] == [("0", "RUNNING")]  # as the killed worker left it
    (tmp_path / "hold").unlink()
    # the rerun finds the trial's worker gone (no such process), marks it FAIL and runs it again, once
    rerun = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert rerun.stdout.count("trial 0 lost its worker: marked FAIL, it will be run again") == 1
    assert "running 1 of 1 trials (0 done earlier)" in rerun.stdout
    table = rows(out)
    assert [(r["number"], r["state"]) for r in table] == [("0", "FAIL"), ("1", "COMPLETE")]
    assert float(table[1]["rpo_alpha"]) == 0.9  # the same values


def test_a_failing_trainer_stops_the_study_with_one_line(tmp_path):
    # --rpo-alpha fixed after -- (the study searches the learning rate): sweep.sh gets it as its --alphas
    out = tmp_path / "study"
    result = tune(out, "--n-trials", "2", "--param", "learning-rate=1e-4:1e-3:log",
                  trainer=["--rpo-alpha", "0.77", "--total-timesteps", "4000"], env=stub_env(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    run = run_dir(out, 0, "0.77")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("tune.py: trial 0: [1/1] FAILED Pendulum-v1 alpha=0.77 seed=1 (exit 1 ")
    assert f"see {run}/train.log" in result.stderr
    assert "stub: this alpha breaks me" in (run / "train.log").read_text()
    assert [(r["number"], r["state"]) for r in rows(out)] == [("0", "FAIL")]


COMMITTED = ROOT / "benchmark" / "results" / "tune"


@pytest.mark.skipif(not (COMMITTED / "study.db").is_file(), reason="no tuner study committed")
def test_the_committed_tuner_study_rebuilds_its_tables_from_the_study(tmp_path):
    out = tmp_path / "tune"
    out.mkdir()
    shutil.copy(COMMITTED / "study.db", out)
    result = subprocess.run([sys.executable, str(TUNE), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for name in ("trials.csv", "trials.md"):
        assert (out / name).read_bytes() == (COMMITTED / name).read_bytes(), name
    for line in (COMMITTED / "trials.md").read_text().splitlines():
        if line.startswith("!["):
            assert_png(out / line[line.index("(") + 1:-1])


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
    (["--param", "seed=1:5"], [], "the trainer has no flag --seed that can be searched"),
    (["--enqueue", "rpo-alpha=2"], [], "outside the search space of --rpo-alpha"),
    (["--env-ids", "NoSuchEnv-v0"], [], "cannot make environment 'NoSuchEnv-v0'"),
    (["--env-ids", "dm_control/nosuch-task-v0"], [], "cannot make environment 'dm_control/nosuch-task-v0'"),
    (["--env-ids", "CartPole-v1"], [], "RPO needs a vector of continuous actions"),
    (["--env-ids", f"{ENV} MountainCarContinuous-v0"], [], "no normalized score for MountainCarContinuous-v0"),
    (["--partition", "cpu"], [], "only make sense with --slurm"),
    ([], ["--bogus-flag", "1"], "unknown trainer flag --bogus-flag"),
    ([], ["--seed", "3"], "trainer flag --seed is set by the tuner"),
    ([], ["--num-minibatches", "3"], "--num-minibatches 3 does not divide the batch"),
    (["--param", "learning-rate=1e-4:1e-3"], ["--learning-rate", "1e-3"], "--learning-rate is searched"),
    (["--prune-warmup", "-1"], [], "--prune-warmup must be an integer >= 0, got -1"),
    (["--startup-trials", "-1"], [], "--startup-trials must be an integer >= 0, got -1"),
    (["--prune-startup", "-1"], [], "--prune-startup must be an integer >= 0, got -1"),
    (["--report-every", "0"], [], "--report-every must be an integer >= 1, got 0"),
])
def test_bad_input_gets_one_line_and_no_study(tmp_path, capsys, args, trainer, message):
    # in this process, as the trainer's import takes seconds; the next test runs the real command line
    import tune as tuner  # from benchmark/, on sys.path since this file's imports

    out = tmp_path / "study"
    status = tuner.main(["--env-ids", ENV, "--out", str(out), *args, "--", *trainer])
    stdout, stderr = capsys.readouterr()
    assert status == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("tune.py: error: "), stderr
    assert message in stderr
    assert not out.exists()


@pytest.mark.parametrize("args, trainer, message", [
    (["--bogus"], [], "tune.py: error: unrecognized arguments: --bogus\n"),
    (["--env-ids", "CartPole-v1"], [], "tune.py: error: CartPole-v1 has a Discrete action space; RPO needs a vector "
                                       "of continuous actions (a Box of one dimension)\n"),
    ([], ["--num-minibatches", "3"], "tune.py: error: the trainer refuses --rpo-alpha 0.001 --eval-episodes 0 "
                                     "--num-minibatches 3: --num-minibatches 3 does not divide the batch of 2048 "
                                     "steps (num_envs x num_steps)\n"),
])
def test_bad_input_on_the_command_line_is_the_process_one_line(tmp_path, args, trainer, message):
    out = tmp_path / "study"
    result = subprocess.run([sys.executable, str(TUNE), "--env-ids", ENV, "--out", str(out), *args, "--", *trainer],
                            capture_output=True, text=True, env=tune_env())
    assert (result.returncode, result.stdout, result.stderr) == (2, "", message)
    assert not out.exists()


@pytest.mark.parametrize("env_ids", [[], ["--env-ids", ENV]], ids=["rebuild", "run"])
@pytest.mark.parametrize("what, content, message", [
    (None, b"a file, not a directory\n", "{out}: File exists"),
    ("study.db", b"not a database\n", "{out}/study.db has no readable study: file is not a database"),
    ("study.journal", b"", "{out}/study.journal has no readable study: Record does not exist."),
])
def test_an_out_without_a_readable_study_gets_one_line_and_is_left_alone(tmp_path, env_ids, what, content, message):
    out = tmp_path / "study"
    if what is None:
        out.write_bytes(content)
        if not env_ids:  # no study to rebuild the tables of, as for an empty DIR
            message = "{out} holds no study (give --env-ids to start one)"
    else:
        out.mkdir()
        (out / what).write_bytes(content)
    before = {p: p.read_bytes() for p in [tmp_path, *tmp_path.rglob("*")] if p.is_file()}
    result = subprocess.run([sys.executable, str(TUNE), *env_ids, "--out", str(out)], capture_output=True, text=True,
                            env=tune_env(), timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == f"tune.py: error: {message.format(out=out)}\n"
    assert {p: p.read_bytes() for p in [tmp_path, *tmp_path.rglob("*")] if p.is_file()} == before  # nothing written


def test_slurm_without_sbatch_on_path_and_a_dir_without_study_are_errors(tmp_path):
    result = subprocess.run([sys.executable, str(TUNE), "--env-ids", ENV, "--slurm", "--out", str(tmp_path / "s")],
                            capture_output=True, text=True, env=tune_env(PATH=str(tmp_path)))
    assert result.returncode == 2
    assert result.stderr == "tune.py: error: --slurm given but sbatch is not on PATH\n"
    result = subprocess.run([sys.executable, str(TUNE), "--out", str(tmp_path / "s")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == f"tune.py: error: {tmp_path / 's'} holds no study (give --env-ids to start one)\n"


# ------------------------------------------------------------------------------- Slurm
@pytest.mark.slurm
def test_slurm_workers_share_one_journal_study(slurm, tmp_path):
    out = tmp_path / "study"
    args = ["--seeds", "1", "--n-trials", "3", "--workers", "2", "--slurm", "--time", "00:10:00"]
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
        final = final_return(run_dir(out, r["number"], repr(float(r["rpo_alpha"]))))
        assert float(r["value"]) == pytest.approx(normalized(ENV, final), abs=1e-6)
    assert (out / "study.journal").is_file() and not (out / "study.db").exists()
    assert_png(out / "optimization_history.png")

    # the finished study: a rerun submits nothing
    again = tune(out, *args)
    assert again.returncode == 0, again.stderr
    assert "nothing to run" in again.stdout and "submitted" not in again.stdout
