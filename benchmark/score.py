"""A run's score, defined once: report.py prints it and tune.py maximizes it.

- A run's *final return* is the mean of `charts/episodic_return` (read from its TensorBoard
  event files) over its last LAST_EPISODES = 10 training episodes (fewer if it has fewer).
  score_at gives the same at any step: the mean of the last 10 episodes ended by then.
  score_at_budget scores a run at a budget of s steps only if it reached s: its last episode
  ended at 99% of s or later (a trainer stops at a whole number of batches, 8M steps of 2048
  are 7,999,488, and its last episode ends at or before that).
- The *normalized score* puts envs on one scale: (return - low) / (high - low), with
  [low, high] per env from score_range:
    dm_control:  [0, 1000], the bounds of its return (a reward in [0, 1] per step, 1000 steps);
    Gym/MuJoCo:  [random play, best published]: low is what uniformly random actions score
                 (RANDOM_PLAY below: the mean over episodes seeded 0..N-1, random_play() measures
                 it), high the best mean for that env in benchmark/published.csv (the reference's
                 PPO or RPO at 8M steps). 0 is random play, 1 the reference's best result; a run
                 can score below 0 or above 1.
  An env without a range (a Gym/MuJoCo env missing from RANDOM_PLAY or published.csv) has no
  normalized score: report.py leaves it out of the aggregates, tune.py refuses it.
- The *aggregate*: the IQM (interquartile mean, scipy.stats.trim_mean(x, 0.25), as rliable)
  of the normalized final returns of all runs of all envs together, with a 95% stratified
  percentile-bootstrap interval (runs resampled within each env; 10,000 resamples, fixed seed).
  A tuner trial's value is aggregate_iqm of its runs: the number report.py prints for them.
"""

import csv
import logging
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import scipy.stats

LAST_EPISODES = 10
RETURN_TAG = "charts/episodic_return"
LENGTH_TAG = "charts/episodic_length"
STD_TAG = "charts/action_std"  # the mean σ of the Gaussian policy, logged every iteration
EVAL_TAG = "eval/episodic_return"  # after training with --save-model: the mean action's return, one per episode
REACHED_PERCENT = 99  # a run reached a budget if its last episode ended at 99% of it or later
RUN_NAME = re.compile(r"^(?P<env>.+)__alpha(?P<alpha>[^_]+)__seed(?P<seed>\d+)$")  # sweep.sh's run directories
PUBLISHED = Path(__file__).with_name("published.csv")
BOOTSTRAP_SEED = 0
RESAMPLES = 10_000

# What uniformly random actions score, per Gym/MuJoCo env (gymnasium 1.4, mujoco 3.1x): random_play(env, 100);
# Pendulum-v1's -1241 is random_play(env, 500) = -1240.9, as this project has used it since its first report.
# Add an env here (and its published means to published.csv) to score it. Pusher-v4, which gymnasium 1.x makes
# only with mujoco < 3, was measured in the mujoco-published venv (mujoco 2.3.7).
RANDOM_PLAY = {
    "Pendulum-v1": -1241.0, "BipedalWalker-v3": -102.8,
    "Ant-v4": -66.4, "HalfCheetah-v4": -274.9, "Hopper-v4": 17.7, "Humanoid-v4": 120.9, "HumanoidStandup-v4": 33375.6,
    "InvertedDoublePendulum-v4": 59.1, "InvertedPendulum-v4": 6.2, "Pusher-v4": -149.2, "Reacher-v4": -43.4,
    "Swimmer-v4": 0.8, "Walker2d-v4": 2.6,
}


# ------------------------------------------------------------------------------- normalization
def load_published(path=PUBLISHED):
    """The reference's result rows (benchmark/published.csv), in file order."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _best_published():
    best = {}
    for row in load_published():
        best[row["env_id"]] = max(best.get(row["env_id"], -np.inf), float(row["mean"]))
    return best


BEST_PUBLISHED = _best_published()


def score_range(env):
    """(low, high, why) of an env's normalized score, or None if it has none."""
    if env.startswith("dm_control/"):
        return 0.0, 1000.0, "the bounds of a dm_control return"
    if env in RANDOM_PLAY and env in BEST_PUBLISHED:
        return RANDOM_PLAY[env], BEST_PUBLISHED[env], "random play .. best published mean"
    return None


def normalized(env, returns):
    low, high, _ = score_range(env)
    return (np.asarray(returns, dtype=np.float64) - low) / (high - low)


def random_play(env_id, episodes=100):
    """Mean return of uniformly random actions over episodes seeded 0..episodes-1: RANDOM_PLAY's numbers."""
    import gymnasium as gym

    env, returns = gym.make(env_id), []
    env.action_space.seed(0)
    for i in range(episodes):
        env.reset(seed=i)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    env.close()
    return round(float(np.mean(returns)), 1)


# ------------------------------------------------------------------------------- statistics
def iqm(x, axis=-1):
    """Interquartile mean, as rliable: the mean of what is left after cutting 25% off each end."""
    return scipy.stats.trim_mean(x, 0.25, axis=axis)


def pooled_iqm(*samples, axis=-1):
    """One IQM of the runs of all samples (envs) together."""
    return iqm(np.concatenate(samples, axis=axis), axis=axis)


def interval(statistic, samples, resamples=RESAMPLES):
    """95% percentile-bootstrap interval of statistic(*samples), or None if a sample has < 2 runs.

    Each sample (runs along the last axis) is resampled on its own: with one sample per
    env this is the stratified bootstrap of Agarwal et al. A fresh generator with a fixed
    seed for every interval keeps each one independent of what else is computed.
    """
    if any(np.shape(s)[-1] < 2 for s in samples):
        return None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns of a degenerate distribution (e.g. P = 1 throughout)
        result = scipy.stats.bootstrap(
            samples, statistic, n_resamples=resamples, method="percentile", axis=-1, vectorized=True,
            batch=200, rng=np.random.default_rng(BOOTSTRAP_SEED))
    return result.confidence_interval.low, result.confidence_interval.high


def normalized_finals(groups, alpha, step=None):
    """One sample per env that has a range and runs of alpha: its runs' normalized final returns (at step)."""
    return [normalized(env, [r["final"] if step is None else score_at(r, step) for r in runs])
            for (env, a), runs in sorted(groups.items()) if a == alpha and score_range(env)]


def aggregate_iqm(groups, alpha, step=None):
    """The aggregate of an alpha's runs: IQM over all runs of the envs' normalized final returns (None if none)."""
    samples = normalized_finals(groups, alpha, step)
    return float(pooled_iqm(*samples)) if samples else None


# ------------------------------------------------------------------------------- runs
def smoothed(values, window=LAST_EPISODES):
    """Running mean over the last `window` episodes (fewer at the start)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    end = np.arange(1, len(values) + 1)
    start = np.maximum(0, end - window)
    return (sums[end] - sums[start]) / (end - start)


def score_at(run, steps):
    """The run's final return as it stood at each step: the mean of its last 10 episodes ended by then."""
    index = np.searchsorted(run["steps"], steps, side="right") - 1
    return smoothed(run["returns"])[index]


def reached(run, step):
    """Whether the run trained to step: its last episode ended at REACHED_PERCENT% of step or later."""
    return 100 * int(run["steps"][-1]) >= REACHED_PERCENT * step


def score_at_budget(run, step):
    """score_at(run, step) if the run reached step and had an episode by then, else None."""
    return float(score_at(run, step)) if reached(run, step) and run["steps"][0] <= step else None


def make_run(seed, steps, returns, lengths, action_std=None, evaluation=None, *, finished):
    """A run's episodes in the order they ended, its final return, its logged σ ((steps, values) or None) and the
    returns of its evaluation after training (in episode order, or None)."""
    # stable: episodes of several sub-envs that end on the same step keep their order
    order = np.argsort(steps, kind="stable")
    steps, returns, lengths = (np.asarray(a)[order] for a in (steps, returns, lengths))
    if action_std is not None:
        std_steps, values = (np.asarray(a) for a in action_std)
        order = np.argsort(std_steps, kind="stable")
        action_std = std_steps[order].astype(np.int64), values[order].astype(np.float64)
    return {"seed": seed, "steps": steps, "returns": returns.astype(np.float64), "lengths": lengths,
            "final": float(np.mean(returns[-LAST_EPISODES:])), "finished": finished, "action_std": action_std,
            "evaluation": None if evaluation is None else np.asarray(evaluation, dtype=np.float64)}


# TensorBoard warns of each purge as of "a TensorFlow restart". For a run resumed from a checkpoint the purge is the
# expected one (purge_step drops what the stopped attempt logged after its checkpoint), so that warning alone is
# not shown; TensorBoard's other warnings are.
PURGE_WARNING = "Detected out of order event.step"
logging.getLogger("tensorboard").addFilter(lambda record: not record.getMessage().startswith(PURGE_WARNING))


def load_episodes(run_dir):
    """(steps, returns, lengths, σ, evaluation) of a run's training episodes, its logged σ ((steps, values), or
    None if it has none) and its evaluation's returns (None if it has none), or a reason to skip it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_dirs = sorted({p.parent for p in run_dir.rglob("events.out.tfevents.*")})
    if not event_dirs:
        return None, "no event file"
    if len(event_dirs) > 1:
        where = ", ".join(str(d.relative_to(run_dir)) for d in event_dirs)
        return None, f"{len(event_dirs)} directories of event files (expected one): {where}"
    # size_guidance 0 keeps every point; the accumulator reads the files of one run in order
    # and drops what an interrupted attempt logged past its checkpoint (purge on resume: see PURGE_WARNING).
    acc = EventAccumulator(str(event_dirs[0]), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    if RETURN_TAG not in tags:
        return None, "no episodes yet"
    returns = acc.Scalars(RETURN_TAG)
    lengths = acc.Scalars(LENGTH_TAG) if LENGTH_TAG in tags else []
    # The trainer logs both tags for every episode at the step it ended, so they pair up by position.
    if [e.step for e in returns] != [e.step for e in lengths]:
        return None, f"{RETURN_TAG} and {LENGTH_TAG} do not pair up ({len(returns)} against {len(lengths)} points)"
    stds = acc.Scalars(STD_TAG) if STD_TAG in tags else None
    # logged at step = the episode's index, once the run has trained to its end
    evaluation = [e.value for e in sorted(acc.Scalars(EVAL_TAG), key=lambda e: e.step)] if EVAL_TAG in tags else None
    return (np.array([e.step for e in returns], dtype=np.int64), np.array([e.value for e in returns]),
            np.array([round(e.value) for e in lengths], dtype=np.int64),
            ([e.step for e in stds], [e.value for e in stds]) if stds else None, evaluation or None), None


def sort_groups(groups):
    return {key: sorted(runs, key=lambda r: r["seed"]) for key, runs in groups.items()}


def load_run_dirs(runs_dir):
    """{(env, alpha): [run, ...]} from sweep.sh's directories, and [(run name, why skipped)]."""
    groups = defaultdict(list)
    skipped = []
    for run_dir in sorted(p for p in Path(runs_dir).iterdir() if p.is_dir()):
        m = RUN_NAME.match(run_dir.name)
        if not m:
            continue  # e.g. sweep.sh's slurm/ folder
        env_file = run_dir / "env_id"
        env = env_file.read_text().strip() if env_file.is_file() else m["env"]
        data, reason = load_episodes(run_dir)
        if data is None:
            skipped.append((run_dir.name, reason))
            continue
        groups[env, m["alpha"]].append(make_run(int(m["seed"]), *data, finished=(run_dir / "DONE").is_file()))
    return sort_groups(groups), skipped
