#!/usr/bin/env python3
"""Choose rpo_alpha (and any other trainer flag) with Optuna, locally or as Slurm workers.

  benchmark/tune.py --env-ids "Pendulum-v1 Hopper-v4" --seeds 3 --n-trials 30 --out DIR \\
      [--workers K | --slurm [--partition P] [--time T] [--account A]] \\
      [--param learning-rate=1e-4:1e-3:log ...] [--enqueue rpo-alpha=0.5 ...] -- [fixed trainer flags]
  benchmark/tune.py --out DIR     # DIR's trials.csv, trials.md and plots again, from its study alone

The search space is search_space() below. A trial is a sweep of benchmark/sweep.sh in
DIR/trials/<number>/; its value is what report.py prints for it (benchmark/score.py: the IQM of
the runs' normalized final returns). The study is DIR/study.db (SQLite, local workers) or
DIR/study.journal (--slurm); rerunning the command continues it. See README.md, "Choosing α".
"""

import argparse
import contextlib
import csv
import io
import math
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
import typing
import warnings
from dataclasses import fields
from pathlib import Path

import optuna
import sqlalchemy
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
import rpo_continuous_action as rpo  # noqa: E402
import score  # noqa: E402

SWEEP = HERE / "sweep.sh"
STUDY = "rpo-tune"
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)  # what --n-trials counts
SET_BY_TUNER = {"env_id", "seed", "resume", "eval_checkpoint", "save_model", "torch_threads", "batch_size",
                "minibatch_size", "num_iterations"}


def search_space(params):
    """The trainer flags a study searches, {Args field: Optuna distribution}: edit the default here.
    params are the --param ones, which add a flag or replace a default's range."""
    return {"rpo_alpha": FloatDistribution(0.001, 1.0, log=True), **params}


def suggest(trial, dists):
    """A trial's values of the searched flags, drawn by the sampler."""
    values = {}
    for name, d in dists.items():
        if isinstance(d, CategoricalDistribution):
            values[name] = trial.suggest_categorical(name, d.choices)
        elif isinstance(d, IntDistribution):
            values[name] = trial.suggest_int(name, d.low, d.high, log=d.log)
        else:
            values[name] = trial.suggest_float(name, d.low, d.high, log=d.log)
    return values


class UserError(Exception):
    """Bad input: one line on stderr, exit 2."""


class Interrupted(Exception):
    """A signal stopped the trial (its trainers checkpointed and exited)."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise UserError(message)


def flag(name):
    return "--" + name.replace("_", "-")


# ------------------------------------------------------------------------------------ input
TYPES = {f.name: t for f in fields(rpo.Args) for t in [typing.get_type_hints(rpo.Args)[f.name]]}


def field_type(name):
    t = TYPES[name]
    inner = [a for a in typing.get_args(t) if a is not type(None)]
    return inner[0] if inner else t


def field_name(text):
    name = text.strip().lstrip("-").replace("-", "_")
    if name not in TYPES or name in SET_BY_TUNER:
        raise UserError(f"the trainer has no flag {flag(name)} that can be searched")
    return name


def convert(text, name):
    t = field_type(name)
    try:
        if t is bool:
            return {"true": True, "false": False}[text.strip().lower()]
        value = t(text)
        if t is float and not math.isfinite(value):
            raise ValueError
        return value
    except (KeyError, ValueError):
        raise UserError(f"{flag(name)} takes {'true/false' if t is bool else t.__name__} values, got '{text}'") from None


def parse_param(spec):
    """--param FLAG=LOW:HIGH[:log] or FLAG=A,B,C -> (field, Optuna distribution)."""
    name_text, _, rng = spec.partition("=")
    name = field_name(name_text)
    if "," in rng:
        choices = [convert(c, name) for c in rng.split(",")]
        if len(set(choices)) != len(choices) or len(choices) < 2:
            raise UserError(f"--param {spec}: give two or more distinct values")
        return name, CategoricalDistribution(choices)
    parts = rng.split(":")
    log = parts[2:] == ["log"]
    if len(parts) != 2 + log:
        raise UserError(f"--param '{spec}': expected FLAG=LOW:HIGH[:log] or FLAG=A,B,C")
    t = field_type(name)
    if t not in (int, float):
        raise UserError(f"--param {spec}: {flag(name)} is not a number; list its values (FLAG=A,B)")
    low, high = (convert(p, name) for p in parts[:2])
    if not low < high:
        raise UserError(f"--param {spec}: empty range (LOW must be below HIGH)")
    if log and low <= 0:
        raise UserError(f"--param {spec}: a log range needs LOW > 0")
    return name, (IntDistribution if t is int else FloatDistribution)(low, high, log=log)


def param_flags(values):
    """{field: value} -> trainer flags (booleans as --flag / --no-flag)."""
    argv = []
    for name, v in values.items():
        if isinstance(v, bool):
            argv.append(flag(name) if v else "--no-" + name.replace("_", "-"))
        else:
            argv += [flag(name), repr(v) if isinstance(v, float) else str(v)]
    return argv


def trainer_refuses(argv):
    """The trainer's own parser on argv: None, or the reason it gives."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
            rpo.parse_args(argv)
    except rpo.UserError as e:
        return str(e)
    except SystemExit:  # tyro's box of text: its message line
        lines = [ln.strip(" │|") for ln in buf.getvalue().splitlines()]
        lines = [ln for ln in lines if ln and not set(ln) <= set("-─│╭╮╰╯ ")]
        return lines[1] if len(lines) > 1 else (lines[0] if lines else "bad value")
    return None


def configure(opts, fixed):
    """Everything checked before anything is written: the study's settings."""
    env_ids = (opts.env_ids or "").split()
    if not env_ids or len(set(env_ids)) != len(env_ids):
        raise UserError('give each env id once (--env-ids "Pendulum-v1 Hopper-v4")')
    for name in ("seeds", "n_trials", "workers", "report_every", "prune_startup"):
        if getattr(opts, name) is not None and getattr(opts, name) < (name != "prune_startup"):
            raise UserError(f"--{name.replace('_', '-')} must be an integer >= {int(name != 'prune_startup')}")
    if opts.slurm and not shutil.which("sbatch"):
        raise UserError("--slurm given but sbatch is not on PATH")
    if not opts.slurm and (opts.partition or opts.time or opts.account):
        raise UserError("--partition, --time and --account only make sense with --slurm")

    params = {}
    for spec in opts.param:
        name, dist = parse_param(spec)
        if name in params:
            raise UserError(f"--param {flag(name)} is given twice")
        params[name] = dist
    fixed_names, alpha, rest = set(), None, []  # a fixed alpha goes to sweep.sh's --alphas (it names the runs)
    for i, token in enumerate(fixed):
        text = token[2:].split("=", 1)[0].replace("-", "_") if token.startswith("--") else ""
        name = text[3:] if text.startswith("no_") and text[3:] in TYPES else text
        if name == "rpo_alpha":
            alpha = token.split("=", 1)[1] if "=" in token else fixed[i + 1] if i + 1 < len(fixed) else ""
        elif text and (name not in TYPES or name in {"batch_size", "minibatch_size", "num_iterations"}):
            raise UserError(f"unknown trainer flag {token.split('=', 1)[0]} (see rpo_continuous_action.py --help)")
        elif name in SET_BY_TUNER or name in params:
            raise UserError(f"trainer flag {flag(name)} is set by the tuner" if name in SET_BY_TUNER else
                            f"{flag(name)} is searched (--param); remove it from the trainer flags")
        fixed_names.add(name)
        rest += [] if name == "rpo_alpha" or (i and fixed[i - 1].split("=")[0] == "--rpo-alpha") else [token]
    dists = {k: d for k, d in search_space(params).items() if k not in fixed_names}  # a fixed flag is not searched
    if not dists:
        raise UserError("nothing to search: every searched flag is fixed after --")
    d = dists.get("rpo_alpha")
    if d and min(d.choices if isinstance(d, CategoricalDistribution) else [d.low]) < 0:
        raise UserError("--param rpo-alpha: alpha must be >= 0 (0 is PPO)")

    enqueued = []
    for spec in opts.enqueue:
        values = {}
        for item in spec.split(","):
            name_text, _, text = item.partition("=")
            name = field_name(name_text)
            if name not in dists:
                raise UserError(f"--enqueue {spec}: {flag(name)} is not searched")
            v, d = convert(text, name), dists[name]
            if not (v in d.choices if isinstance(d, CategoricalDistribution) else d.low <= v <= d.high):
                raise UserError(f"--enqueue {spec}: {v} is outside the search space of {flag(name)}")
            values[name] = v
        enqueued.append(values)

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
def objective(trial, study, cfg, opts, stop):
    """Runs the trial's sweep; its value is score.aggregate_iqm of the runs, as report.py prints it."""
    values = suggest(trial, {k: optuna.distributions.json_to_distribution(v) for k, v in cfg["space"].items()})
    flags = param_flags({k: v for k, v in values.items() if k != "rpo_alpha"})
    fixed, alpha = cfg["fixed"], (repr(values["rpo_alpha"]) if "rpo_alpha" in values else cfg["alpha"])
    tdir = Path(opts.out) / "trials" / str(trial.number)
    shutil.rmtree(tdir, ignore_errors=True)  # a study started over in the same DIR
    tdir.mkdir(parents=True)
    trial.set_user_attr("worker", WORKER)
    print(f"trial {trial.number} started: {describe(values)}", flush=True)
    runs = len(cfg["env_ids"]) * cfg["seeds"]
    cmd = [str(SWEEP), "--env-ids", " ".join(cfg["env_ids"]), "--seeds", str(cfg["seeds"]), "--alphas", alpha,
           "--workers", str(runs), "--out", str(tdir), "--", *flags, *fixed]
    if shutil.which("setpriv"):  # Python's subprocess has no parent-death signal: a killed worker stops its runs
        cmd = ["setpriv", "--pdeathsig", "TERM", *cmd]
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON") or sys.executable}
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
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        try:
            while proc.poll() is None:
                if stop:
                    raise Interrupted(f"interrupted by {stop[0].name}")
                elapsed = time.monotonic() - started
                if elapsed - read_at >= min(max(elapsed / 20, 1), 30):  # event files: read often early, rarely late
                    read_at = elapsed
                    report(score.load_run_dirs(tdir)[0], prune=True)
                time.sleep(0.5)
        finally:
            if proc.poll() is None:  # sweep.sh passes SIGTERM on to the trainers and waits for them
                proc.send_signal(signal.SIGTERM)
                proc.wait()
            trial.set_user_attr("seconds", round(time.monotonic() - started, 1))
    if stop or proc.returncode in (130, 143):
        raise Interrupted(f"interrupted by {stop[0].name if stop else 'a signal to its runs'}")
    if proc.returncode != 0:
        failed = [ln for ln in (tdir / "sweep.log").read_text().splitlines() if "FAILED" in ln or "error" in ln]
        raise RuntimeError(f"trial {trial.number}: {(failed or ['sweep.sh exited %d' % proc.returncode])[-1]}")
    groups, skipped = score.load_run_dirs(tdir)
    if skipped:
        raise RuntimeError(f"trial {trial.number}: {skipped[0][0]}: {skipped[0][1]}; raise --total-timesteps")
    report(groups, prune=False)  # the milestones the runs passed between two reads, for later trials' pruning
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
WORKER = f"{socket.gethostname()}:{os.getpid()}" + (
    f" (Slurm {os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')})"
    if os.environ.get("SLURM_ARRAY_JOB_ID") else "")


def open_study(out, journal, create=True):
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial, and errors as one line
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if journal:  # several machines: a file that NFS can share (SQLite cannot be)
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "study.journal")))
    else:  # Optuna's heartbeat: a RUNNING trial silent for 3 minutes lost its worker, is FAILed and run again
        storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'study.db'}", engine_kwargs={"connect_args": {"timeout": 120}},
                                             heartbeat_interval=10, grace_period=180,
                                             heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback())
        # Optuna claims a queued (WAITING) trial with SELECT ... FOR UPDATE, which SQLite ignores: two workers
        # could run the same trial. SQLAlchemy's recipe makes every SQLite transaction take the write lock first.
        sqlalchemy.event.listen(storage.engine, "connect", lambda dbapi, _: setattr(dbapi, "isolation_level", None))
        sqlalchemy.event.listen(storage.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        storage.engine.dispose()  # connections made from now on have the hooks
    if not create:
        return optuna.load_study(study_name=STUDY, storage=storage)
    return optuna.create_study(study_name=STUDY, storage=storage, direction="maximize", load_if_exists=True)


def fail_lost_trials(study, journal):
    """RUNNING trials whose worker is gone become FAIL and are queued again with the same values."""
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)  # SQLite: Optuna's heartbeat
    if journal:  # Optuna 5's JournalStorage has no heartbeat: ask Slurm whether the trial's task still runs
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            task = re.search(r"\(Slurm (\S+)\)", t.user_attrs.get("worker", ""))
            if task and not subprocess.run(["squeue", "-h", "-j", task[1]], capture_output=True, text=True).stdout.strip():
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                RetryHeartbeatStaleTrialCallback()(study, study.get_trials()[t.number])
    for t in study.get_trials(deepcopy=False):
        if t.number in before and t.state == TrialState.FAIL:
            print(f"trial {t.number} lost its worker: marked FAIL, it will be run again", flush=True)


def run_workers(study, cfg, opts, jobs):
    """Runs trials, jobs at a time, until the study has --n-trials; returns an exit status."""
    # Optuna turns only a KeyboardInterrupt of the main thread into a FAIL trial: SIGTERM (Slurm, kill) and the
    # n_jobs threads need this flag, which each trial polls to stop its sweep.sh (and so its trainers) cleanly.
    stop = []
    previous = {s: signal.signal(s, lambda signum, _: stop.append(signal.Signals(signum)))
                for s in (signal.SIGINT, signal.SIGTERM)}
    sampler = optuna.samplers.TPESampler(n_startup_trials=opts.startup_trials, constant_liar=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=opts.prune_startup, n_warmup_steps=cfg["total_timesteps"] // 2
                                         if opts.prune_warmup is None else opts.prune_warmup)
    study.sampler, study.pruner = sampler, pruner if not opts.no_prune else optuna.pruners.NopPruner()

    def finished(study, t):
        write_outputs(Path(opts.out), study, cfg)
        print(progress(study, t, cfg, opts), flush=True)

    def run(trial):
        try:
            return objective(trial, study, cfg, opts, stop)
        except Interrupted as e:  # FAIL (not counted); queued again with the same values
            trial.set_user_attr("interrupted", str(e))
            study.enqueue_trial(trial.params)
            print(f"trial {trial.number} {e}: marked FAIL, it will be run again", flush=True)
            study.stop()
            raise

    write_outputs(Path(opts.out), study, cfg)
    try:
        remaining = opts.n_trials - len(study.get_trials(deepcopy=False, states=COUNTED))
        if remaining > 0:
            study.optimize(run, n_trials=remaining, n_jobs=jobs, callbacks=[
                MaxTrialsCallback(opts.n_trials, states=COUNTED), finished])
        if stop:  # with n_jobs > 1 Optuna does not re-raise every trial's Interrupted
            raise Interrupted(f"interrupted by {stop[0].name}")
    except Interrupted as e:
        print(f"tune.py: {e}; rerun the same command to continue the study", file=sys.stderr)
        return 128 + stop[0] if stop else 1
    except RuntimeError as e:
        print(f"tune.py: {e}", file=sys.stderr)
        return 1
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        write_outputs(Path(opts.out), study, cfg, plots=True)
    return 0


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

    states = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
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


IDENTITY = ("env_ids", "seeds", "space", "fixed", "alpha")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ours, fixed = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    try:
        opts = parse(ours)
        out = Path(opts.out).resolve()
        journal = (out / "study.journal").exists() or (opts.slurm and not (out / "study.db").exists())
        exists = (out / "study.journal").exists() or (out / "study.db").exists()
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
        changed = [k for k in IDENTITY if old.get(k) != cfg[k]]
        if changed:
            raise UserError(f"{out} holds a study with other {', '.join(changed)}; "
                            "rerun it with the same settings or use another --out")
    except UserError as e:
        print(f"tune.py: error: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    study = open_study(out, journal)
    study.set_user_attr("config", cfg)
    if not opts.slurm_worker:
        study.set_user_attr("command", shlex.join(["benchmark/tune.py", *argv]))
        for values in enqueued:
            study.enqueue_trial(values, skip_if_exists=True)
    fail_lost_trials(study, journal)
    used = len(study.get_trials(deepcopy=False, states=COUNTED))
    remaining, runs = opts.n_trials - used, len(cfg["env_ids"]) * cfg["seeds"]
    if remaining <= 0 and not opts.slurm_worker:
        print(f"the study in {out} has {used} trials (--n-trials {opts.n_trials}); nothing to run")
        write_outputs(out, study, cfg, plots=True)
        return summary(out, study)
    workers = min(opts.workers, max(remaining, 1))
    if opts.slurm and not opts.slurm_worker:
        logs = out / "slurm" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        worker = shlex.join([sys.executable, os.path.abspath(__file__), *ours, "--slurm-worker", "--", *fixed])
        result = subprocess.run(["sbatch", "--parsable", "--job-name=rpo-tune", f"--array=0-{workers - 1}",
                                 "--ntasks=1", f"--cpus-per-task={runs}", f"--output={logs}/%A_%a.out",
                                 *[f"--{k}={getattr(opts, k)}" for k in ("partition", "time", "account")
                                   if getattr(opts, k)], "--wrap", f"exec {worker}"], capture_output=True, text=True)
        if result.returncode != 0:
            print(f"tune.py: error: sbatch failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}", file=sys.stderr)
            return 2
        job = result.stdout.strip().split(";")[0]
        print(f"submitted Slurm job array {job}: {workers} worker(s) for {remaining} of {opts.n_trials} trials "
              f"({used} done earlier), {runs} CPU(s) each; logs: {logs}/{job}_<task>.out; rerun to see the result")
        return 0
    print(f"running {remaining} of {opts.n_trials} trials ({used} done earlier), {workers} worker(s), "
          f"{runs} trainer run(s) per trial, in {out}", flush=True)
    status = run_workers(study, cfg, opts, 1 if opts.slurm_worker else workers)
    return status or (0 if opts.slurm_worker else summary(out, study))


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
