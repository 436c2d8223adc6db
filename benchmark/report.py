"""Tables, statistics and learning curves from a sweep of benchmark/sweep.sh.

    python benchmark/report.py RUNS_DIR_OR_CSV --out DIR [--export CSV] [--above RETURN] [--at STEPS]
    python benchmark/report.py --arms [NAME=]DIR_OR_CSV ... --out DIR [--export CSV] [--above RETURN]

    # a sweep's tables and curves, also while it is still running
    python benchmark/report.py benchmark/runs --out benchmark/results/NAME
    # keep its episodes as data, then rebuild the report from that file alone
    python benchmark/report.py benchmark/runs --export benchmark/results/NAME/episodes.csv.gz
    python benchmark/report.py benchmark/results/NAME/episodes.csv.gz --out benchmark/results/NAME
    # also each alpha's score and σ at 1M, 2M, 4M and 8M steps
    python benchmark/report.py benchmark/runs --out benchmark/results/NAME --at 1M,2M,4M,8M
    # implementations compared (benchmark/parity.sh's arms), the first arm against the others
    python benchmark/report.py --arms OUT/reference-mujoco237 OUT/ours-mujoco237 OUT/ours-mujoco3 --out DIR

The input is either RUNS_DIR, the --out directory of sweep.sh (one directory per run,
named <env>__alpha<A>__seed<S>, with the real env id in its env_id file), or a CSV of
training episodes, plain or gzipped, one row per episode with the columns env_id,
rpo_alpha, seed, global_step, episodic_return, episodic_length: what --export writes
(runs sorted by env, alpha and seed, episodes in the order they ended, returns as exact
decimals of the logged float32, a gzip header without time or name), so that a report
made from the export is byte for byte the one made from the run directories. Only run
directories know which runs are unfinished (DONE) or unusable; an export keeps every
run that has episodes, and a report made from it marks none as unfinished. Runs are
grouped by (env, alpha); alpha 0 is PPO.

The policy's σ (charts/action_std, logged by the trainer every iteration) comes from the
run directories too. --export writes it, in the same order and the same way, to a second
file named after the export (episodes.csv.gz -> episodes.action_std.csv.gz; env_id,
rpo_alpha, seed, global_step, action_std, a row per point), which a report made from the
episodes CSV reads if it is there: the episodes CSV stays as it was, and the studies
exported before σ was kept rebuild as they were, without σ. The evaluation after training
(eval/episodic_return: the mean action's return per episode, which the trainer logs at the
end of a run with --save-model) is kept the same way, in episodes.eval.csv.gz (env_id,
rpo_alpha, seed, episode, eval_return).

--arms compares implementations instead of alphas: each arm is a sweep's directory or a
one-arm CSV, named NAME or after its folder or file; the first arm is the one the others
are compared with. Its --export adds a first column, arm, in the arms' order, and a report
made from that CSV is the comparison again, byte for byte. OUT/results.md then holds,
per env and alpha, each arm's mean ± std, runs, IQM [95% CI] and mean [95% CI] of the
final returns, and P(arm > first arm) [95% CI], computed as below; with more than one
(env, alpha), each arm's normalized IQM and mean P over them (stratified by env and
alpha). OUT/learning_curves.png has one panel per env and alpha, one line per arm.
--above RETURN adds to either report how many runs of each cell end above RETURN
(results.md names the flag, so the report can be rebuilt with it). --at STEPS (a sweep's
report only) scores the runs at budgets, e.g. 1M,2M,4M,8M or 1000000,2000000 (k = 1,000,
M = 1,000,000; results.md names the flag too).

A run's *final return*, its score at a budget, the *normalized score* and the aggregate
*IQM* are defined once, in benchmark/score.py, which tune.py uses too: a tuner trial's
value is the aggregate normalized IQM that this report prints for the trial's runs
(report.py DIR/trials/N).

OUT/results.md holds, in this order:
  - the table in the reference's shape: one row per env, one column per alpha, PPO
    first; a cell is the mean ± standard deviation (numpy's, ddof=0) of the final
    returns of that (env, alpha)'s seeds;
  - the same beside the published results (benchmark/published.csv: the reference's
    tables, 8M steps, 10 seeds) wherever env and alpha match, with each env's budget
    (its runs' largest global_step, to 2 significant digits, and its seeds); where the
    reference has several rows for an env and alpha (its PPO runs recur in several
    tables), the first one in the file;
  - the statistics of Agarwal et al. (2021), "Deep Reinforcement Learning at the Edge
    of the Statistical Precipice", computed as their library rliable does:
      IQM, the interquartile mean: the mean of the middle half of the runs
        (scipy.stats.trim_mean(x, 0.25): of 10 runs, the middle 6);
      per env, the IQM and mean of the final returns, each with a 95% bootstrap
        confidence interval over its seeds;
      aggregated over envs, the same of the *normalized* final returns: the IQM of
        all (env, seed) runs together, the mean of the envs' means (each env weighs
        the same), each with a stratified bootstrap interval (runs are resampled
        within each env: scipy.stats.bootstrap with one sample per env);
      the probability of improvement P(A > B) for every two alphas of an env: the
        probability that a random run of A ends above a random run of B, ties
        counting 1/2 (the Mann-Whitney U statistic over n·m); PPO (alpha 0) is always
        B, and of two RPO alphas the smaller is A (P(0.01 > 0.5), P(0.01 > PPO),
        P(0.5 > PPO)); aggregated, its mean over the envs that have both; intervals
        resample each alpha's runs within each env;
      every interval: percentile bootstrap, 10,000 resamples (2,000 per point of
      the curves), from a fixed seed, so the same input gives the same file
      (rliable itself is not needed: scipy's bootstrap resamples the same way).
  - with --at, per env, budget and alpha, the IQM [95% CI] of the runs' scores at the
    budget (the mean of a run's last 10 episodes ended by then, as in the sample-efficiency
    curves, for the runs that reached it: their last episode ended at 99% of it or later),
    and P(A > B) [95% CI] over those runs; a cell says how many runs reached the budget
    where not all did (n/a: none);
  - where runs logged σ: with --at, per env, budget and alpha, the median (min–max) over
    the runs that reached the budget of the last σ logged at or before it; and
    OUT/action_std.png, σ against steps on a log scale, one panel per env, one line per
    alpha (median over seeds, shaded min–max);
  - where runs ended with an evaluation: per env and alpha, the IQM [95% CI] over runs of
    their mean evaluation return, beside the IQM of their final training returns, and
    P(A > B) [95% CI] on the evaluations.
  results.md names neither its input nor a time: it can be committed and rebuilt.
OUT/learning_curves.png: one panel per env, one line per alpha: mean over seeds of each
run's return, smoothed over 10 episodes, with a ±std band; x = global step.
OUT/sample_efficiency.png: the IQM over all runs of the normalized score against env
steps, with its 95% stratified bootstrap band, one line per alpha, one panel per step
budget (envs whose runs went equally far). A run's score at step s is the mean of its
last 10 episodes ended by s; a panel spans the steps every one of its runs covers.

Normalization (score.py) puts envs on one scale for the aggregates: dm_control [0, 1000],
Gym/MuJoCo [random play, best published mean]. Envs without a range are left out of the
aggregates and curves, and the report says so; the per-env tables and probabilities of
improvement need no normalization.

Works on a sweep that is still running: it reports the runs that have episodes,
marks the unfinished ones, and lists the runs it skipped and why. Bad input (a missing
path, a CSV without the columns above or with a value that is not a number, an --at
that is not a list of whole step counts) gets one line on stderr and exit status 2.
"""

import argparse
import csv
import gzip
import io
import math
import sys
import warnings
from collections import defaultdict
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from score import (EVAL_TAG, LAST_EPISODES, REACHED_PERCENT, RETURN_TAG, STD_TAG, interval, iqm,  # noqa: E402
                   load_published,
                   load_run_dirs, make_run, normalized, normalized_finals, pooled_iqm, reached, score_at,
                   score_at_budget, score_range, smoothed, sort_groups)

COLUMNS = ("env_id", "rpo_alpha", "seed", "global_step", "episodic_return", "episodic_length")
STD_COLUMNS = ("env_id", "rpo_alpha", "seed", "global_step", "action_std")  # the σ file beside an export
EVAL_COLUMNS = ("env_id", "rpo_alpha", "seed", "episode", "eval_return")  # the evaluation file beside it
ARM = "arm"  # the optional first column of an episodes CSV of several arms (implementations)
UNITS = {"M": 1_000_000, "k": 1_000}  # of --at's budgets
CURVE_RESAMPLES = 2_000
CURVE_POINTS = 100


class BadInput(Exception):
    """Input report.py cannot use; main prints it as one line."""


# ------------------------------------------------------------------------------- input
def load_csv(path):
    """{(env, alpha): [run, ...]} from an episodes CSV of one arm (plain or gzipped)."""
    arms = read_csv(path)
    if list(arms) != [None]:
        raise BadInput(f"{path}: holds {plural(len(arms), 'arm')} (an `{ARM}` column); expected the episodes of one")
    return arms[None]


def read_rows(path, columns, what, parse):
    """(its columns, {key: [value, ...]}) of a plain or gzipped CSV that has these columns: (key, value) = parse(row)
    for each row, in file order."""
    raw = path.read_bytes()
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: not a CSV or gzipped CSV ({e})") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        found = ", ".join(reader.fieldnames or []) or "none"
        raise BadInput(f"{path}: missing column(s) {', '.join(missing)} (its columns: {found}; "
                       f"{what} has {', '.join(columns)})")
    grouped = defaultdict(list)
    for row in reader:
        try:
            key, value = parse(row)
        except (TypeError, ValueError):
            raise BadInput(f"{path}, line {reader.line_num}: not a number where one is expected: "
                           f"{','.join(str(row.get(c)) for c in columns)}") from None
        grouped[key].append(value)
    return reader.fieldnames, grouped


def episode(row):
    """((arm, env, alpha, seed), (step, return, length)) of a row of an episodes CSV; arm None without the column."""
    float(row["rpo_alpha"])  # alpha stays the string it was written as: it names a column
    return ((row.get(ARM), row["env_id"], row["rpo_alpha"], int(row["seed"])),
            (int(row["global_step"]), float(row["episodic_return"]), int(row["episodic_length"])))


def std_point(row):
    """((env, alpha, seed), (step, σ)) of a row of a σ CSV."""
    return (row["env_id"], row["rpo_alpha"], int(row["seed"])), (int(row["global_step"]), float(row["action_std"]))


def eval_point(row):
    """((env, alpha, seed), (episode, return)) of a row of an evaluation CSV."""
    return (row["env_id"], row["rpo_alpha"], int(row["seed"])), (int(row["episode"]), float(row["eval_return"]))


def beside(path, kind):
    """Where an export keeps more of its runs: beside it, episodes.csv.gz -> episodes.<kind>.csv.gz."""
    gz = ".gz" if path.name.endswith(".gz") else ""
    return path.with_name(path.name.removesuffix(".gz").removesuffix(".csv") + f".{kind}.csv" + gz)


def std_file(path):
    """Where an export keeps its runs' σ: episodes.csv.gz -> episodes.action_std.csv.gz."""
    return beside(path, "action_std")


def eval_file(path):
    """Where an export keeps its runs' evaluation after training: episodes.csv.gz -> episodes.eval.csv.gz."""
    return beside(path, "eval")


def read_csv(path):
    """{arm: {(env, alpha): [run, ...]}} from an episodes CSV, arms in the order they first appear;
    the one arm is None in a CSV without an arm column. Runs of one arm get their σ from the file beside it."""
    columns, episodes = read_rows(path, COLUMNS, "an episodes CSV", episode)
    stds, evals = {}, {}
    if ARM not in columns:  # an export of several arms keeps its episodes only
        stds = read_beside(path, episodes, std_file(path), STD_COLUMNS, ("σ", "a σ CSV"), std_point)
        evals = read_beside(path, episodes, eval_file(path), EVAL_COLUMNS, ("evaluation", "an evaluation CSV"),
                            eval_point)
    arms = defaultdict(lambda: defaultdict(list))
    for (arm, env, alpha, seed), rows in episodes.items():
        points = stds.get((env, alpha, seed))
        evaluation = [ret for _, ret in sorted(evals[env, alpha, seed])] if (env, alpha, seed) in evals else None
        arms[arm][env, alpha].append(make_run(seed, *zip(*rows), points and tuple(zip(*points)), evaluation,
                                              finished=True))
    return {arm: sort_groups(groups) for arm, groups in arms.items()} or {None: {}}


def read_beside(path, episodes, where, columns, what, parse):
    """{(env, alpha, seed): [point, ...]} of the file `where` beside the export `path` ({} if there is none), refused
    if it holds runs that the export has no episodes of; what = (its name in a message, its kind of CSV)."""
    if not where.is_file():
        return {}
    points = read_rows(where, columns, what[1], parse)[1]
    if stray := sorted(set(points) - {key[1:] for key in episodes}):
        raise BadInput(f"{where}: holds the {what[0]} of runs that {path.name} has no episodes of, e.g. "
                       "{} α={} seed {}".format(*stray[0]))
    return points


def by_cell(keys):
    """(env, alpha) keys in report order: env, then alpha by value."""
    return sorted(keys, key=lambda k: (k[0], float(k[1]), k[1]))


def export_csv(arms, path):
    """Writes every episode of every run of {arm: groups}, one row each, arms in their order (an `arm`
    column only where there are named arms: {None: groups} writes one arm's file), and for one arm whose
    runs logged σ or ended with an evaluation, those to std_file(path) and eval_file(path) (a stale one goes);
    [(what, file)] of the files written beside the export."""
    named = list(arms) != [None]
    rows = []
    for arm, groups in arms.items():
        for env, alpha in by_cell(groups):
            for run in groups[env, alpha]:
                for step, ret, length in zip(run["steps"], run["returns"], run["lengths"]):
                    # repr of a float is exact, so reading the file back gives the same numbers
                    row = (env, alpha, run["seed"], int(step), repr(float(ret)), int(length))
                    rows.append((arm, *row) if named else row)
    write_csv(path, (ARM, *COLUMNS) if named else COLUMNS, rows)
    runs = [] if named else [(env, alpha, run) for env, alpha in by_cell(arms[None]) for run in arms[None][env, alpha]]
    stds = [(env, alpha, run["seed"], int(step), repr(float(value))) for env, alpha, run in runs
            if run["action_std"] is not None for step, value in zip(*run["action_std"])]
    evals = [(env, alpha, run["seed"], episode, repr(float(value))) for env, alpha, run in runs
             if run["evaluation"] is not None for episode, value in enumerate(run["evaluation"])]
    written = []
    for what, kept, where, columns in (("σ", stds, std_file(path), STD_COLUMNS),
                                       ("evaluation", evals, eval_file(path), EVAL_COLUMNS)):
        if kept:
            write_csv(where, columns, kept)
            written.append((what, where))
        else:
            where.unlink(missing_ok=True)
    return written


def write_csv(path, header, rows):
    """A CSV; .gz names get a reproducible gzip."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *rows])
    data = out.getvalue().encode("utf-8")
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=9, mtime=0)  # no time stamp: same episodes, same bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def load_source(path):
    """({arm: groups}, [(run, why skipped)]) from a sweep's directory or an episodes CSV; the one arm of a
    directory or of a CSV without an arm column is None."""
    if not path.exists():
        raise BadInput(f"{path} does not exist")
    if path.is_dir():
        groups, skipped = load_run_dirs(path)
        return {None: groups}, skipped
    return read_csv(path), []


def load_arms(specs):
    """({name: groups}, skipped) from --arms [NAME=]DIR_OR_CSV ..., in the order given."""
    if len(specs) < 2:
        raise BadInput("--arms needs two or more (the first is the one the others are compared with)")
    arms, skipped = {}, []
    for spec in specs:
        name, _, where = spec.rpartition("=")
        path = Path(where)
        name = name or path.name.removesuffix(".gz").removesuffix(".csv")
        if not name or not where:
            raise BadInput(f"--arms {spec}: expected [NAME=]DIR_OR_CSV")
        if name in arms:
            raise BadInput(f"--arms: two arms are named {name} (name them: NAME=DIR_OR_CSV)")
        loaded, why = load_source(path)
        if list(loaded) != [None]:
            raise BadInput(f"{path}: holds arms of its own (an `{ARM}` column); give it alone, without --arms")
        arms[name] = loaded[None]
        skipped += [(f"{name}: {run}", reason) for run, reason in why]
    return arms, skipped


def published_by_alpha():
    """{(env, alpha as float): row} of the reference's results; the first row where it has several."""
    first = {}
    for row in load_published():
        first.setdefault((row["env_id"], float(row["rpo_alpha"])), row)
    return first


# ------------------------------------------------------------------------------- statistics
def prob_improvement(x, y, axis=-1):
    """P(X > Y) + P(X = Y) / 2 for a random run X of x and Y of y (runs along axis)."""
    x = np.moveaxis(np.asarray(x), axis, -1)[..., :, None]
    y = np.moveaxis(np.asarray(y), axis, -1)[..., None, :]
    return ((x > y) + 0.5 * (x == y)).mean(axis=(-2, -1))


def mean_of_means(*samples, axis=-1):
    return np.mean([s.mean(axis=axis) for s in samples], axis=0)


def mean_prob_improvement(*pairs, axis=-1):
    """Mean over envs of P(X > Y); pairs = x_env1, y_env1, x_env2, y_env2, ..."""
    return np.mean([prob_improvement(x, y, axis) for x, y in zip(pairs[::2], pairs[1::2])], axis=0)


def comparisons(alphas):
    """Every pair of alphas as (first, second) for P(first > second): PPO (alpha 0) always second,
    of two RPO alphas the smaller first; e.g. 0.01 > 0.5, 0.01 > PPO, 0.5 > PPO."""
    ordered = sorted(alphas, key=float)
    rpo, ppo = [a for a in ordered if float(a) != 0], [a for a in ordered if float(a) == 0]
    return [(a, b) for i, a in enumerate(rpo) for b in rpo[i + 1:] + ppo[:1]]


# ------------------------------------------------------------------------------- formatting
def alpha_header(alpha):
    return "PPO (α=0)" if float(alpha) == 0 else f"RPO α={alpha}"


def format_cell(finals):
    return f"{np.mean(finals):.2f} ± {np.std(finals):.2f}"


def format_estimate(point, ci, digits=2):
    if ci is None:
        return f"{point:.{digits}f} (—)"
    return f"{point:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def short_steps(steps):
    """A step count to 2 significant digits: 999200 -> '1M', 499000 -> '500k', 8000000 -> '8M'."""
    steps = int(steps)
    if steps <= 0:
        return "0"
    rounded = round(steps, 2 - len(str(steps)))
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if rounded >= size:
            return f"{rounded / size:g}{suffix}"
    return str(rounded)


def budget_text(steps):
    """A budget as --at takes it, exactly: 8000000 -> '8M', 1500000 -> '1.5M', 999424 -> '999.424k'."""
    suffix, size = next(((suffix, size) for suffix, size in UNITS.items() if steps >= size), ("", 1))
    return f"{Decimal(steps) / size}{suffix}"


def parse_budgets(text):
    """--at's budgets, sorted, each once: step counts separated by commas, whole or with k or M (1M = 1,000,000)."""
    budgets = set()
    for part in map(str.strip, text.split(",")):
        try:
            steps = Decimal(part[:-1] if part[-1:] in UNITS else part) * UNITS.get(part[-1:], 1)
        except InvalidOperation:
            steps = Decimal("NaN")
        if not (steps.is_finite() and steps >= 1 and steps == steps.to_integral_value()):
            raise argparse.ArgumentTypeError(f"expected whole step counts separated by commas, such as "
                                             f"1000000,2000000 or 1M,2M; got {part!r} in {text!r}")
        budgets.add(int(steps))
    return sorted(budgets)


def plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def seeds_text(counts):
    low, high = min(counts), max(counts)
    return plural(low, "seed") if low == high else f"{low}–{high} seeds"


def markdown_table(header, rows):
    lines = [header, [":---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(row) + " |" for row in lines)


def finals(runs):
    return np.array([r["final"] for r in runs])


def summary_cell(runs):
    """(mean ± std of the runs' final returns, † if any is unfinished; how many are unfinished)."""
    if not runs:
        return "—", 0
    unfinished = sum(not r["finished"] for r in runs)
    return format_cell(finals(runs)) + (" †" if unfinished else ""), unfinished


def summary_notes(unfinished):
    notes = [f"Final return of a run: mean of `{RETURN_TAG}` over its last {LAST_EPISODES} training episodes. "
             "Cells: mean ± std (ddof=0) over seeds."]
    if unfinished:
        notes.append(f"† includes {unfinished} unfinished run(s) (no DONE marker yet): their returns so far.")
    return notes


def runs_line(env, alpha, runs):
    return f"{env} α={alpha}: {len(runs)} seeds, up to step {max(r['steps'][-1] for r in runs)}"


def estimate_cells(runs, above=None):
    """runs, IQM [CI] and mean [CI] of the runs' final returns, and with above how many end above it."""
    x = finals(runs)
    cells = [str(len(x)), format_estimate(iqm(x), interval(iqm, (x,))), format_estimate(x.mean(), interval(np.mean, (x,)))]
    return cells + ([f"{int((x > above).sum())} of {len(x)}"] if above is not None else [])


def above_header(above):
    return [f"above {above:g}"] if above is not None else []


def above_note(above):
    return ([f"above {above:g}: how many of the runs have a final return above {above:g} (`--above {above:g}`).", ""]
            if above is not None else [])


def improvement_header(a, b):
    return f"P({alpha_header(a)} > {'PPO' if float(b) == 0 else alpha_header(b)}) [95% CI]"


def improvement_cell(x, y):
    return format_estimate(prob_improvement(x, y), interval(prob_improvement, (x, y)))


def mean_improvement_cell(pairs, unit):
    """The mean over strata of P(X > Y) with its stratified interval; pairs = x1, y1, x2, y2, ..."""
    if not pairs:
        return "—"
    point = mean_prob_improvement(*pairs)
    return f"{format_estimate(point, interval(mean_prob_improvement, pairs))} ({plural(len(pairs) // 2, unit)})"


def aggregate_cells(samples):
    """strata, runs, IQM [CI] over all runs together and mean of the strata's means [CI], of normalized samples."""
    return [str(len(samples)), str(sum(len(s) for s in samples)),
            format_estimate(pooled_iqm(*samples), interval(pooled_iqm, samples), 3),
            format_estimate(mean_of_means(*samples), interval(mean_of_means, samples), 3)]


# ------------------------------------------------------------------------------- report sections
def env_budget(groups, env):
    return max(r["steps"][-1] for (e, _), runs in groups.items() if e == env for r in runs)


def published_section(groups, envs, alphas, published):
    """Our mean ± std beside the reference's, per env, with each env's budget."""
    # published only beside an (env, alpha) we ran: a comparison, not a copy of the reference
    pairs = {(env, a): published[env, float(a)] for env in envs for a in alphas
             if (env, a) in groups and (env, float(a)) in published}
    matched = [a for a in alphas if any(a == pa for _, pa in pairs)]
    if not matched:
        return ["## Beside the published results", "",
                "No env and alpha of this report is in `benchmark/published.csv`.", ""]
    header = ["", "ours: steps, seeds"]
    for alpha in alphas:
        header.append(alpha_header(alpha))
        if alpha in matched:
            budgets = sorted({(int(row["timesteps"]), int(row["seeds"]))
                              for (_, a), row in pairs.items() if a == alpha})
            header.append(f"{alpha_header(alpha)}, published ("
                          + "; ".join(f"{short_steps(t)} steps, {s} seeds" for t, s in budgets) + ")")
    rows = []
    for env in envs:
        counts = [len(groups[env, a]) for a in alphas if (env, a) in groups]
        row = [env, f"{short_steps(env_budget(groups, env))} steps, {seeds_text(counts)}"]
        for alpha in alphas:
            runs = groups.get((env, alpha))
            row.append(format_cell([r["final"] for r in runs]) if runs else "—")
            if alpha in matched:
                pub = pairs.get((env, alpha))
                row.append(f"{float(pub['mean']):.2f} ± {float(pub['std']):.2f}" if pub else "—")
        rows.append(row)
    return [
        "## Beside the published results", "",
        markdown_table(header, rows), "",
        "Ours: mean ± std of the final returns over seeds; steps: the largest `global_step` of the env's runs, "
        "to 2 significant digits (exact ones under “Runs per cell”). Published: the reference's tables "
        "(`benchmark/published.csv`; PPO is α=0). Where the reference has several rows for an env and α "
        "(its PPO runs recur in several tables), the first one in that file is shown.", "",
    ]


def statistics_section(groups, envs, alphas, above=None):
    lines = ["## Statistics over seeds", "",
             "After Agarwal et al. (2021), *Deep Reinforcement Learning at the Edge of the Statistical Precipice*. "
             "IQM: interquartile mean, the mean of the middle half of the runs (25% trimmed from each end). "
             "[95% confidence interval]: percentile bootstrap, 10,000 resamples, fixed seed; (—) where a cell "
             "has fewer than 2 runs.", "",
             "Final returns per env:", ""]
    rows = []
    for env in envs:
        for alpha in alphas:
            runs = groups.get((env, alpha))
            if runs:
                rows.append([env, alpha_header(alpha), *estimate_cells(runs, above)])
    lines += [markdown_table(["", "", "runs", "IQM [95% CI]", "mean [95% CI]", *above_header(above)], rows), "",
              *above_note(above)]

    scored = [env for env in envs if score_range(env)]
    unscored = [env for env in envs if not score_range(env)]
    if scored:
        rows = []
        for alpha in alphas:
            samples = normalized_finals(groups, alpha)  # tune.py's trial value is the IQM of these
            if not samples:
                continue
            rows.append([alpha_header(alpha), *aggregate_cells(samples)])
        lines += ["Normalized final returns, aggregated over envs (stratified bootstrap: runs resampled within "
                  "each env; IQM over all runs together, mean = mean of the envs' means):", "",
                  markdown_table(["", "envs", "runs", "IQM [95% CI]", "mean [95% CI]"], rows), "",
                  "An alpha's envs are those it has runs on: compare the lines of one table only where their "
                  "envs agree.", ""]
    lines += normalization_notes(scored, unscored)

    pairs = comparisons(alphas)
    if pairs:
        header, rows, found = [""], [], {pair: [] for pair in pairs}
        header += [improvement_header(a, b) for a, b in pairs]
        for env in envs:
            row = [env]
            for a, b in pairs:
                if (env, a) in groups and (env, b) in groups:
                    x, y = finals(groups[env, a]), finals(groups[env, b])
                    found[a, b] += [x, y]
                    row.append(improvement_cell(x, y))
                else:
                    row.append("—")
            rows.append(row)
        rows.append(["mean over envs", *(mean_improvement_cell(found[pair], "env") for pair in pairs)])
        lines += ["Probability of improvement P(A > B): the chance that a random run of A on an env ends above a "
                  "random run of B on it (ties count 1/2), for every two alphas of an env (PPO always B; of two RPO "
                  "alphas, the smaller is A); its mean over the envs that have both, with a stratified bootstrap "
                  "interval (each alpha's runs resampled within each env):", "",
                  markdown_table(header, rows), ""]
    return lines


def std_at_budget(run, step):
    """The last σ the run logged at or before step, if it reached step (score.reached) and logged one by then."""
    if run["action_std"] is None or not reached(run, step):
        return None
    steps, values = run["action_std"]
    index = np.searchsorted(steps, step, side="right") - 1
    return float(values[index]) if index >= 0 else None


def budget_rows(groups, envs, alphas, budgets, value, cell, pairs=()):
    """Per env and budget, per alpha: cell(x) of x, the value(run, step) of its runs that have one (with how many
    of the runs where not all do; n/a if none); then P(A > B) on them for each pair."""
    rows = []
    for env in envs:
        for step in budgets:
            row, x = [env, budget_text(step)], {}
            for a in alphas:
                runs = groups.get((env, a), [])
                x[a] = np.array([v for run in runs if (v := value(run, step)) is not None])
                n = len(x[a])
                row.append("—" if not runs else (cell(x[a]) if n else "n/a")
                           + ("" if n == len(runs) else f" ({n} of {plural(len(runs), 'run')})"))
            rows.append(row + [improvement_cell(x[a], x[b]) if len(x[a]) and len(x[b]) else "—" for a, b in pairs])
    return rows


def budgets_section(groups, envs, alphas, budgets):
    """Per env and budget: each alpha's IQM [CI] of its runs' scores there, and P(A > B) on them."""
    pairs = comparisons(alphas)
    rows = budget_rows(groups, envs, alphas, budgets, score_at_budget,
                       lambda x: format_estimate(iqm(x), interval(iqm, (x,))), pairs)
    header = ["", "steps", *(f"{alpha_header(a)}: IQM [95% CI]" for a in alphas),
              *(improvement_header(a, b) for a, b in pairs)]
    return ["## Scores at budgets", "",
            f"A run's score at a budget of s steps: the mean of its last {LAST_EPISODES} episodes ended by s (as in "
            f"the sample-efficiency curves), for the runs that reached s (their last episode ended at "
            f"{REACHED_PERCENT}% of s or later: a trainer stops at a whole number of batches, 8M steps of 2048 are "
            "7,999,488). Per alpha, the IQM of those scores with its interval, and how many of the runs reached "
            "s where not all did (n/a: none did); P(A > B) over the runs of A and B that reached s. Intervals as "
            "above. Budgets: " + ", ".join(map(budget_text, budgets)) + " steps (`--at "
            + ",".join(map(budget_text, budgets)) + "`).", "",
            markdown_table(header, rows), ""]


def std_section(stds, envs, alphas, budgets):
    """The policy's σ, of the runs that logged it: a table at the budgets (if any) and the plot."""
    intro = (f"`{STD_TAG}`: the mean σ of the Gaussian policy over the rollout's observations and the action's "
             "dimensions, logged every iteration.")
    table = []
    if budgets:
        intro += (" At each budget: the median over the runs that reached it (as above) of the last σ each logged "
                  "at or before it, and (min–max).")
        rows = budget_rows(stds, envs, alphas, budgets, std_at_budget,
                           lambda x: f"{np.median(x):.3f} ({x.min():.3f}–{x.max():.3f})")
        table = [markdown_table(["", "steps", *map(alpha_header, alphas)], rows), ""]
    return ["## The policy's σ", "", intro, "", *table,
            "σ against steps (median over seeds, shaded min–max; log scale):", "", "![policy σ](action_std.png)", ""]


def eval_section(groups, envs, alphas):
    """Per env and alpha, of the runs that ended with an evaluation: the IQM [CI] of their mean evaluation return,
    the IQM of their final training returns beside it, and P(A > B) on the evaluations."""
    pairs = comparisons(alphas)
    rows = []
    for env in envs:
        row, x = [env], {}
        for a in alphas:
            runs = groups.get((env, a), [])
            evaluated = [r for r in runs if r["evaluation"] is not None]
            x[a] = np.array([np.mean(r["evaluation"]) for r in evaluated])
            some = "" if len(evaluated) == len(runs) else f" ({len(evaluated)} of {plural(len(runs), 'run')})"
            row += ([format_estimate(iqm(x[a]), interval(iqm, (x[a],))) + some, f"{iqm(finals(evaluated)):.2f}"]
                    if evaluated else ["—" if not runs else "n/a", "—"])
        rows.append(row + [improvement_cell(x[a], x[b]) if len(x[a]) and len(x[b]) else "—" for a, b in pairs])
    header = ["", *(f"{alpha_header(a)}: {what}" for a in alphas for what in ("evaluation IQM [95% CI]",
                                                                               "training IQM")),
              *(improvement_header(a, b) for a, b in pairs)]
    return ["## The mean action after training", "",
            f"With `--save-model` the trainer ends a run by evaluating the policy's mean action (no sampling; the "
            f"observation normalization frozen) for `--eval-episodes` episodes, logged as `{EVAL_TAG}`. Per alpha, "
            "over the runs that have it: the IQM of each run's mean evaluation return with its interval (and how "
            "many of the runs have one where not all do), the IQM of the same runs' final training returns "
            "(sampled actions) beside it, and P(A > B) on the evaluations. Intervals as above.", "",
            markdown_table(header, rows), ""]


def normalization_notes(scored, unscored):
    lines = []
    if scored:
        ranges = [f"{env} [{low:g}, {high:g}]" for env in scored for low, high, _ in [score_range(env)]]
        lines += ["Normalized score = (return − low) / (high − low), so that envs share one scale (`benchmark/score.py`): "
                  "dm_control [0, 1000], the bounds of its return; Gym and MuJoCo [random play, best published "
                  "mean], what uniformly random actions score and the best mean of the reference's 8M-step runs. "
                  "Here: " + "; ".join(ranges) + ".", ""]
    if unscored:
        lines += ["Left out of the aggregates and the sample-efficiency curves, as they have no normalization "
                  "range (no random-play return in `benchmark/score.py` or no published mean): " + ", ".join(unscored) + ".", ""]
    return lines


# ------------------------------------------------------------------------------- figures
def budget_panels(groups, envs):
    """{budget label: envs} for the normalizable envs: one sample-efficiency panel each."""
    panels = defaultdict(list)
    for env in envs:
        if score_range(env):
            panels[short_steps(env_budget(groups, env))].append(env)
    return dict(sorted(panels.items(), key=lambda kv: env_budget(groups, kv[1][0])))


def sample_efficiency(groups, envs, alphas):
    """{budget: (envs, grid, {alpha: (n envs, n runs, iqm, low, high)})} for the curves."""
    curves = {}
    for budget, panel_envs in budget_panels(groups, envs).items():
        runs = [r for (env, _), rs in groups.items() if env in panel_envs for r in rs]
        start, end = max(r["steps"][0] for r in runs), min(r["steps"][-1] for r in runs)
        if end <= start:
            continue
        grid = np.linspace(start, end, CURVE_POINTS)
        lines = {}
        for alpha in alphas:
            # one sample per env: scores of shape (grid points, runs)
            samples = [normalized(env, np.stack([score_at(r, grid) for r in groups[env, alpha]], axis=-1))
                       for env in panel_envs if (env, alpha) in groups]
            if samples:
                ci = interval(pooled_iqm, samples, CURVE_RESAMPLES)
                lines[alpha] = (len(samples), sum(s.shape[-1] for s in samples), pooled_iqm(*samples),
                                *(ci if ci is not None else (None, None)))
        curves[budget] = (panel_envs, grid, lines)
    return curves


def plot_sample_efficiency(curves, alphas, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    for ax, (budget, (panel_envs, grid, lines)) in zip(axes.flat, curves.items()):
        for alpha, (n_envs, n_runs, point, low, high) in lines.items():
            color = f"C{alphas.index(alpha)}"  # as in the learning curves
            label = f"{alpha_header(alpha)} ({plural(n_envs, 'env')}, {plural(n_runs, 'run')})"
            ax.plot(grid, point, color=color, label=label)
            if low is not None:
                ax.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0)
        ax.set_title(f"{budget} steps: " + ", ".join(e.removeprefix("dm_control/") for e in panel_envs),
                     fontsize="small")
        ax.set_xlabel("global step")
        ax.set_ylabel("IQM normalized score (95% CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot(panels, path, series=lambda run: (run["steps"], smoothed(run["returns"])), ylabel="episodic return",
         spread=False, log=False):
    """Curves of series(run) = (steps, values) against steps: panels = [(title, [(label, color, runs), ...]), ...],
    one line per runs, their mean ± std (learning curves) or with spread their median and min–max; log: a log y axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels):
        for label, color, runs in lines:
            data = [series(r) for r in runs]
            grid = np.linspace(0, max(steps[-1] for steps, _ in data), 200)
            # Each run on a common step grid; NaN where a run has no data (not started, or
            # not that far yet), so an unfinished seed only counts where it has episodes.
            curves = np.array([np.interp(grid, steps, values, left=np.nan, right=np.nan) for steps, values in data])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
                if spread:
                    center, low, high = (f(curves, axis=0) for f in (np.nanmedian, np.nanmin, np.nanmax))
                else:
                    center, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
                    low, high = center - std, center + std
            ax.plot(grid, center, color=color, label=f"{label} ({plural(len(runs), 'seed')})")
            ax.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0)
        ax.set_title(title)
        ax.set_xlabel("global step")
        ax.set_ylabel(ylabel)
        if log:  # σ: a collapse to 0.02 and a growth to 20 both show
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both" if log else "major")
        ax.legend(fontsize="small")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------- main
def write_report(groups, skipped, published, out, above=None, budgets=()):
    envs = sorted({env for env, _ in groups})
    alphas = sorted({alpha for _, alpha in groups}, key=lambda a: (float(a), a))
    rows = []
    unfinished = 0
    for env in envs:
        row = [env]
        for alpha in alphas:
            cell, n = summary_cell(groups.get((env, alpha), []))
            row.append(cell)
            unfinished += n
        rows.append(row)
    table = markdown_table(["", *map(alpha_header, alphas)], rows)

    notes = summary_notes(unfinished)
    seeds = [runs_line(env, alpha, runs) for (env, alpha), runs in sorted(groups.items())]
    lines = ["# Results", "", table, "", *notes, "", "Runs per cell:", "", *[f"- {s}" for s in seeds], ""]
    curves = {}
    if envs:
        lines += published_section(groups, envs, alphas, published)
        lines += statistics_section(groups, envs, alphas, above)
        curves = sample_efficiency(groups, envs, alphas)
        if curves:
            lines += ["Sample efficiency: IQM over runs of the normalized score (each run's mean over its last "
                      "10 episodes by that step) against env steps, shaded 95% stratified bootstrap interval "
                      "(2,000 resamples); one panel per step budget:", "",
                      "![sample efficiency](sample_efficiency.png)", ""]
        if budgets:
            lines += budgets_section(groups, envs, alphas, budgets)
    # the runs that logged σ: those of run directories, and of an export with its σ file
    stds = {key: kept for key, runs in groups.items() if (kept := [r for r in runs if r["action_std"] is not None])}
    if stds:
        lines += std_section(stds, envs, alphas, budgets)
    if any(r["evaluation"] is not None for runs in groups.values() for r in runs):
        lines += eval_section(groups, envs, alphas)
    lines += closing_lines(skipped, envs)

    written = write_files(out, lines, alpha_panels(groups, alphas))
    if curves:
        plot_sample_efficiency(curves, alphas, out / "sample_efficiency.png")
        written.append(out / "sample_efficiency.png")
    if stds:
        plot(alpha_panels(stds, alphas), out / "action_std.png", lambda run: run["action_std"],
             f"policy σ ({STD_TAG})", spread=True, log=True)
        written.append(out / "action_std.png")
    tell(table if envs else "no runs with episodes yet", notes, skipped, written)


def alpha_panels(groups, alphas):
    """One panel per env, one line per alpha with runs there; the same alpha has the same colour in every panel."""
    return [(env, [(alpha_header(a), f"C{alphas.index(a)}", groups[env, a]) for a in alphas if groups.get((env, a))])
            for env in sorted({env for env, _ in groups})]


def closing_lines(skipped, any_runs):
    lines = ["Skipped runs:", "", *[f"- {name}: {why}" for name, why in skipped], ""] if skipped else []
    if any_runs:
        lines += ["Learning curves (mean over seeds, smoothed over 10 episodes, shaded ± std):", "",
                  "![learning curves](learning_curves.png)", ""]
    return lines


def write_parity_report(arms, skipped, out, above=None):
    """The arms (implementations) side by side per env and alpha; each compared with the first."""
    names = list(arms)
    base = names[0]
    cells = by_cell({key for groups in arms.values() for key in groups})
    rows, unfinished = [], 0
    for env, alpha in cells:
        row = [env, alpha_header(alpha)]
        for name in names:
            cell, n = summary_cell(arms[name].get((env, alpha), []))
            row.append(cell)
            unfinished += n
        rows.append(row)
    table = markdown_table(["", "", *names], rows)
    notes = summary_notes(unfinished)
    seeds = [f"{name}: {runs_line(env, alpha, arms[name][env, alpha])}"
             for name in names for env, alpha in cells if (env, alpha) in arms[name]]
    lines = ["# Implementations compared", "", f"Arms: {', '.join(names)}; each is compared with the first, {base}.",
             "", table, "", *notes, "", "Runs per cell:", "", *[f"- {s}" for s in seeds], ""]

    if cells:
        rows, pairs = [], {name: [] for name in names[1:]}
        for env, alpha in cells:
            y = finals(arms[base][env, alpha]) if (env, alpha) in arms[base] else None
            for name in names:
                if (env, alpha) not in arms[name]:
                    continue
                x = finals(arms[name][env, alpha])
                p = "—"
                if name != base and y is not None:
                    pairs[name] += [x, y]
                    p = improvement_cell(x, y)
                rows.append([env, alpha_header(alpha), name, *estimate_cells(arms[name][env, alpha], above), p])
        header = ["", "", "arm", "runs", "IQM [95% CI]", "mean [95% CI]", *above_header(above),
                  f"P(arm > {base}) [95% CI]"]
        lines += ["## Statistics over seeds", "",
                  "As for the alphas of a sweep (Agarwal et al., 2021): IQM, the interquartile mean of the final "
                  "returns (25% trimmed from each end); P(arm > " + base + "), the probability of improvement: the "
                  "chance that a random run of the arm ends above a random run of " + base + " on the same env and "
                  "α (ties count 1/2). [95% confidence interval]: percentile bootstrap, 10,000 resamples, fixed "
                  "seed, each arm's runs resampled on their own; (—) where a cell has fewer than 2 runs.", "",
                  markdown_table(header, rows), "", *above_note(above)]
        if len(cells) > 1:
            lines += parity_aggregate(arms, cells, pairs)

    lines += closing_lines(skipped, cells)
    panels = [(f"{env} {alpha_header(alpha)}", [(name, f"C{i}", arms[name][env, alpha])
                                               for i, name in enumerate(names) if (env, alpha) in arms[name]])
              for env, alpha in cells]
    written = write_files(out, lines, panels)
    tell(table if cells else "no runs with episodes yet", notes, skipped, written)


def parity_aggregate(arms, cells, pairs):
    """Per arm, over its (env, alpha) cells: the normalized IQM and the mean P(arm > first arm)."""
    names, base = list(arms), next(iter(arms))
    scored = [(env, alpha) for env, alpha in cells if score_range(env)]
    rows = []
    for name in names:
        samples = [normalized(env, finals(arms[name][env, alpha])) for env, alpha in scored
                   if (env, alpha) in arms[name]]
        rows.append([name, *(aggregate_cells(samples) if samples else ["0", "0", "—", "—"]),
                     "—" if name == base else mean_improvement_cell(pairs[name], "cell")])
    envs = sorted({env for env, _ in cells})
    return ["Over the (env, α) cells: the IQM of all runs' normalized final returns together and the mean of "
            "the cells' means (stratified bootstrap: runs resampled within each cell), and the mean over cells "
            f"of P(arm > {base}):", "",
            markdown_table(["", "cells", "runs", "normalized IQM [95% CI]", "normalized mean [95% CI]",
                            f"mean P(arm > {base}) [95% CI]"], rows), "",
            *normalization_notes([e for e in envs if score_range(e)], [e for e in envs if not score_range(e)])]


def write_files(out, lines, panels):
    """results.md and, where there are runs, learning_curves.png; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    written = [out / "results.md"]
    if panels:
        plot(panels, out / "learning_curves.png")
        written.append(out / "learning_curves.png")
    return written


def tell(table, notes, skipped, written):
    print(table)
    for note in notes:
        print(note)
    for name, why in skipped:
        print(f"skipped {name}: {why}")
    print("wrote " + ", ".join(map(str, written)))


class Parser(argparse.ArgumentParser):
    def error(self, message):
        fail(message)


def fail(message):
    print(f"report.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv=None):
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, metavar="RUNS_DIR_OR_CSV", nargs="?",
                        help="the --out directory of sweep.sh, or an episodes CSV (.csv or .csv.gz) from --export")
    parser.add_argument("--arms", nargs="+", metavar="[NAME=]DIR_OR_CSV",
                        help="instead of RUNS_DIR_OR_CSV: implementations to compare, each a sweep's directory or "
                             "an episodes CSV of one arm, named NAME (default: the folder's or file's name); "
                             "the first is the one the others are compared with")
    parser.add_argument("--out", type=Path, metavar="DIR", help="where to write results.md and the figures")
    parser.add_argument("--export", type=Path, metavar="CSV",
                        help="write every episode of every run to this CSV (gzipped if it ends in .gz)")
    parser.add_argument("--above", type=float, metavar="RETURN",
                        help="also count, per env and alpha (or arm), the runs whose final return is above this")
    parser.add_argument("--at", type=parse_budgets, metavar="STEPS", default=[],
                        help="also score every run at these budgets, e.g. 1M,2M,4M,8M: per env and alpha, the IQM "
                             "of the runs' scores there, P(A > B), and the policy's σ")
    args = parser.parse_args(argv)
    if args.out is None and args.export is None:
        fail("nothing to do: give --out DIR, --export CSV, or both")
    if (args.source is None) == (args.arms is None):
        fail("give one input: RUNS_DIR_OR_CSV, or --arms [NAME=]DIR_OR_CSV ... to compare implementations")
    if args.above is not None and not math.isfinite(args.above):
        fail(f"--above must be a finite number, got {args.above}")
    try:
        arms, skipped = load_arms(args.arms) if args.arms else load_source(args.source)
        if args.at and list(arms) != [None]:
            raise BadInput("--at is for one sweep's report, not a comparison of arms")
        if args.export:
            beside_export = export_csv(arms, args.export)
            runs = [r for groups in arms.values() for rs in groups.values() for r in rs]
            unfinished = sum(not r["finished"] for r in runs)
            print(f"exported {sum(len(r['steps']) for r in runs)} episodes of {len(runs)} runs"
                  + (f" of {plural(len(arms), 'arm')}" if list(arms) != [None] else "") + f" to {args.export}"
                  + (f" ({unfinished} of them unfinished: their episodes so far)" if unfinished else "")
                  + "".join(f", and their {what} to {where}" for what, where in beside_export))
        if args.out and list(arms) == [None]:
            write_report(arms[None], skipped, published_by_alpha(), args.out, args.above, args.at)
        elif args.out:
            write_parity_report(arms, skipped, args.out, args.above)
    except BadInput as e:
        fail(str(e))
    except OSError as e:  # unreadable input, unwritable output
        fail(f"{e.filename}: {e.strerror}" if e.filename else str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
