"""Interruption soak for benchmark/tune.py: not part of the test suite (it takes many minutes and kill -9s workers).

  .venv/bin/python tests/soak_tune_interruptions.py local DIR [--kills 3] [--n-trials 8]
  .venv/bin/python tests/soak_tune_interruptions.py slurm DIR [--kills 2] [--n-trials 6]   # Slurm must be up

local: a study with two local workers (one tune.py, --workers 2) of real tiny Pendulum runs. Whenever both workers
are in the middle of a trial (their runs have logged an episode), tune.py gets kill -9 and the same command is run
again, --kills times; the last run goes to the end.
slurm: a job array of two workers. Whenever a trial's runs have logged an episode, that trial's worker (its task's
tune.py) gets kill -9, --kills times; the other worker, or a worker the rerun submits, runs the trial again. The
command is rerun until it has nothing left to run.

Then it prints the figures and checks them: the trials counted (COMPLETE, PRUNED) equal --n-trials and none is left
RUNNING; every FAIL trial was queued again exactly once (one trial has retry_of = its number, with its values) and
each chain of retries ends COMPLETE or PRUNED; no process is left in DIR. Exit status 0 when all hold.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from conftest import alive, job_done, processes_in, wait_for  # this script's folder, tests/, is on sys.path

ROOT = Path(__file__).resolve().parents[1]
RUN = ["--total-timesteps", "4096", "--num-steps", "512", "--num-minibatches", "4", "--update-epochs", "2"]


def trials(out):
    storage = (optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "study.journal")))
               if (out / "study.journal").exists() else f"sqlite:///{out / 'study.db'}")
    return optuna.load_study(study_name="rpo-tune", storage=storage).get_trials(deepcopy=False)


def worker_pid(t):
    return int(t.user_attrs.get("worker", "?:0").split()[0].split(":")[1])


def mid_trial(out, t):
    """Whether a RUNNING trial's worker is alive and every run of it has logged an episode (it is training)."""
    logs = list((out / "trials" / str(t.number)).glob("*/train.log"))
    return (t.state.name == "RUNNING" and alive(worker_pid(t)) and logs
            and all("episodic_return" in p.read_text() for p in logs))


def wait(condition, what, timeout=1800):
    """conftest.wait_for, polling once a second (each poll reads the study)."""
    wait_for(condition, what, timeout=timeout, every=1)


def local(out, args, kills):
    command = [sys.executable, str(ROOT / "benchmark" / "tune.py"), "--env-ids", "Pendulum-v1", "--out", str(out),
               "--n-trials", str(args.n_trials), "--workers", "2", "--no-prune", "--", *RUN]
    lost = 0
    for attempt in range(kills + 1):
        tuner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if attempt < kills:
            wait(lambda: out.joinpath("study.db").exists() and sum(
                mid_trial(out, t) and worker_pid(t) == tuner.pid for t in trials(out)) == 2,
                "two trials of this run in the middle of training")
            killed = [t.number for t in trials(out) if t.state.name == "RUNNING" and worker_pid(t) == tuner.pid]
            tuner.kill()
            print(f"kill -9 tune.py (pid {tuner.pid}) during trials {killed}")
        output = tuner.communicate()[0]
        lost += len(re.findall(r"lost its worker", output))
        wait(lambda: processes_in(out) == [], "the killed workers' runs to stop", timeout=300)
    print(output.strip().splitlines()[-3] if tuner.returncode == 0 else output)
    return lost


def slurm(out, args, kills):
    command = [sys.executable, str(ROOT / "benchmark" / "tune.py"), "--env-ids", "Pendulum-v1", "--out", str(out),
               "--n-trials", str(args.n_trials), "--workers", "2", "--slurm", "--time", "00:30:00", "--no-prune",
               "--", *RUN]
    done, submissions, printed = 0, 0, ""
    while True:
        result = subprocess.run(command, capture_output=True, text=True)
        printed += result.stdout
        if "nothing to run" in result.stdout:
            break
        job = re.search(r"submitted Slurm job array (\d+)", result.stdout)
        if not job:
            sys.exit(f"soak: {result.stdout}{result.stderr}")
        submissions += 1
        print(result.stdout.strip())
        while done < kills:
            wait(lambda: any(mid_trial(out, t) for t in trials(out)) or job_done(job[1]), "a trial in training")
            running = [t for t in trials(out) if mid_trial(out, t)]
            if not running:
                break
            os.kill(worker_pid(running[0]), signal.SIGKILL)
            wait(lambda: not alive(worker_pid(running[0])), "the killed worker to end", timeout=60)
            done += 1
            print(f"kill -9 the worker {running[0].user_attrs['worker']} during trial {running[0].number}")
        wait(lambda: job_done(job[1]), f"Slurm job {job[1]} to end")
    logs = "".join(p.read_text() for p in (out / "slurm" / "logs").iterdir())
    return len(re.findall(r"lost its worker", logs + printed)), submissions


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["local", "slurm"])
    p.add_argument("out")
    p.add_argument("--kills", type=int)
    p.add_argument("--n-trials", type=int)
    args = p.parse_args()
    out = Path(args.out).resolve()
    if out.exists():
        sys.exit(f"soak: {out} exists; give a new directory")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    os.environ["PYTHONUNBUFFERED"] = "1"  # the runs' train.log shows each episode as it ends
    started = time.monotonic()
    if args.mode == "local":
        args.n_trials = args.n_trials or 8
        kills = 3 if args.kills is None else args.kills
        lost, submissions = local(out, args, kills), None
    else:
        args.n_trials = args.n_trials or 6
        kills = 2 if args.kills is None else args.kills
        lost, submissions = slurm(out, args, kills)

    ts = {t.number: t for t in trials(out)}
    states = {s: sum(t.state.name == s for t in ts.values()) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    failed = [t for t in ts.values() if t.state.name == "FAIL"]
    retries = {f.number: [t for t in ts.values() if t.user_attrs.get("retry_of") == f.number] for f in failed}

    def ends_well(number):
        t = ts[number]
        return t.state.name in ("COMPLETE", "PRUNED") or (t.state.name == "FAIL" and len(retries[number]) == 1
                                                         and ends_well(retries[number][0].number))

    checks = {
        f"trials counted = --n-trials {args.n_trials}": states["COMPLETE"] + states["PRUNED"] == args.n_trials,
        "no trial left RUNNING": states["RUNNING"] == 0,
        "every FAIL trial queued again exactly once, with its values": all(
            len(r) == 1 and r[0].params == ts[n].params for n, r in retries.items()),
        "every interrupted trial ends COMPLETE or PRUNED": all(ends_well(f.number) for f in failed),
        "no process left in DIR": processes_in(out) == [],
    }
    print(f"\n{args.mode} soak in {out}: {time.monotonic() - started:.0f} s; kill -9 x {kills}"
          + (f"; {submissions} job array(s) submitted" if submissions else ""))
    print(f"trials created {len(ts)}: " + ", ".join(f"{n} {s}" for s, n in states.items() if n))
    print(f"FAIL trials and their retries: {', '.join(f'{n} -> {[t.number for t in r]}' for n, r in retries.items())}")
    print(f"'lost its worker' lines: {lost}")
    for what, ok in checks.items():
        print(f"  {'ok ' if ok else 'NO '} {what}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except pytest.fail.Exception as e:  # wait_for gave up: one line, not a traceback
        sys.exit(f"soak: {e}")
