#!/usr/bin/env python3
"""Choose rpo_alpha (and any other trainer flag) with Optuna, locally or as Slurm workers.

  benchmark/tune.py --env-ids "Pendulum-v1 dm_control/pendulum-swingup-v0" --seeds 3 --n-trials 30 \\
      [--workers K | --slurm [--partition P] [--time T] [--account A]] --out DIR \\
      [--param learning-rate=1e-4:1e-3:log ...] [--target ENV=low:high ...] \\
      -- [fixed trainer flags, e.g. --total-timesteps 300000]

Search space: --rpo-alpha log-uniform in [0.001, 1] unless the trainer flags fix --rpo-alpha
or a --param names it. --param FLAG=LOW:HIGH[:log] searches a range: integer flags
(num-minibatches) get integers, float flags floats, ":log" samples the logarithm.
--param FLAG=A,B,C picks among values (num-minibatches=16,32,64; anneal-lr=true,false;
rpo-alpha=0,0.01,0.5, which is how PPO's 0 can be a candidate).

A trial runs the trainer once per (env, seed), seeds 1..--seeds, all of them at once, each
single-threaded in DIR/trials/<number>/<env>__seed<S>/ (train.log and runs/ there). A run's
score is the mean of its last 10 training episodes' returns (report.py's "final return"),
normalized per env to (score - low) / (high - low): --target ENV=low:high, else 0..1000 for
dm_control, else the lowest..highest mean for that env in benchmark/published.csv (PPO's and
RPO's at 8M steps: 0 is the worse published method, 1 the better); with a single env and no
range the raw return is used. The trial's value is the IQM (--aggregate
iqm: the mean of the middle half; with fewer than 4 runs that is the mean) or the mean of
all its runs' normalized scores. Optuna's TPE sampler maximizes it (random for the first
--startup-trials); --enqueue FLAG=V[,FLAG=V] has a trial with these values run first (e.g. the
published rpo-alpha=0.5 and rpo-alpha=0.01).

Pruning: while the runs train, the same value computed from each run's last 10 episodes so
far is reported at fixed steps (every --report-every steps, default 1/20 of the run); a
median pruner stops a trial whose best value so far is below the median of the completed
trials at that step, from --prune-startup (5) completed trials on and after --prune-warmup
steps (default half a run: early returns say little about where a run ends).
A stopped trial's trainers get SIGTERM and are waited for.

Storage: the study lives in DIR. Locally it is SQLite (DIR/study.db), --workers K runs K
worker processes that share it (K trials at a time, so K x envs x seeds trainers at once).
--slurm submits a job array of K workers (default 1), one task each with one CPU per run of
a trial, sharing Optuna's journal file DIR/study.journal. Workers claim trials under a file
lock, so the study ends with exactly --n-trials trials. Rerunning the same command continues
the study up to --n-trials trials in all (a larger --n-trials adds trials); trials stopped by
Ctrl-C, SIGTERM, a time limit or a dead worker are marked FAIL, do not count, and are run
again. After each trial DIR/trials.csv and DIR/trials.md are rewritten; the plots
DIR/*.png are made when a worker ends (and by a rerun with nothing left to do).

Environment: PYTHON (default: this Python) runs TRAINER (default
benchmark/../rpo_continuous_action.py). With --slurm, sbatch's own input variables work.
"""

import argparse
import contextlib
import csv
import ctypes
import fcntl
import io
import json
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PUBLISHED = HERE / "published.csv"
STUDY = "rpo-tune"
CONFIG = "tune.json"
LAST_EPISODES = 10  # a run's score: the mean of its last 10 training episodes, as report.py's final return
HEARTBEAT = 10  # seconds between a running trial's heartbeats
STALE = 180  # a RUNNING trial without a heartbeat for this long lost its worker
EPISODE = re.compile(r"global_step=(\d+), episodic_return=(\S+)")
# Flags the tuner sets, or that make no sense to search.
NOT_SEARCHABLE = {"env_id", "seed", "exp_name", "torch_threads", "cuda", "torch_deterministic", "track",
                  "wandb_project_name", "wandb_entity", "capture_video", "save_model", "checkpoint_interval",
                  "eval_episodes", "eval_checkpoint", "resume", "batch_size", "minibatch_size", "num_iterations",
                  "total_timesteps"}
NOT_FIXED = {"env_id": "use --env-ids", "seed": "use --seeds", "resume": "a tuning run starts from scratch",
             "eval_checkpoint": "a tuning run trains"}
RUNTIME = {"batch_size", "minibatch_size", "num_iterations"}


class UserError(Exception):
    """Bad input: one line on stderr, exit 2."""


class Interrupted(Exception):
    """The worker was signalled (signum), or a trainer was stopped by someone else's signal (signum 0)."""

    def __init__(self, signum, why):
        super().__init__(why)
        self.signum = signum


def die(message):
    print(f"tune.py: error: {message}", file=sys.stderr)
    sys.exit(2)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        die(message)


def flag(name):
    return "--" + name.replace("_", "-")


def slug(env_id):
    return env_id.replace("/", "-")


# ------------------------------------------------------------------------------------ the trainer's Args
def trainer_module():
    sys.path.insert(0, str(ROOT))
    import rpo_continuous_action

    return rpo_continuous_action


def arg_types(module):
    """{field: (base type, optional)} of the trainer's Args."""
    hints = typing.get_type_hints(module.Args)
    types = {}
    for f in fields(module.Args):
        t, optional = hints[f.name], False
        if typing.get_origin(t) is typing.Union:
            inner = [a for a in typing.get_args(t) if a is not type(None)]
            t, optional = inner[0], True
        types[f.name] = (t, optional)
    return types


def field_name(text, types):
    name = text.strip().lstrip("-").replace("-", "_")
    if name not in types or name in RUNTIME:
        raise UserError(f"the trainer has no flag {flag(name)}")
    return name


def convert(text, name, types):
    t, optional = types[name]
    text = text.strip()
    if optional and text.lower() == "none":
        return None
    try:
        if t is bool:
            low = text.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if t is int:
            return int(text)
        if t is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        return text
    except ValueError:
        raise UserError(f"{flag(name)} takes {'true/false' if t is bool else t.__name__} values, got '{text}'") from None


def parse_param(spec, types):
    """--param FLAG=LOW:HIGH[:log] or FLAG=A,B,C -> a dict that Optuna's distributions are built from."""
    if "=" not in spec:
        raise UserError(f"--param '{spec}': expected FLAG=LOW:HIGH[:log] or FLAG=A,B,C")
    name_text, rng = spec.split("=", 1)
    name = field_name(name_text, types)
    if name in NOT_SEARCHABLE:
        raise UserError(f"--param {flag(name)}: this flag cannot be searched")
    t, _ = types[name]
    if "," in rng:
        choices = [convert(c, name, types) for c in rng.split(",")]
        if len(set(choices)) < 2 or len(set(choices)) != len(choices):
            raise UserError(f"--param {spec}: give two or more distinct values")
        return {"name": name, "kind": "categorical", "choices": choices}
    parts = rng.split(":")
    log = len(parts) == 3 and parts[2] == "log"
    if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
        raise UserError(f"--param {spec}: expected FLAG=LOW:HIGH[:log] or FLAG=A,B,C")
    if t not in (int, float):
        raise UserError(f"--param {spec}: {flag(name)} is not a number; list its values (FLAG=A,B)")
    low, high = (convert(p, name, types) for p in parts[:2])
    if low is None or high is None:
        raise UserError(f"--param {spec}: a range needs numbers")
    if not low < high:
        raise UserError(f"--param {spec}: empty range (LOW must be below HIGH)")
    if log and low <= 0:
        raise UserError(f"--param {spec}: a log range needs LOW > 0")
    return {"name": name, "kind": t.__name__, "low": low, "high": high, "log": log}


def distributions(params):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for p in params:
        if p["kind"] == "categorical":
            out[p["name"]] = CategoricalDistribution(p["choices"])
        elif p["kind"] == "int":
            out[p["name"]] = IntDistribution(p["low"], p["high"], log=p["log"])
        else:
            out[p["name"]] = FloatDistribution(p["low"], p["high"], log=p["log"])
    return out


def param_flags(values, types):
    argv = []
    for name, value in values.items():
        if types.get(name, (None,))[0] is bool:
            argv.append(flag(name) if value else "--no-" + name.replace("_", "-"))
        else:
            argv += [flag(name), repr(value) if isinstance(value, float) else str(value)]
    return argv


def check_trainer_flags(module, types, fixed, params, env_id):
    """Refuses unknown or tuner-owned flags, then lets the trainer's own parser check the values."""
    searched = {p["name"] for p in params}
    for token in fixed:
        if not token.startswith("--"):
            continue
        text = token[2:].split("=", 1)[0].replace("-", "_")
        name = text[3:] if text.startswith("no_") and text[3:] in types and types[text[3:]][0] is bool else text
        if name not in types or name in RUNTIME:
            raise UserError(f"unknown trainer flag {token.split('=', 1)[0]} (see rpo_continuous_action.py --help)")
        if name in NOT_FIXED:
            raise UserError(f"trainer flag {flag(name)} is set by the tuner: {NOT_FIXED[name]}")
        if name in searched:
            raise UserError(f"{flag(name)} is searched (--param); remove it from the trainer flags")
    # The extremes of the search space, with the fixed flags: what the trainer would say to them.
    combos = [{p["name"]: p["low"] if p["kind"] != "categorical" else p["choices"][0] for p in params},
              {p["name"]: p["high"] if p["kind"] != "categorical" else p["choices"][-1] for p in params}]
    for p in params:
        for choice in p.get("choices", [])[1:-1]:
            combos.append({**combos[0], p["name"]: choice})
    parsed = None
    for values in combos:
        argv = ["--env-id", env_id, "--seed", "1", *param_flags(values, types), *fixed]
        buf = io.StringIO()
        try:
            with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
                args, _ = module.parse_args(argv)
        except getattr(module, "UserError", ValueError) as e:
            raise UserError(f"the trainer refuses {shlex.join(argv[4:])}: {e}") from None
        except SystemExit:
            lines = [ln.strip(" |") for ln in buf.getvalue().splitlines()]
            lines = [ln for ln in lines if ln and not set(ln) <= set("-─│╭╮╰╯ ")]
            detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "bad value")
            raise UserError(f"the trainer refuses {shlex.join(argv[4:])}: {detail}") from None
        parsed = parsed or args
    return parsed


def check_env_id(env_id):
    """Unknown ids, missing extras and discrete actions, as the trainer would refuse them."""
    import gymnasium as gym

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. GLFW's "no DISPLAY" when dm_control is imported
        if env_id.startswith("dm_control/"):
            try:
                import shimmy
            except ImportError:
                raise UserError(f"{env_id} needs dm_control: pip install -e '.[dm-control]'") from None
            gym.register_envs(shimmy)
        try:
            env = gym.make(env_id)
        except gym.error.Error as e:
            raise UserError(f"cannot make environment {env_id!r}: {(str(e).splitlines() or [''])[0]}") from None
        space = env.action_space
        env.close()
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise UserError(f"{env_id} has actions {space}; RPO needs a vector of continuous actions")


# ------------------------------------------------------------------------------------ normalization
def published_ranges():
    """{env_id: (worse, better)} of the published means, if benchmark/published.csv exists."""
    means = {}
    try:
        with open(PUBLISHED, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    means.setdefault(row["env_id"].strip(), []).append(float(row["mean"]))
                except (KeyError, TypeError, ValueError):
                    continue
    except OSError:
        return {}
    return {env: (min(v), max(v)) for env, v in means.items() if len(v) >= 2 and min(v) < max(v)}


def targets(env_ids, overrides):
    published = published_ranges()
    out = {}
    for env in env_ids:
        if env in overrides:
            out[env] = [*overrides[env], "--target"]
        elif env.startswith("dm_control/"):
            out[env] = [0.0, 1000.0, "dm_control's 0..1000"]
        elif env in published:
            out[env] = [*published[env], "lowest..highest mean in published.csv"]
        elif len(env_ids) == 1:
            out[env] = [None, None, "raw return (no range)"]
        else:
            raise UserError(f"no score range for {env} to put it on the others' scale: give --target {env}=LOW:HIGH")
    return out


def normalized(score, target):
    low, high = target[:2]
    return score if low is None else (score - low) / (high - low)


def aggregate(scores, how):
    scores = sorted(scores)
    if how == "mean" or len(scores) < 4:
        return sum(scores) / len(scores)
    # IQM: the mean of the middle half (scipy.stats.trim_mean(x, 0.25), without fractions of a run)
    k = len(scores) // 4
    middle = scores[k:len(scores) - k]
    return sum(middle) / len(middle)


# ------------------------------------------------------------------------------------ study and storage
def open_study(out, cfg):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if cfg["storage"] == "sqlite":
        storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'study.db'}",
                                             engine_kwargs={"connect_args": {"timeout": 120}})
    else:
        try:
            from optuna.storages.journal import JournalFileBackend
        except ImportError:  # optuna < 4
            from optuna.storages import JournalFileStorage as JournalFileBackend
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(out / "study.journal")))
    sampler = optuna.samplers.TPESampler(n_startup_trials=cfg["startup_trials"], constant_liar=True)
    if cfg["prune"]:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=cfg["prune_startup"],
                                             n_warmup_steps=cfg["prune_warmup"])
    else:
        pruner = optuna.pruners.NopPruner()
    return optuna.create_study(study_name=STUDY, storage=storage, sampler=sampler, pruner=pruner,
                               direction="maximize", load_if_exists=True)


@contextlib.contextmanager
def locked(out, name="claim.lock"):
    """One worker at a time (flock: released when its holder dies; works on Linux NFS)."""
    with open(out / name, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def counts(t):
    """A trial counts towards --n-trials unless it was interrupted (those are run again)."""
    from optuna.trial import TrialState

    if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return True
    return t.state == TrialState.FAIL and not t.user_attrs.get("interrupted")


def fail_stale_trials(study, out):
    """RUNNING trials whose worker stopped sending heartbeats (killed, node lost) become interrupted FAILs."""
    from optuna.trial import TrialState

    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = out / "trials" / str(t.number) / "heartbeat"
        last = beat.stat().st_mtime if beat.exists() else (t.datetime_start.timestamp() if t.datetime_start else now)
        if now - last > STALE:
            study._storage.set_trial_user_attr(t._trial_id, "interrupted", f"no heartbeat for {now - last:.0f} s")
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            print(f"trial {t.number} lost its worker (no heartbeat for {now - last:.0f} s): marked FAIL, "
                  "it will be run again", flush=True)


def atomic_write(path, text):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------ running a trial
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no orphan if the worker is killed


class Run:
    def __init__(self, env_id, seed, rdir, cmd):
        self.env_id, self.seed, self.dir = env_id, seed, rdir
        self.returns = []  # (global_step, episodic_return)
        self.last_line = ""
        rdir.mkdir(parents=True)
        self.log = open(rdir / "train.log", "a", buffering=1)
        self.log.write(f"=== {time.strftime('%F %T')} {shlex.join(cmd)}\n")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(cmd, cwd=rdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.log.write(line)
            m = EPISODE.search(line)
            if m:
                self.returns.append((int(m[1]), float(m[2])))
            elif line.strip():
                self.last_line = line.strip()

    @property
    def last_step(self):
        return self.returns[-1][0] if self.returns else -1

    def score(self, upto=None):
        rets = [r for s, r in self.returns if upto is None or s <= upto]
        return sum(rets[-LAST_EPISODES:]) / len(rets[-LAST_EPISODES:]) if rets else None

    def finish(self):
        """Waits for the trainer (SIGTERM first if it is still running, SIGKILL after 30 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(10)
        self.log.write(f"=== {time.strftime('%F %T')} trainer exited with status {self.proc.returncode}\n")
        self.log.close()


def run_trial(trial, cfg, out, types, stop):
    """Trains every (env, seed) of a trial; returns (state name, value, runs). Raises Interrupted."""
    tdir = out / "trials" / str(trial.number)
    if tdir.exists():  # a study started over in the same DIR
        shutil.rmtree(tdir)
    tdir.mkdir(parents=True)
    (tdir / "heartbeat").touch()
    beat = time.monotonic()
    flags = param_flags(trial.params, types)
    runs = []
    try:
        for env_id in cfg["env_ids"]:
            for seed in range(1, cfg["seeds"] + 1):
                cmd = [cfg["python"], cfg["trainer"], "--env-id", env_id, "--seed", str(seed), "--torch-threads",
                       "1", *flags, *cfg["trainer_args"]]
                runs.append(Run(env_id, seed, tdir / f"{slug(env_id)}__seed{seed}", cmd))

        def value(upto=None):
            scores = [r.score(upto) for r in runs]
            if any(s is None for s in scores):
                return None
            return aggregate([normalized(s, cfg["targets"][r.env_id]) for s, r in zip(scores, runs)],
                             cfg["aggregate"])

        every, total = cfg["report_every"], cfg["total_timesteps"]
        milestone = every
        while True:
            if stop["signum"]:
                raise Interrupted(stop["signum"], f"interrupted by {signal.Signals(stop['signum']).name}")
            if time.monotonic() - beat > HEARTBEAT:
                (tdir / "heartbeat").touch()
                beat = time.monotonic()
            codes = [r.proc.poll() for r in runs]
            for r, code in zip(runs, codes):
                if code in (130, 143):  # the trainer's answer to SIGINT/SIGTERM that it got from elsewhere
                    time.sleep(1)  # (a time limit or scancel signals this worker too: let its handler run first)
                    if stop["signum"]:
                        raise Interrupted(stop["signum"], f"interrupted by {signal.Signals(stop['signum']).name}")
                    raise Interrupted(0, f"its trainer {r.env_id} seed {r.seed} was stopped by a signal "
                                         f"(exit {code})")
                if code not in (None, 0):
                    r.reader.join(5)
                    trial.set_user_attr("error", f"{r.env_id} seed {r.seed}: exit {code}: {r.last_line}"[:500])
                    return "FAIL", None, runs
            # intermediate values, once every run is past the milestone
            while milestone < total and all(c == 0 or r.last_step > milestone for r, c in zip(runs, codes)):
                v = value(milestone)
                if v is not None and math.isfinite(v):
                    trial.report(v, milestone)
                    if trial.should_prune():
                        trial.set_user_attr("pruned_at_step", milestone)
                        return "PRUNED", v, runs
                milestone += every
            if all(c == 0 for c in codes):
                for r in runs:
                    r.reader.join(10)
                v = value()
                if v is None:
                    empty = [f"{r.env_id} seed {r.seed}" for r in runs if r.score() is None]
                    trial.set_user_attr("error", f"no finished episode in {', '.join(empty)}; raise --total-timesteps")
                    return "FAIL", None, runs
                return "COMPLETE", v, runs
            time.sleep(0.2)
    finally:
        for r in runs:
            r.finish()


def describe(values):
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def worker(out):
    """Claims trials one at a time until the study has --n-trials; returns an exit status."""
    from optuna.trial import TrialState

    cfg = json.loads((out / CONFIG).read_text())
    module_types = {k: (bool if v == "bool" else None, False) for k, v in cfg["types"].items()}
    study = open_study(out, cfg)
    dists = distributions(cfg["params"])
    stop = {"signum": 0}

    def on_signal(signum, frame):
        stop["signum"] = stop["signum"] or signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    who = f"{socket.gethostname()}:{os.getpid()}"
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        who += f" (Slurm {os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')})"
    status = 0
    try:
        while not stop["signum"]:
            with locked(out):
                fail_stale_trials(study, out)
                if sum(counts(t) for t in study.get_trials(deepcopy=False)) >= cfg["n_trials"]:
                    break
                trial = study.ask(dists)
                trial.set_user_attr("worker", who)
                (out / "trials" / str(trial.number)).mkdir(parents=True, exist_ok=True)
                (out / "trials" / str(trial.number) / "heartbeat").touch()
            started = time.monotonic()
            print(f"trial {trial.number} started: {describe(trial.params)} "
                  f"({len(cfg['env_ids']) * cfg['seeds']} runs)", flush=True)
            try:
                state, value, runs = run_trial(trial, cfg, out, module_types, stop)
            except Interrupted as e:
                trial.set_user_attr("interrupted", str(e))
                study.tell(trial, state=TrialState.FAIL)
                print(f"trial {trial.number} {e}: marked FAIL, it will be run again", flush=True)
                if e.signum:
                    status = 128 + e.signum
                    break
                continue
            except BaseException as e:  # a bug or a broken setup (no python at PYTHON, ...): not left RUNNING
                trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:500])
                study.tell(trial, state=TrialState.FAIL)
                raise
            secs = time.monotonic() - started
            per_env = {}
            for r in runs:
                if r.score() is not None:
                    per_env.setdefault(r.env_id, []).append(r.score())
            for env_id, scores in per_env.items():
                trial.set_user_attr(f"return:{env_id}", sum(scores) / len(scores))
            trial.set_user_attr("seconds", round(secs, 1))
            if state == "COMPLETE":
                frozen = study.tell(trial, value)
            elif state == "PRUNED":
                frozen = study.tell(trial, state=TrialState.PRUNED)
            else:
                frozen = study.tell(trial, state=TrialState.FAIL)
            with locked(out):
                trials = study.get_trials(deepcopy=False)
                finished = sum(counts(t) and t.state != TrialState.RUNNING for t in trials)
                write_tables(out, cfg, study, trials)
            print(progress_line(frozen, finished, cfg, study, secs), flush=True)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    with locked(out, "report.lock"):
        write_plots(out, cfg, open_study(out, cfg))
    return status


def progress_line(t, finished, cfg, study, secs):
    state = t.state.name
    value = f" value={t.value:.4g}" if t.value is not None else ""
    at = f" at step {t.user_attrs['pruned_at_step']}" if state == "PRUNED" else ""
    returns = ", ".join(f"{env} {t.user_attrs[f'return:{env}']:.1f}" for env in cfg["env_ids"]
                        if f"return:{env}" in t.user_attrs)
    line = f"[{finished}/{cfg['n_trials']}] trial {t.number} {state}{at}{value} {describe(t.params)}"
    if returns:
        line += f" | final return {returns}"
    if state == "FAIL":
        line += f" | {t.user_attrs.get('error', '')}"
    line += f" | {secs:.0f} s"
    best = best_trial(study)
    if best is not None:
        line += f" | best: trial {best.number} ({best.value:.4g})"
    return line


def best_trial(study):
    try:
        return study.best_trial
    except ValueError:
        return None


# ------------------------------------------------------------------------------------ outputs
def table(cfg, trials):
    names = [p["name"] for p in cfg["params"]]
    header = ["number", "state", "value", *names, *[f"return:{e}" for e in cfg["env_ids"]], "pruned_at_step",
              "seconds", "worker"]
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        row = {"number": t.number, "state": t.state.name, "value": "" if t.value is None else t.value}
        row.update({n: t.params.get(n, "") for n in names})
        row.update({f"return:{e}": t.user_attrs.get(f"return:{e}", "") for e in cfg["env_ids"]})
        row.update(pruned_at_step=t.user_attrs.get("pruned_at_step", ""), seconds=t.user_attrs.get("seconds", ""),
                   worker=t.user_attrs.get("worker", ""))
        rows.append(row)
    return header, rows


def fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_tables(out, cfg, study, trials):
    header, rows = table(cfg, trials)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write(out / "trials.csv", buf.getvalue())

    types = {k: (bool if v == "bool" else None, False) for k, v in cfg["types"].items()}
    md = ["# Tuning study", "", f"- command: `{cfg.get('command', '')}`"]
    md.append(f"- envs: {', '.join(cfg['env_ids'])}; seeds 1..{cfg['seeds']} per trial; "
              f"trainer flags: `{shlex.join(cfg['trainer_args']) or '(defaults)'}`")
    md.append("- search space: " + "; ".join(
        f"{p['name']} in {p['choices']}" if p["kind"] == "categorical" else
        f"{p['name']} {p['kind']} in [{p['low']:g}, {p['high']:g}]{' (log)' if p['log'] else ''}"
        for p in cfg["params"]))
    md.append(f"- value: {cfg['aggregate'].upper() if cfg['aggregate'] == 'iqm' else 'mean'} over runs of the "
              f"normalized final return (mean of a run's last {LAST_EPISODES} training episodes), "
              "(return - low) / (high - low): " + "; ".join(
                  f"{e} {t[2]}" if t[0] is None else f"{e} {t[0]:g}..{t[1]:g} ({t[2]})"
                  for e, t in cfg["targets"].items()))
    states = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    md.append(f"- {len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) +
              " (a PRUNED trial's value and returns are those when it was stopped; interrupted FAIL trials "
              "do not count)")
    best = best_trial(study) if states.get("COMPLETE") else None
    if best is not None:
        md.append(f"- **best: trial {best.number}, value {best.value:.4g}: "
                  f"`{shlex.join(param_flags(best.params, types))}`**")
    md += ["", "| " + " | ".join(header[:-1]) + " |", "|" + "---|" * (len(header) - 1)]
    for row in rows:
        md.append("| " + " | ".join(fmt(row[h]) for h in header[:-1]) + " |")
    md.append("")
    pngs = [p for p in ("optimization_history.png", "intermediate_values.png", "slice.png",
                        "param_importances.png")]
    md += [f"![{p[:-4]}]({p})" for p in pngs if (out / p).exists()]
    atomic_write(out / "trials.md", "\n".join(md) + "\n")


def write_plots(out, cfg, study):
    """Optuna's matplotlib plots; a plot that cannot be made yet is skipped with a note."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = [p["name"] for p in cfg["params"]]
    plots = {
        "optimization_history.png": (lambda: vis.plot_optimization_history(study), len(complete) >= 1,
                                     "no completed trial yet"),
        "intermediate_values.png": (lambda: vis.plot_intermediate_values(study),
                                    any(t.intermediate_values for t in study.get_trials(deepcopy=False)),
                                    "no intermediate values reported yet"),
        "slice.png": (lambda: vis.plot_slice(study, params=names), len(complete) >= 1, "no completed trial yet"),
        "param_importances.png": (lambda: vis.plot_param_importances(study),
                                  len(names) >= 2 and len(complete) >= 2,
                                  "needs two or more searched flags and two completed trials"),
    }
    for name, (make, possible, why) in plots.items():
        path = out / name
        if not possible:
            path.unlink(missing_ok=True)
            print(f"no {name}: {why}", flush=True)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = make()
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                tmp = path.with_name(f".{path.stem}.{os.getpid()}.png")
                fig.savefig(tmp, dpi=100, bbox_inches="tight")
                os.replace(tmp, path)
        except Exception as e:  # e.g. importance when every trial had the same values
            path.unlink(missing_ok=True)
            print(f"no {name}: {type(e).__name__}: {e}".splitlines()[0], flush=True)
        finally:
            plt.close("all")
    with locked(out):
        write_tables(out, cfg, study, study.get_trials(deepcopy=False))


# ------------------------------------------------------------------------------------ command line
def parse(argv):
    if "--" in argv:
        i = argv.index("--")
        argv, trainer_args = argv[:i], argv[i + 1:]
    else:
        trainer_args = []
    p = Parser(prog="tune.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-ids", help="space-separated env ids; every trial runs each of them")
    p.add_argument("--seeds", type=int, default=1, help="seeds 1..S per env and trial (default 1)")
    p.add_argument("--n-trials", type=int, default=20, help="trials in the study in all (default 20)")
    p.add_argument("--workers", type=int, help="workers sharing the study: trials run at once (default 1)")
    p.add_argument("--out", required=True, help="the study's directory")
    p.add_argument("--param", action="append", default=[], metavar="FLAG=LOW:HIGH[:log]|FLAG=A,B,C",
                   help="a trainer flag to search (repeatable); default rpo-alpha=0.001:1:log")
    p.add_argument("--target", action="append", default=[], metavar="ENV=LOW:HIGH",
                   help="the returns that normalize to 0 and 1 for ENV")
    p.add_argument("--aggregate", choices=("iqm", "mean"), default="iqm",
                   help="how a trial's normalized run scores become its value (default iqm)")
    p.add_argument("--enqueue", action="append", default=[], metavar="FLAG=V[,FLAG=V]",
                   help="a trial to run first with these values (repeatable), e.g. rpo-alpha=0.5")
    p.add_argument("--startup-trials", type=int, default=5, help="random trials before TPE (default 5)")
    p.add_argument("--prune-startup", type=int, default=5,
                   help="completed trials before pruning starts (default 5)")
    p.add_argument("--prune-warmup", type=int, help="steps before a trial can be pruned (default half a run)")
    p.add_argument("--report-every", type=int, help="steps between intermediate values (default 1/20 of a run)")
    p.add_argument("--no-prune", action="store_true", help="run every trial to the end")
    p.add_argument("--slurm", action="store_true", help="submit the workers as a Slurm job array")
    p.add_argument("--partition")
    p.add_argument("--time")
    p.add_argument("--account")
    return p.parse_args(argv), trainer_args


def configure(opts, trainer_args):
    """Everything checked before anything is written: a dict that the workers read from DIR/tune.json."""
    env_ids = (opts.env_ids or "").split()
    if not env_ids:
        raise UserError('no env ids given (--env-ids "Pendulum-v1 Hopper-v4")')
    if len(set(env_ids)) != len(env_ids):
        raise UserError("--env-ids lists an env twice")
    for name in ("seeds", "n_trials", "workers", "report_every"):
        v = getattr(opts, name)
        if v is not None and v < 1:
            raise UserError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v}")
    for name in ("startup_trials", "prune_startup", "prune_warmup"):
        v = getattr(opts, name)
        if v is not None and v < 0:
            raise UserError(f"--{name.replace('_', '-')} must be an integer >= 0, got {v}")
    if opts.slurm:
        if not shutil.which("sbatch"):
            raise UserError("--slurm given but sbatch is not on PATH")
    elif opts.partition or opts.time or opts.account:
        raise UserError("--partition, --time and --account only make sense with --slurm")

    module = trainer_module()
    types = arg_types(module)
    params = []
    for spec in opts.param:
        p = parse_param(spec, types)
        if any(q["name"] == p["name"] for q in params):
            raise UserError(f"--param {flag(p['name'])} is given twice")
        params.append(p)
    fixed_alpha = any(t.split("=")[0] == "--rpo-alpha" for t in trainer_args)
    if not any(p["name"] == "rpo_alpha" for p in params) and not fixed_alpha:
        params.insert(0, {"name": "rpo_alpha", "kind": "float", "low": 0.001, "high": 1.0, "log": True})
    if not params:
        raise UserError("nothing to search: --rpo-alpha is fixed and no --param is given")
    for p in params:
        if p["name"] == "rpo_alpha" and (p.get("low", 0) < 0 or any(c is None or c < 0 for c in p.get("choices", []))):
            raise UserError("--param rpo-alpha: alpha must be >= 0 (0 is PPO)")

    overrides = {}
    for spec in opts.target:
        m = re.fullmatch(r"(.+?)=([^:]+):([^:]+)", spec)
        try:
            env, low, high = m[1], float(m[2]), float(m[3])
        except (TypeError, ValueError):
            raise UserError(f"--target '{spec}': expected ENV=LOW:HIGH") from None
        if env not in env_ids:
            raise UserError(f"--target {env}: not one of --env-ids")
        if not low < high:
            raise UserError(f"--target '{spec}': empty range (LOW must be below HIGH)")
        overrides[env] = (low, high)

    by_name = {p["name"]: p for p in params}
    enqueued = []
    for spec in opts.enqueue:
        values = {}
        for item in spec.split(","):
            name_text, _, text = item.partition("=")
            name = field_name(name_text, types)
            if name not in by_name:
                raise UserError(f"--enqueue {spec}: {flag(name)} is not searched")
            v = convert(text, name, types)
            p = by_name[name]
            if p["kind"] == "categorical" and v not in p["choices"] or \
                    p["kind"] != "categorical" and not p["low"] <= v <= p["high"]:
                raise UserError(f"--enqueue {spec}: {v} is outside the search space of {flag(name)}")
            values[name] = v
        enqueued.append(values)

    for env in env_ids:
        check_env_id(env)
    args = check_trainer_flags(module, types, trainer_args, params, env_ids[0])
    total = args.total_timesteps
    every = opts.report_every or max(total // 20, args.batch_size)
    cfg = {
        # what makes the study: a rerun must give the same
        "env_ids": env_ids, "seeds": opts.seeds, "params": params, "trainer_args": trainer_args,
        "targets": targets(env_ids, overrides), "aggregate": opts.aggregate,
        # what a rerun may change
        "n_trials": opts.n_trials, "startup_trials": opts.startup_trials, "prune": not opts.no_prune,
        "prune_startup": opts.prune_startup,
        "prune_warmup": total // 2 if opts.prune_warmup is None else opts.prune_warmup,
        "report_every": every, "total_timesteps": total,
        "python": os.path.abspath(os.environ["PYTHON"]) if os.environ.get("PYTHON") and "/" in os.environ["PYTHON"]
        else os.environ.get("PYTHON") or sys.executable,
        "trainer": os.path.abspath(os.environ.get("TRAINER") or ROOT / "rpo_continuous_action.py"),
        "types": {p["name"]: types[p["name"]][0].__name__ for p in params},
    }
    if not os.path.isfile(cfg["trainer"]):
        raise UserError(f"trainer not found: {cfg['trainer']}")
    if not shutil.which(cfg["python"]):
        raise UserError(f"PYTHON {cfg['python']} is not an executable")
    return cfg, enqueued


IDENTITY = ("env_ids", "seeds", "params", "trainer_args", "targets", "aggregate")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:  # internal: one worker (a local process or a Slurm array task)
        return worker(Path(argv[1]))
    opts, trainer_args = parse(argv)
    try:
        cfg, enqueued = configure(opts, trainer_args)
        out = Path(opts.out).resolve()
        old = json.loads((out / CONFIG).read_text()) if (out / CONFIG).exists() else None
        if old is not None:
            def same(k):  # the targets' numbers, not their description
                a, b = old.get(k), cfg[k]
                if k == "targets" and isinstance(a, dict):
                    a, b = {e: t[:2] for e, t in a.items()}, {e: t[:2] for e, t in b.items()}
                return json.dumps(a) == json.dumps(b)

            changed = [k for k in IDENTITY if not same(k)]
            if changed:
                raise UserError(f"{out} holds a study with other {', '.join(changed)}; "
                                "rerun it with the same settings or use another --out")
        storage = "sqlite" if (out / "study.db").exists() else "journal" if (out / "study.journal").exists() \
            else ("journal" if opts.slurm else "sqlite")
        if opts.slurm and storage == "sqlite":
            raise UserError(f"{out} holds a local SQLite study, which Slurm workers cannot share; "
                            "continue it without --slurm or use another --out")
    except UserError as e:
        die(e)
    cfg["storage"] = storage
    cfg["command"] = shlex.join(["benchmark/tune.py", *argv])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / CONFIG, json.dumps(cfg, indent=1) + "\n")
    study = open_study(out, cfg)
    for values in enqueued:
        study.enqueue_trial(values, skip_if_exists=True)
    with locked(out):
        fail_stale_trials(study, out)
        used = sum(counts(t) for t in study.get_trials(deepcopy=False))
    remaining = cfg["n_trials"] - used
    workers = min(opts.workers or 1, max(remaining, 1))

    if remaining <= 0:
        print(f"the study in {out} has {used} trials (--n-trials {cfg['n_trials']}); nothing to run")
        with locked(out, "report.lock"):
            write_plots(out, cfg, study)
        return summary(out, cfg, study)

    if opts.slurm:
        return submit(out, cfg, opts, workers, remaining, used)

    print(f"running {remaining} of {cfg['n_trials']} trials ({used} done earlier), {workers} worker(s), "
          f"{len(cfg['env_ids']) * cfg['seeds']} trainer run(s) per trial, in {out}", flush=True)
    if workers == 1:
        status = worker(out)
    else:
        status = run_local_workers(out, workers)
    if status:
        print("tune.py: interrupted; rerun the same command to continue the study", file=sys.stderr)
        return status
    return summary(out, cfg, open_study(out, cfg))


def run_local_workers(out, n):
    """n worker processes sharing the study; SIGINT/SIGTERM are passed on and waited for."""
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", str(out)],
                              start_new_session=True, preexec_fn=_die_with_parent) for _ in range(n)]
    got = {"signum": 0}

    def forward(signum, frame):
        got["signum"] = got["signum"] or signum
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if got["signum"]:
        return 128 + got["signum"]
    return next((c for c in codes if c), 0)


def submit(out, cfg, opts, workers, remaining, used):
    job_dir = out / "slurm"
    (job_dir / "logs").mkdir(parents=True, exist_ok=True)
    script = job_dir / f"tune-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.sh"
    script.write_text("#!/usr/bin/env bash\n# Generated by benchmark/tune.py: one study worker per array task.\n"
                      f"exec {shlex.quote(sys.executable)} {shlex.quote(os.path.abspath(__file__))} "
                      f"--worker {shlex.quote(str(out))}\n")
    script.chmod(0o755)
    cpus = len(cfg["env_ids"]) * cfg["seeds"]
    args = ["sbatch", "--parsable", "--job-name=rpo-tune", f"--array=0-{workers - 1}", "--ntasks=1",
            f"--cpus-per-task={cpus}", f"--output={job_dir}/logs/%A_%a.out"]
    args += [f"--{k}={v}" for k, v in (("partition", opts.partition), ("time", opts.time),
                                        ("account", opts.account)) if v]
    result = subprocess.run([*args, str(script)], capture_output=True, text=True)
    if result.returncode != 0:
        die(f"sbatch failed: {(result.stderr.strip().splitlines() or ['no message'])[-1]}")
    job_id = result.stdout.strip().split(";")[0]
    print(f"submitted Slurm job array {job_id}: {workers} worker(s) for {remaining} of {cfg['n_trials']} trials "
          f"({used} done earlier), {cpus} CPU(s) each")
    print(f"worker logs: {job_dir}/logs/{job_id}_<task>.out; table: {out}/trials.md "
          "(rerun the same command to submit more workers or, once done, to see the result)")
    return 0


def summary(out, cfg, study):
    types = {k: (bool if v == "bool" else None, False) for k, v in cfg["types"].items()}
    best = best_trial(study)
    if best is None:
        print(f"no trial completed; see {out}/trials.md", file=sys.stderr)
        return 1
    print(f"best: trial {best.number}, value {best.value:.4g}: {describe(best.params)}")
    print(f"  trainer flags: {shlex.join(param_flags(best.params, types))}")
    print(f"table: {out}/trials.md and trials.csv; plots: {out}/*.png")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # outside a trial (while starting, or drawing the plots)
        print("tune.py: interrupted", file=sys.stderr)
        sys.exit(130)
