"""Tables and learning curves from a sweep of benchmark/sweep.sh.

    python benchmark/report.py benchmark/runs --out benchmark/results

RUNS_DIR holds one directory per run, named <env>__alpha<A>__seed<S> by sweep.sh
(with the real env id in its env_id file). Runs are grouped by (env, alpha).

A run's *final return* is the mean of `charts/episodic_return` over its last 10
training episodes (fewer if it has fewer). A table cell is the mean ± standard
deviation (numpy's, ddof=0) of the final returns of that (env, alpha)'s seeds.

Writes OUT/results.md (the table in the reference's shape: one row per env, one
column per alpha, PPO (α=0) first) and OUT/learning_curves.png (one panel per env,
one line per alpha: mean over seeds of each run's return, smoothed over 10 episodes,
with a ±std band; x = global step), and prints the table.

Works on a sweep that is still running: it reports the runs that have episodes,
marks the unfinished ones, and lists the runs it skipped and why.
"""

import argparse
import math
import re
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

LAST_EPISODES = 10
RETURN_TAG = "charts/episodic_return"
RUN_NAME = re.compile(r"^(?P<env>.+)__alpha(?P<alpha>[^_]+)__seed(?P<seed>\d+)$")


def load_returns(run_dir):
    """(steps, returns) of a run's training episodes, or a reason to skip it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_dirs = sorted({p.parent for p in run_dir.rglob("events.out.tfevents.*")})
    if not event_dirs:
        return None, "no event file"
    if len(event_dirs) > 1:
        return None, f"{len(event_dirs)} directories of event files (expected one): {', '.join(map(str, event_dirs))}"
    # size_guidance 0 keeps every point; the accumulator reads the files of one run in order
    # and drops what an interrupted attempt logged past its checkpoint (purge on resume).
    acc = EventAccumulator(str(event_dirs[0]), size_guidance={"scalars": 0})
    acc.Reload()
    if RETURN_TAG not in acc.Tags()["scalars"]:
        return None, "no episodes yet"
    events = acc.Scalars(RETURN_TAG)
    return (np.array([e.step for e in events]), np.array([e.value for e in events])), None


def alpha_header(alpha):
    return "PPO (α=0)" if float(alpha) == 0 else f"RPO α={alpha}"


def format_cell(finals):
    return f"{np.mean(finals):.2f} ± {np.std(finals):.2f}"


def smoothed(values, window=LAST_EPISODES):
    """Running mean over the last `window` episodes (fewer at the start)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    end = np.arange(1, len(values) + 1)
    start = np.maximum(0, end - window)
    return (sums[end] - sums[start]) / (end - start)


def plot(groups, envs, alphas, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(3, len(envs))
    nrows = math.ceil(len(envs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False)
    for ax, env in zip(axes.flat, envs):
        for alpha in alphas:
            runs = groups.get((env, alpha))
            if not runs:
                continue
            end = max(r["steps"][-1] for r in runs)
            grid = np.linspace(0, end, 200)
            # Each run on a common step grid; NaN where a run has no data (not started, or
            # not that far yet), so an unfinished seed only counts where it has episodes.
            curves = np.array([np.interp(grid, r["steps"], smoothed(r["returns"]), left=np.nan, right=np.nan)
                               for r in runs])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
                mean, std = np.nanmean(curves, axis=0), np.nanstd(curves, axis=0)
            color = f"C{alphas.index(alpha)}"  # the same alpha has the same colour in every panel
            seeds = f"{len(runs)} seed" + ("s" if len(runs) > 1 else "")
            ax.plot(grid, mean, color=color, label=f"{alpha_header(alpha)} ({seeds})")
            ax.fill_between(grid, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
        ax.set_title(env)
        ax.set_xlabel("global step")
        ax.set_ylabel("episodic return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes.flat[len(envs):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", type=Path, help="the --out directory of sweep.sh")
    parser.add_argument("--out", type=Path, required=True, help="where to write results.md and learning_curves.png")
    args = parser.parse_args(argv)
    if not args.runs_dir.is_dir():
        parser.error(f"{args.runs_dir} is not a directory")

    groups = defaultdict(list)  # (env, alpha) -> runs
    skipped = []
    for run_dir in sorted(p for p in args.runs_dir.iterdir() if p.is_dir()):
        m = RUN_NAME.match(run_dir.name)
        if not m:
            continue  # e.g. sweep.sh's slurm/ folder
        env_file = run_dir / "env_id"
        env = env_file.read_text().strip() if env_file.is_file() else m["env"]
        data, reason = load_returns(run_dir)
        if data is None:
            skipped.append((run_dir.name, reason))
            continue
        steps, returns = data
        groups[env, m["alpha"]].append({
            "seed": int(m["seed"]), "steps": steps, "returns": returns,
            "final": float(np.mean(returns[-LAST_EPISODES:])), "finished": (run_dir / "DONE").is_file(),
        })

    envs = sorted({env for env, _ in groups})
    alphas = sorted({alpha for _, alpha in groups}, key=float)
    rows = [["", *map(alpha_header, alphas)], [":---"] * (len(alphas) + 1)]
    unfinished = 0
    for env in envs:
        row = [env]
        for alpha in alphas:
            runs = groups.get((env, alpha), [])
            cell = format_cell([r["final"] for r in runs]) if runs else "—"
            if any(not r["finished"] for r in runs):
                cell += " †"
                unfinished += sum(not r["finished"] for r in runs)
            row.append(cell)
        rows.append(row)
    table = "\n".join("| " + " | ".join(row) + " |" for row in rows)

    notes = [
        f"Final return of a run: mean of `{RETURN_TAG}` over its last {LAST_EPISODES} training episodes. "
        "Cells: mean ± std (ddof=0) over seeds.",
    ]
    if unfinished:
        notes.append(f"† includes {unfinished} unfinished run(s) (no DONE marker yet): their returns so far.")
    seeds = [f"{env} α={alpha}: {len(runs)} seeds, up to step {max(r['steps'][-1] for r in runs)}"
             for (env, alpha), runs in sorted(groups.items())]
    lines = ["# Results", "", table, "", *notes, "", "Runs per cell:", "", *[f"- {s}" for s in seeds], ""]
    if skipped:
        lines += ["Skipped runs:", "", *[f"- {name}: {why}" for name, why in skipped], ""]
    if envs:
        lines += ["Learning curves (mean over seeds, smoothed over 10 episodes, shaded ± std):", "",
                  "![learning curves](learning_curves.png)", ""]

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text("\n".join(lines).rstrip("\n") + "\n")
    if envs:
        plot(groups, envs, alphas, args.out / "learning_curves.png")

    print(table if envs else "no runs with episodes yet")
    for note in notes:
        print(note)
    for name, why in skipped:
        print(f"skipped {name}: {why}")
    print(f"wrote {args.out / 'results.md'}" + (f" and {args.out / 'learning_curves.png'}" if envs else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
