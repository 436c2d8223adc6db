#!/usr/bin/env python3
"""Choose rpo_alpha (and any other trainer flag) with Optuna, locally or as Slurm workers.

  benchmark/tune.py --env-ids "Pendulum-v1 Hopper-v4" --seeds 3 --n-trials 30 --out DIR \\
      [--workers K | --slurm [--partition P] [--time T] [--account A]] \\
      [--param learning-rate=1e-4:1e-3:log ...] [--enqueue rpo-alpha=0.5 ...] -- [fixed trainer flags]
  benchmark/tune.py --out DIR     # DIR's trials.csv, trials.md and plots again, from its study alone

The search space is search_space() below. A trial is a sweep of benchmark/sweep.sh in
DIR/trials/<number>/; its value is what report.py prints for it (benchmark/score.py: the IQM of
the runs' normalized final returns). The study is DIR/study.db (SQLite, local workers) or
DIR/study.journal (--slurm); rerunning the command continues it, to --n-trials trials in all
whatever the workers. See README.md, "Choosing α".
"""

import argparse
import collections
import contextlib
import csv
import io
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
import score  # noqa: E402
from sqlalchemy.exc import SQLAlchemyError  # noqa: E402  (optuna's SQLite storage)
from tune_flags import (Parser, UserError, check_counts, param_flags, parse_enqueue, parse_fixed,  # noqa: E402
                        parse_params, trainer_refuses)

STUDY = "rpo-tune"
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)  # what --n-trials counts
HOST, TASK = socket.gethostname(), (f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
                                    if os.environ.get("SLURM_ARRAY_JOB_ID") else None)
WORKER = f"{HOST}:{os.getpid()}" + (f" (Slurm {TASK})" if TASK else "")


def search_space(params):
    """The trainer flags a study searches, {Args field: Optuna distribution}: edit the default here.
    params are the --param ones, which add a flag or replace a default's range."""
    return {"rpo_alpha": FloatDistribution(0.001, 1.0, log=True), **params}


class Interrupted(Exception):
    """A signal stopped the trial (its trainers checkpointed and exited)."""


def configure(opts, fixed):
    """Everything checked before anything is written: the study's settings."""
    import rpo_continuous_action as rpo  # only here: Slurm workers and rebuilds do without the trainer (and torch)

    env_ids = (opts.env_ids or "").split()
    if not env_ids or len(set(env_ids)) != len(env_ids):
        raise UserError('give each env id once (--env-ids "Pendulum-v1 Hopper-v4")')
    check_counts(opts)
    if opts.slurm and not shutil.which("sbatch"):
        raise UserError("--slurm given but sbatch is not on PATH")
    if not opts.slurm and (opts.partition or opts.time or opts.account):
        raise UserError("--partition, --time and --account only make sense with --slurm")
    params = parse_params(opts.param)
    fixed_names, alpha, rest = parse_fixed(fixed, params)  # a fixed alpha goes to sweep.sh's --alphas (it names runs)
    dists = {k: d for k, d in search_space(params).items() if k not in fixed_names}  # a fixed flag is not searched
    if not dists:
        raise UserError("nothing to search: every searched flag is fixed after --")
    d = dists.get("rpo_alpha")
    if d and min(d.choices if isinstance(d, CategoricalDistribution) else [d.low]) < 0:
        raise UserError("--param rpo-alpha: alpha must be >= 0 (0 is PPO)")
    enqueued = [parse_enqueue(spec, dists) for spec in opts.enqueue]
    for env in env_ids:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. GLFW's "no DISPLAY" when dm_control is imported
                rpo.make_env(env, 0, False, "tune")().close()  # the trainer's own checks of an env id
        except rpo.UserError as e:
            raise UserError(str(e).splitlines()[0]) from None
        if score.score_range(env) is None:
            raise UserError(f"no normalized score for {env}: add its random-play return to RANDOM_PLAY in "
                            "benchmark/score.py and its published means to benchmark/published.csv")
    # the extremes of the search space, with the fixed flags: what the trainer says to them
    for pick in (0, -1):
        values = {k: d.choices[pick] if isinstance(d, CategoricalDistribution) else (d.low, d.high)[pick]
                  for k, d in dists.items()}
        argv = [*param_flags(values), "--eval-episodes", "0", *fixed]
        why = trainer_refuses(["--env-id", env_ids[0], *argv])
        if why:
            raise UserError(f"the trainer refuses {shlex.join(argv)}: {why}")
    args, _ = rpo.parse_args(["--env-id", env_ids[0], *param_flags(values), *fixed])
    return {"env_ids": env_ids, "seeds": opts.seeds, "fixed": ["--eval-episodes", "0", *rest], "alpha": alpha,
            "space": {k: optuna.distributions.distribution_to_json(d) for k, d in dists.items()},
            "total_timesteps": args.total_timesteps}, enqueued


# ------------------------------------------------------------------------------------ a trial
def objective(trial, cfg, opts, stop):
    """Runs the trial's sweep; its value is score.aggregate_iqm of the runs, as report.py prints it."""
    alpha = repr(trial.params["rpo_alpha"]) if "rpo_alpha" in trial.params else cfg["alpha"]
    tdir = Path(opts.out) / "trials" / str(trial.number)
    shutil.rmtree(tdir, ignore_errors=True)  # a study started over in the same DIR
    tdir.mkdir(parents=True)
    print(f"trial {trial.number} started: {describe(trial.params)}", flush=True)
    runs = len(cfg["env_ids"]) * cfg["seeds"]
    cmd = [str(HERE / "sweep.sh"), "--env-ids", " ".join(cfg["env_ids"]), "--seeds", str(cfg["seeds"]),
           "--alphas", alpha, "--workers", str(runs), "--out", str(tdir), "--",
           *param_flags({k: v for k, v in trial.params.items() if k != "rpo_alpha"}), *cfg["fixed"]]
    if shutil.which("setpriv"):  # Python's subprocess has no parent-death signal: a killed worker stops its runs
        cmd = ["setpriv", "--pdeathsig", "TERM", *cmd]
    every = opts.report_every or max(cfg["total_timesteps"] // 20, 1)
    milestones, started, read_at = list(range(every, cfg["total_timesteps"], every)), time.monotonic(), 0.0

    def report(groups, prune):
        """Reports the value at each milestone every run has passed (after its first episode); may prune."""
        steps = [r["steps"] for rs in groups.values() for r in rs]
        if len(steps) < runs:
            return
        first, last = max(s[0] for s in steps), min(s[-1] for s in steps)
        while milestones and milestones[0] <= last:
            step = milestones.pop(0)
            if step < first:
                continue  # some run has not ended an episode yet: no value
            trial.report(score.aggregate_iqm(groups, alpha, step), step)
            if prune and trial.should_prune():
                trial.set_user_attr("pruned_at_step", step)
                set_returns(trial, groups, step)
                raise optuna.TrialPruned(f"below the median at step {step}")

    with open(tdir / "sweep.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "PYTHON": os.environ.get("PYTHON") or sys.executable})
        try:
            while proc.poll() is None:
                if stop:
                    raise Interrupted(f"interrupted by {stop[0].name}")
                elapsed = time.monotonic() - started
                if elapsed - read_at >= min(max(elapsed / 20, 1), 30):  # event files: read often early, rarely late
                    read_at = elapsed
                    report(score.load_run_dirs(tdir)[0], prune=True)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.5)
        finally:  # sweep.sh passes a SIGTERM on to the trainers and waits for them; a second signal kills them
            sent = 0
            while proc.poll() is None:
                if sent < max(len(stop), 1):
                    proc.send_signal(signal.SIGTERM)
                    sent += 1
                time.sleep(0.2)
            trial.set_user_attr("seconds", round(time.monotonic() - started, 1))
    if stop or proc.returncode in (130, 143):
        raise Interrupted(f"interrupted by {stop[0].name if stop else 'a signal to its runs'}")
    if proc.returncode != 0:
        failed = [ln for ln in (tdir / "sweep.log").read_text().splitlines() if "FAILED" in ln or "error" in ln]
        raise RuntimeError(f"trial {trial.number}: {(failed or ['sweep.sh exited %d' % proc.returncode])[-1]}")
    groups, skipped = score.load_run_dirs(tdir)
    if skipped:
        raise RuntimeError(f"trial {trial.number}: {skipped[0][0]}: {skipped[0][1]}; raise --total-timesteps")
    report(groups, prune=False)  # the milestones passed since the last read: later trials are pruned against them
    set_returns(trial, groups)
    return score.aggregate_iqm(groups, alpha)


def set_returns(trial, groups, step=None):
    """The mean final return per env (at step, for a pruned trial), for the tables."""
    for (env, _), rs in groups.items():
        trial.set_user_attr(f"return:{env}", float(sum(r["final"] if step is None else score.score_at(r, step)
                                                        for r in rs) / len(rs)))


def describe(values):
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


# ------------------------------------------------------------------------------------ the study
def open_study(out, journal, create=True):
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial, and errors as one line
    path = out / ("study.journal" if journal else "study.db")
    try:
        storage = (optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path))) if journal
                   else  # several machines: a file that NFS can share (SQLite cannot be)
                   optuna.storages.RDBStorage(f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 120}}))
        if not create:
            return optuna.load_study(study_name=STUDY, storage=storage)
        return optuna.create_study(study_name=STUDY, storage=storage, direction="maximize", load_if_exists=True)
    except (KeyError, SQLAlchemyError, ValueError) as e:  # an empty file ("Record does not exist"), not a database
        raise UserError(f"{path} has no readable study: {getattr(e, 'orig', None) or e.args[0]}".splitlines()[0]) from None


@contextlib.contextmanager
def locked(out):
    """DIR/study.lock, which one worker (thread, process or machine) at a time holds while it finds lost trials,
    counts the trials and creates one: so --n-trials bounds the trials as they start (Optuna's MaxTrialsCallback
    counts after a trial ends: K workers could start K - 1 too many) and a lost trial is queued again once. It is
    Optuna's lock for its journal file, safe on NFS; one that a killed worker left is taken over after 60 s."""
    lock = optuna.storages.journal.JournalFileOpenLock(str(out / "study"), grace_period=60)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def retry(study, trial):
    """Marks a trial FAIL (it does not count) and queues it again with the same values, once: retry_of names it."""
    if not any(t.user_attrs.get("retry_of") == trial.number for t in study.get_trials(deepcopy=False)):
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


def fail_lost_trials(study):
    """Runs again each RUNNING trial whose worker is gone: no such tune.py process on this machine, a Slurm task that
    squeue no longer lists, or this very task before a requeue (Optuna's heartbeat covers SQLite only, minutes late)."""
    running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if "worker" in t.user_attrs]
    tasks = None
    if any(not t.user_attrs["worker"].startswith(f"{HOST}:") for t in running) and shutil.which("squeue"):
        with contextlib.suppress(subprocess.SubprocessError):
            listed = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=20)
            tasks = set(listed.stdout.split()) if listed.returncode == 0 else None
    for t in running:
        host, pid = t.user_attrs["worker"].split()[0].rsplit(":", 1)
        task = re.search(r"\(Slurm (\S+)\)", t.user_attrs["worker"])
        if host == HOST:
            with contextlib.suppress(OSError):  # a zombie's command line is empty
                if int(pid) == os.getpid() or b"tune.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    continue
        elif not (task and (task[1] == TASK or tasks is not None and task[1] not in tasks)):
            continue
        retry(study, t)
        print(f"trial {t.number} lost its worker: marked FAIL, it will be run again", flush=True)


def run_workers(study, cfg, opts, jobs):
    """Runs trials, jobs at a time, while the study has fewer than --n-trials; returns an exit status."""
    # A signal only sets this flag, which each trial polls to stop its sweep.sh (and so its trainers) cleanly;
    # SIGUSR1 is Slurm's warning before the time limit
    stop, ended, ran, out = [], [], [], Path(opts.out)
    previous = {s: signal.signal(s, lambda signum, _: stop.append(signal.Signals(signum)))
                for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    study.sampler = optuna.samplers.TPESampler(n_startup_trials=opts.startup_trials, constant_liar=True)
    study.pruner = optuna.pruners.NopPruner() if opts.no_prune else optuna.pruners.MedianPruner(
        n_startup_trials=opts.prune_startup,
        n_warmup_steps=cfg["total_timesteps"] // 2 if opts.prune_warmup is None else opts.prune_warmup)

    def work():
        while not stop and not ended:
            with locked(out):
                fail_lost_trials(study)
                if len(study.get_trials(deepcopy=False, states=COUNTED)) >= opts.n_trials:
                    return
                # a queued trial first, with its values; else the sampler's
                trial = study.ask({k: optuna.distributions.json_to_distribution(v) for k, v in cfg["space"].items()})
                trial.set_user_attr("worker", WORKER)
            ran.append(trial.number)
            write_outputs(out, study, cfg)  # the tables show it RUNNING
            try:
                t = study.tell(trial, objective(trial, cfg, opts, stop))
            except optuna.TrialPruned:
                t = study.tell(trial, state=TrialState.PRUNED)  # its value: the last one reported
            except Interrupted as e:
                retry(study, trial)
                print(f"trial {trial.number} {e}: marked FAIL, it will be run again", flush=True)
                ended.append(e)
                continue
            except Exception as e:  # a failing trainer (RuntimeError, one line) or a bug: the study stops
                study.tell(trial, state=TrialState.FAIL)
                ended.append(e)
                continue
            write_outputs(out, study, cfg)
            print(progress(study, t, cfg, opts), flush=True)

    threads = [threading.Thread(target=work) for _ in range(jobs)]
    try:
        write_outputs(out, study, cfg)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()  # the main thread handles signals meanwhile
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        write_outputs(out, study, cfg, plots=bool(ran))  # a worker that found the study full leaves them be
    failed = [e for e in ended if not isinstance(e, Interrupted)]
    if failed and not isinstance(failed[0], RuntimeError):
        raise failed[0]
    if failed:
        print(f"tune.py: {failed[0]}", file=sys.stderr)
        return 1
    if stop or ended:
        print(f"tune.py: {f'interrupted by {stop[0].name}' if stop else ended[0]}; rerun the same command to continue "
              "the study", file=sys.stderr)
    return 128 + stop[0] if stop else int(bool(ended))


def progress(study, t, cfg, opts):
    done, a = len(study.get_trials(deepcopy=False, states=COUNTED[:2])), t.user_attrs
    returns = ", ".join(f"{e} {a[f'return:{e}']:.1f}" for e in cfg["env_ids"] if f"return:{e}" in a)
    best = best_trial(study)
    return (f"[{done}/{opts.n_trials}] trial {t.number} {t.state.name}"
            + (f" at step {a['pruned_at_step']}" if "pruned_at_step" in a else "")
            + (f" value={t.value:.4g}" if t.value is not None else "") + f" {describe(t.params)}"
            + (f" | final return {returns}" if returns else "")
            + (f" | best: trial {best.number} ({best.value:.4g})" if best else ""))


def best_trial(study):
    return max(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.value, default=None)


# ------------------------------------------------------------------------------------ outputs
PLOTS = ("optimization_history", "intermediate_values", "slice", "param_importances")


def write_outputs(out, study, cfg, plots=False):
    """DIR/trials.csv and trials.md from the study alone (a committed study rebuilds them); the plots."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    names, envs = list(cfg["space"]), cfg["env_ids"]
    header = ["number", "state", "value", *names, *[f"return:{e}" for e in envs], "pruned_at_step", "seconds"]
    rows = [[t.number, t.state.name, "" if t.value is None else t.value,
             *[{**t.system_attrs.get("fixed_params", {}), **t.params}.get(n, "") for n in names],  # WAITING: queued
             *[t.user_attrs.get(f"return:{e}", "") for e in envs], t.user_attrs.get("pruned_at_step", ""),
             t.user_attrs.get("seconds", "")] for t in trials]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header + ["worker"]] + [
        row + [t.user_attrs.get("worker", "")] for row, t in zip(rows, trials)])
    replace(out / "trials.csv", buf.getvalue())

    states = collections.Counter(t.state.name for t in trials)
    ranges = "; ".join(f"{e} [{lo:g}, {hi:g}]" for e in envs for lo, hi, _ in [score.score_range(e)])
    md = ["# Tuning study", "", f"- command: `{study.user_attrs.get('command', '')}`",
          f"- envs: {', '.join(envs)}; seeds 1..{cfg['seeds']} per trial; fixed trainer flags: `{shlex.join(cfg['fixed'])}`"
          + (f"; `--rpo-alpha {cfg['alpha']}`" if cfg["alpha"] else ""),
          "- search space: " + "; ".join(f"{n} {optuna.distributions.json_to_distribution(d)}"
                                         for n, d in cfg["space"].items()),
          "- value: the IQM over a trial's runs of their normalized final return, as `benchmark/report.py "
          f"trials/<number>` prints it (`benchmark/score.py`; [low, high]: {ranges})",
          f"- {len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
          + " (a PRUNED trial's value and returns are those at the step it was stopped; FAIL trials do not count)"]
    best = best_trial(study)
    if best:
        md.append(f"- **best: trial {best.number}, value {best.value:.4g}: `{shlex.join(param_flags(best.params))}`**")
    md += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |" for row in rows]
    if plots:
        draw_plots(out, study, names)
    md += [""] + [f"![{p}]({p}.png)" for p in PLOTS if (out / f"{p}.png").exists()]
    replace(out / "trials.md", "\n".join(md) + "\n")


def draw_plots(out, study, names):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis

    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    makers = {"optimization_history": (vis.plot_optimization_history, complete >= 1, "no completed trial yet"),
              "intermediate_values": (vis.plot_intermediate_values,
                                      any(t.intermediate_values for t in study.get_trials(deepcopy=False)),
                                      "no intermediate values yet"),
              "slice": (vis.plot_slice, complete >= 1, "no completed trial yet"),
              "param_importances": (vis.plot_param_importances, len(names) >= 2 and complete >= 2,
                                    "needs two or more searched flags and two completed trials")}
    for name, (make, possible, why) in makers.items():
        path = out / f"{name}.png"
        try:
            if not possible:
                raise ValueError(why)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = make(study)
            (ax.flat[0] if hasattr(ax, "flat") else ax).figure.savefig(path.with_suffix(".tmp.png"), dpi=100,
                                                                      bbox_inches="tight")
            os.replace(path.with_suffix(".tmp.png"), path)
        except Exception as e:  # e.g. importances when every trial had the same values
            path.unlink(missing_ok=True)
            print(f"no {name}.png: {e}".splitlines()[0], flush=True)
        finally:
            plt.close("all")


def replace(path, text):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------ command line
def parse(argv):
    p = Parser(prog="tune.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-ids", help="space-separated env ids; every trial runs each of them")
    p.add_argument("--seeds", type=int, default=1, help="seeds 1..S per env and trial (default 1)")
    p.add_argument("--n-trials", type=int, default=20, help="trials in the study in all (default 20)")
    p.add_argument("--workers", type=int, default=1, help="trials at a time (default 1)")
    p.add_argument("--out", required=True, help="the study's directory")
    p.add_argument("--param", action="append", default=[], metavar="FLAG=LOW:HIGH[:log]|FLAG=A,B,C",
                   help="a trainer flag to search (repeatable); the default search: search_space() in tune.py")
    p.add_argument("--enqueue", action="append", default=[], metavar="FLAG=V[,FLAG=V]",
                   help="a trial to run first with these values (repeatable), e.g. rpo-alpha=0.5")
    p.add_argument("--startup-trials", type=int, default=5, help="random trials before TPE (default 5)")
    p.add_argument("--prune-startup", type=int, default=5, help="completed trials before pruning starts (default 5)")
    p.add_argument("--prune-warmup", type=int, help="steps before a trial can be pruned (default half a run)")
    p.add_argument("--report-every", type=int, help="steps between intermediate values (default 1/20 of a run)")
    p.add_argument("--no-prune", action="store_true", help="run every trial to the end")
    p.add_argument("--slurm", action="store_true", help="submit the workers as a Slurm job array")
    p.add_argument("--slurm-worker", action="store_true", help=argparse.SUPPRESS)  # one array task
    p.add_argument("--partition")
    p.add_argument("--time")
    p.add_argument("--account")
    return p.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ours, fixed = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    try:
        opts = parse(ours)
        out = Path(opts.out).resolve()
        journal = (out / "study.journal").exists() or (opts.slurm and not (out / "study.db").exists())
        exists = (out / "study.journal").exists() or (out / "study.db").exists()
        if opts.slurm_worker:  # a task of the job array submitted below: the study and its settings are in DIR
            study = open_study(out, journal, create=False)
            return run_workers(study, study.user_attrs["config"], opts, 1)
        if opts.env_ids is None:  # rewrite the outputs of the study in DIR
            if not exists:
                raise UserError(f"{out} holds no study (give --env-ids to start one)")
            study = open_study(out, journal, create=False)
            write_outputs(out, study, study.user_attrs["config"], plots=True)
            return summary(out, study)
        cfg, enqueued = configure(opts, fixed)
        if opts.slurm and (out / "study.db").exists():
            raise UserError(f"{out} holds a local SQLite study, which Slurm workers cannot share; "
                            "continue it without --slurm or use another --out")
        old = open_study(out, journal, create=False).user_attrs.get("config", {}) if exists else cfg
        changed = [k for k in ("env_ids", "seeds", "space", "fixed", "alpha") if old.get(k) != cfg[k]]
        if changed:
            raise UserError(f"{out} holds a study with other {', '.join(changed)}; "
                            "rerun it with the same settings or use another --out")
        out.mkdir(parents=True, exist_ok=True)
        study = open_study(out, journal)
    except (UserError, OSError) as e:  # OSError: e.g. --out names a file
        print(f"tune.py: error: {e if isinstance(e, UserError) else f'{e.filename}: {e.strerror}'}", file=sys.stderr)
        return 2
    study.set_user_attr("config", cfg)
    study.set_user_attr("command", shlex.join(["benchmark/tune.py", *argv]))
    for values in enqueued:
        study.enqueue_trial(values, skip_if_exists=True)
    with locked(out):
        fail_lost_trials(study)
        used = len(study.get_trials(deepcopy=False, states=COUNTED))
    remaining, runs = opts.n_trials - used, len(cfg["env_ids"]) * cfg["seeds"]
    if remaining <= 0:
        print(f"the study in {out} has {used} trials (--n-trials {opts.n_trials}); nothing to run")
        write_outputs(out, study, cfg, plots=True)
        return summary(out, study)
    workers = min(opts.workers, remaining)
    if opts.slurm:  # each worker runs trials while the study has fewer than --n-trials, as a local one does
        submitted = subprocess.run(
            [HERE / "slurm" / "submit.sh", out / "slurm" / "logs", "--job-name=rpo-tune", f"--array=0-{workers - 1}",
             f"--cpus-per-task={runs}", *[f"--{k}={getattr(opts, k)}" for k in ("partition", "time", "account")
                                          if getattr(opts, k)],
             "--", sys.executable, HERE / "tune.py", *ours, "--out", out, "--slurm-worker"], capture_output=True, text=True)
        if submitted.returncode != 0:
            print(f"tune.py: error: sbatch failed: {(submitted.stderr.strip().splitlines() or ['?'])[-1]}", file=sys.stderr)
            return 2
        print(f"submitted Slurm job array {submitted.stdout.strip()}: {workers} worker(s) for {remaining} of "
              f"{opts.n_trials} trials ({used} done earlier), {runs} CPU(s) each; logs: "
              f"{out}/slurm/logs/{submitted.stdout.strip()}_<task>.out; rerun to see the result")
        return 0
    print(f"running {remaining} of {opts.n_trials} trials ({used} done earlier), {workers} worker(s), "
          f"{runs} trainer run(s) per trial, in {out}", flush=True)
    return run_workers(study, cfg, opts, workers) or summary(out, study)


def summary(out, study):
    best = best_trial(study)
    if best is None:
        print(f"no trial completed; see {out}/trials.md", file=sys.stderr)
        return 1
    print(f"best: trial {best.number}, value {best.value:.4g}: {describe(best.params)}")
    print(f"  trainer flags: {shlex.join(param_flags(best.params))}")
    print(f"table: {out}/trials.md and trials.csv; plots: {out}/*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
