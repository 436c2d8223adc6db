"""benchmark/report.py's statistics, its episodes CSV, its scores and σ at budgets (--at) and
benchmark/published.csv, with known answers.

No training: run directories are written by hand with TensorBoard's SummaryWriter, as the
trainer writes them (charts/episodic_return and charts/episodic_length at the step an
episode ended, charts/action_std at the end of every iteration, env_id and DONE beside them).
"""

import csv
import gzip
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import table

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmark" / "report.py"
PUBLISHED = ROOT / "benchmark" / "published.csv"
RESULTS = ROOT / "benchmark" / "results"

sys.path.insert(0, str(ROOT / "benchmark"))
import report  # noqa: E402
import score  # noqa: E402


def run_report(*args):
    return subprocess.run([sys.executable, str(REPORT), *map(str, args)], capture_output=True, text=True, timeout=300)


def main_exit(capsys, *args):
    """report.main(args) in this process, which must exit: its exit code and stderr, as run_report gives them."""
    with pytest.raises(SystemExit) as exit:
        report.main([str(a) for a in args])
    return subprocess.CompletedProcess(args, exit.value.code, "", capsys.readouterr().err)


def write_run(root, env, alpha, seed, returns, episode_length=200, done=True, steps=None, other=()):
    """A sweep.sh run directory whose episodes end every episode_length steps (or at `steps`) with these returns;
    other: more (tag, step, value) points to log beside them."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir = root / f"{env.replace('/', '-')}__alpha{alpha}__seed{seed}"
    writer = SummaryWriter(str(run_dir / "runs" / f"{env}__rpo_continuous_action__{seed}__1"))
    steps = steps or [i * episode_length for i in range(1, len(returns) + 1)]
    for step, value in zip(steps, returns, strict=True):
        writer.add_scalar("charts/episodic_return", value, step)
        writer.add_scalar("charts/episodic_length", episode_length, step)
    for tag, step, value in other:
        writer.add_scalar(tag, value, step)
    writer.close()
    (run_dir / "env_id").write_text(env + "\n")
    if done:
        (run_dir / "DONE").write_text("2026-11-25 12:00:00\n")
    return run_dir


def write_csv(path, runs):
    """An episodes CSV: runs = {(env, alpha, seed): [return, ...]}, an episode every 200 steps."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(report.COLUMNS)
        for (env, alpha, seed), returns in runs.items():
            for i, value in enumerate(returns, start=1):
                writer.writerow([env, alpha, seed, i * 200, value, 200])


def estimate(cell):
    """'12.34 [10.00, 15.00]' or '12.34 [10.00, 15.00] (3 of 4 runs)' -> (12.34, 10.0, 15.0)."""
    m = re.match(r"(-?[\d.]+) \[(-?[\d.]+), (-?[\d.]+)\]", cell)
    assert m, cell
    return tuple(float(g) for g in m.groups())


# ------------------------------------------------------------------------------- statistics
def test_iqm_is_the_mean_of_the_middle_half():
    # 8 runs: a quarter (2) cut from each end, whatever the outliers
    assert report.iqm(np.array([100.0, 3, -50, 4, 5, 2, 6, 7])) == pytest.approx((3 + 4 + 5 + 6) / 4)
    # 10 runs: int(2.5) = 2 cut from each end, the middle 6 kept (as rliable, via scipy's trim_mean)
    assert report.iqm(np.arange(10.0)) == pytest.approx(np.mean([2, 3, 4, 5, 6, 7]))
    # pooled over envs: one IQM of all runs together
    pooled = report.pooled_iqm(np.array([0.0, 1, 2, 3]), np.array([10.0, 11, 12, 13]))
    assert pooled == pytest.approx((2 + 3 + 10 + 11) / 4)
    assert report.mean_of_means(np.array([0.0, 1.0]), np.array([10.0, 20.0, 30.0])) == pytest.approx((0.5 + 20) / 2)


def test_probability_of_improvement_counts_ties_as_half():
    # 3 beats 2, 2, 0; 1 beats 0 only: 4 of 6 pairs
    assert report.prob_improvement(np.array([3.0, 1.0]), np.array([2.0, 2.0, 0.0])) == pytest.approx(4 / 6)
    # the same runs: every tie counts 1/2 and the rest split evenly
    x = np.array([1.0, 2.0, 3.0])
    assert report.prob_improvement(x, x) == pytest.approx(0.5)
    assert report.prob_improvement(np.array([1.0, 1.0]), np.array([1.0])) == 0.5
    # the mean over envs of the per-env probabilities
    assert report.mean_prob_improvement(np.array([5.0]), np.array([1.0]), np.array([1.0]), np.array([1.0])) == 0.75


def test_one_method_dominating_has_probability_exactly_one_with_its_interval():
    better, worse = np.array([10.0, 11.0, 12.0, 13.0]), np.array([1.0, 2.0, 3.0])
    assert report.prob_improvement(better, worse) == 1.0
    assert report.prob_improvement(worse, better) == 0.0
    # any resample of runs that all win still wins every pair
    assert report.interval(report.prob_improvement, (better, worse)) == (1.0, 1.0)
    pairs = [better, worse, better + 100, worse + 100]
    assert report.mean_prob_improvement(*pairs) == 1.0
    assert report.interval(report.mean_prob_improvement, pairs) == (1.0, 1.0)


def test_intervals_contain_the_estimate_and_are_reproducible():
    rng = np.random.default_rng(3)
    envs = [rng.normal(loc, 1.0, size=10) for loc in (0.0, 5.0, 9.0)]
    for statistic in (report.pooled_iqm, report.mean_of_means):
        low, high = report.interval(statistic, envs)
        assert low < statistic(*envs) < high
        assert report.interval(statistic, envs) == (low, high)  # fixed seed: same input, same interval
    low, high = report.interval(report.iqm, envs[:1])
    assert low < report.iqm(envs[0]) < high
    # stratified: each env keeps its own runs, so the pooled mean's interval is narrower than an
    # unstratified resampling of all 30 runs would make it (the between-env spread does not enter)
    pooled = np.concatenate(envs)
    assert high - low > 0
    strat_low, strat_high = report.interval(report.mean_of_means, envs)
    flat_low, flat_high = report.interval(np.mean, (pooled,))
    assert strat_high - strat_low < (flat_high - flat_low) / 2
    # too few runs for an interval
    assert report.interval(report.iqm, (np.array([1.0]),)) is None


def test_short_steps_names_the_budget():
    assert [report.short_steps(s) for s in (8_000_000, 999_424, 499_000, 298_865, 1_460_000, 3_800, 950)] == [
        "8M", "1M", "500k", "300k", "1.5M", "3.8k", "950"]


# ------------------------------------------------------------------------------- report from a CSV
SWINGUP = "dm_control/pendulum-swingup-v0"
# the synthetic report's final return of each run, per env and alpha
FINALS = {
    (SWINGUP, "0"): [100.0, 200.0, 300.0, 400.0],
    (SWINGUP, "0.5"): [500.0, 600.0, 700.0, 800.0],
    ("Pendulum-v1", "0"): [-1241.0, -620.5, -310.25, -310.25],
    ("Pendulum-v1", "0.5"): [-620.5, -310.25, -1241.0, 0.0],
    ("Hopper-v4", "0"): [1000.0, 2000.0],
}


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    """A report of a hand-made CSV whose answers are known: every run scores one value throughout."""
    root = tmp_path_factory.mktemp("synthetic")
    runs = {}
    for (env, alpha), values in FINALS.items():
        for seed, value in enumerate(values, start=1):
            # 12 episodes: the first 2 (outside the last 10) must not count
            runs[env, alpha, seed] = [-5000.0, -5000.0] + [value] * 10
    write_csv(root / "episodes.csv", runs)
    result = run_report(root / "episodes.csv", "--out", root / "report")
    assert result.returncode == 0, result.stderr
    return (root / "report" / "results.md").read_text()


def test_per_env_iqm_and_mean_by_hand(synthetic_report):
    rows = table(synthetic_report, ["", "", "runs"], labels=2)
    runs, iqm, mean = rows[SWINGUP, "PPO (α=0)"]
    assert runs == "4"
    # 4 runs: one cut from each end, so the IQM is the mean of 200 and 300
    assert estimate(iqm)[0] == 250.0 and estimate(mean)[0] == 250.0
    low, high = estimate(iqm)[1:]
    assert 100.0 <= low <= 250.0 <= high <= 400.0
    assert estimate(rows[SWINGUP, "RPO α=0.5"][1])[0] == 650.0
    assert estimate(rows["Pendulum-v1", "PPO (α=0)"][1])[0] == pytest.approx((-620.5 - 310.25) / 2, abs=0.005)
    assert rows["Hopper-v4", "PPO (α=0)"][0] == "2"


def test_aggregate_is_over_normalized_scores_by_hand(synthetic_report):
    rows = table(synthetic_report, ["", "envs", "runs"])
    # each env's finals on its range (test_score_ranges_follow_one_rule checks the ranges)
    ppo, rpo = ([score.normalized(env, values) for (env, a), values in FINALS.items() if a == alpha] for alpha in ("0", "0.5"))
    # PPO: 4 dm_control, 4 Pendulum and 2 Hopper-v4 runs pooled, the IQM of the 10 = the middle 6 (int(2.5) = 2 cut
    # from each end); the mean: of the 3 envs' means
    envs, runs, iqm, mean = rows["PPO (α=0)"]
    assert (envs, runs) == ("3", "10")
    assert estimate(iqm)[0] == pytest.approx(np.mean(np.sort(np.concatenate(ppo))[2:8]), abs=5e-4)
    assert estimate(mean)[0] == pytest.approx(np.mean([env.mean() for env in ppo]), abs=5e-4)
    # RPO: 4 dm_control and 4 Pendulum runs pooled, the middle 4
    assert estimate(rows["RPO α=0.5"][2])[0] == pytest.approx(np.mean(np.sort(np.concatenate(rpo))[2:6]), abs=1e-3)
    for cell in rows["PPO (α=0)"][2:] + rows["RPO α=0.5"][2:]:
        point, low, high = estimate(cell)
        assert low <= point <= high
    # the report names each env's range, as score_range has it
    for env in (SWINGUP, "Pendulum-v1", "Hopper-v4"):
        low, high, _ = score.score_range(env)
        assert f"{env} [{low:g}, {high:g}]" in synthetic_report
    assert "Left out" not in synthetic_report


def test_an_env_without_a_range_is_left_out_of_the_aggregates(tmp_path):
    write_csv(tmp_path / "e.csv", {("MountainCarContinuous-v0", "0", s): [50.0] * 10 for s in (1, 2)})
    assert run_report(tmp_path / "e.csv", "--out", tmp_path / "r").returncode == 0
    md = (tmp_path / "r" / "results.md").read_text()
    assert "Left out of the aggregates" in md and "MountainCarContinuous-v0." in md


def test_score_ranges_follow_one_rule():
    # dm_control: the bounds of its return; Gym/MuJoCo: random play .. the best published mean (any table, any alpha)
    assert score.score_range("dm_control/cartpole-balance-v0")[:2] == (0.0, 1000.0)
    assert score.score_range("Pendulum-v1")[:2] == (-1241.0, -151.08)
    assert score.score_range("Reacher-v4")[:2] == (-43.4, -3.93)  # RPO alpha=0.01; alpha=0.5 scored -66.35
    assert score.score_range("InvertedDoublePendulum-v4")[:2] == (59.1, 5644.0)  # PPO of the alpha=0.5 table
    assert score.score_range("MountainCarContinuous-v0") is None  # not published
    assert score.score_range("Pusher-v4")[:2] == (-149.2, -30.35)  # random play measured on mujoco 2.3.7; PPO
    # the table's random play is what random_play measures (Reacher: 100 episodes of 50 steps)
    assert score.random_play("Reacher-v4") == score.RANDOM_PLAY["Reacher-v4"] == -43.4


def test_probability_of_improvement_in_the_report(synthetic_report):
    rows = table(synthetic_report, ["", "P(RPO α=0.5 > PPO) [95% CI]"])
    assert rows[SWINGUP] == ["1.00 [1.00, 1.00]"]  # every RPO run above every PPO run
    # Pendulum, RPO -620.5 -310.25 -1241 0 against PPO -1241 -620.5 -310.25 -310.25: wins 1+2+0+4,
    # ties 1+2+1+0 of 16 pairs -> (7 + 4/2) / 16
    assert estimate(rows["Pendulum-v1"][0])[0] == pytest.approx(9 / 16, abs=0.005)
    assert rows["Hopper-v4"] == ["—"]  # no RPO runs
    point = estimate(rows["mean over envs"][0])[0]
    assert point == pytest.approx((1 + 9 / 16) / 2, abs=0.005)
    assert rows["mean over envs"][0].endswith("(2 envs)")


def test_three_alphas_compare_every_pair_beside_the_published_ones(tmp_path):
    # Reacher-v4 at PPO, 0.01 and 0.5, three seeds each: 0.01 above everything, 0.5 below everything
    runs = {}
    for alpha, finals in (("0", [-6.0, -5.0, -4.0]), ("0.01", [-3.5, -3.0, -2.5]), ("0.5", [-70.0, -60.0, -5.0])):
        for seed, value in enumerate(finals, start=1):
            runs["Reacher-v4", alpha, seed] = [value] * 10
    write_csv(tmp_path / "e.csv", runs)
    result = run_report(tmp_path / "e.csv", "--out", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    md = (tmp_path / "r" / "results.md").read_text()
    assert table(md, [""]) == {"Reacher-v4": ["-5.00 ± 0.82", "-3.00 ± 0.41", "-45.00 ± 28.58"]}
    assert next(line for line in md.splitlines() if line.startswith("|  | PPO")) == \
        "|  | PPO (α=0) | RPO α=0.01 | RPO α=0.5 |"
    # published beside each alpha: PPO's first row (the alpha=0.01 table), then each RPO table's
    assert table(md, ["", "ours: steps, seeds"])["Reacher-v4"] == [
        "2k steps, 3 seeds", "-5.00 ± 0.82", "-4.65 ± 0.96", "-3.00 ± 0.41", "-3.93 ± 0.19", "-45.00 ± 28.58",
        "-66.35 ± 0.66"]
    # every pair: the smaller RPO alpha first, PPO always second
    header = ["", "P(RPO α=0.01 > RPO α=0.5) [95% CI]", "P(RPO α=0.01 > PPO) [95% CI]", "P(RPO α=0.5 > PPO) [95% CI]"]
    rows = table(md, header)
    # 0.01's -3.5, -3, -2.5 beat each of 0.5's -70, -60, -5 and PPO's -6, -5, -4; 0.5's -5 beats -6 and ties -5
    assert [estimate(cell)[0] for cell in rows["Reacher-v4"]] == [1.0, 1.0, pytest.approx(1 / 9 + 0.5 / 9, abs=0.005)]
    assert rows["mean over envs"][0].endswith("(1 env)")
    # the aggregate per alpha, on Reacher's range: 0.01's runs score -3.5, -3, -2.5, so its IQM is -3's
    agg = table(md, ["", "envs", "runs"])
    assert estimate(agg["RPO α=0.01"][2])[0] == pytest.approx(score.normalized("Reacher-v4", -3.0), abs=5e-4)


def test_published_column_beside_ours(synthetic_report):
    rows = table(synthetic_report, ["", "ours: steps, seeds"])
    header = next(line for line in synthetic_report.splitlines() if line.startswith("|  | ours: steps, seeds"))
    assert "PPO (α=0), published (8M steps, 10 seeds)" in header
    assert "RPO α=0.5, published (8M steps, 10 seeds)" in header
    # 12 episodes of 200 steps: 2400 steps; PPO, PPO published, RPO, RPO published
    assert rows["Pendulum-v1"] == ["2.4k steps, 4 seeds", "-620.50 ± 379.98", "-1141.98 ± 135.55",
                                   "-542.94 ± 458.87", "-151.08 ± 3.73"]
    assert rows[SWINGUP][1:] == ["250.00 ± 111.80", "464.82 ± 379.09", "650.00 ± 111.80", "776.21 ± 20.15"]
    # Hopper-v4's PPO is in the reference's α = 0.01 table first (2741.42), then in its α = 0.5 one
    assert rows["Hopper-v4"][1:] == ["1500.00 ± 500.00", "2741.42 ± 269.11", "—", "—"]


def test_steps_per_env_row_when_budgets_differ(tmp_path):
    write_csv(tmp_path / "e.csv", {("Pendulum-v1", "0", 1): [-900.0] * 50, ("Pendulum-v1", "0", 2): [-800.0] * 50,
                                   (SWINGUP, "0", 1): [10.0] * 5, (SWINGUP, "0", 2): [20.0] * 5,
                                   (SWINGUP, "0", 3): [30.0] * 5})
    assert run_report(tmp_path / "e.csv", "--out", tmp_path / "r").returncode == 0
    md = (tmp_path / "r" / "results.md").read_text()
    rows = table(md, ["", "ours: steps, seeds"])
    assert rows["Pendulum-v1"][0] == "10k steps, 2 seeds"
    assert rows[SWINGUP][0] == "1k steps, 3 seeds"
    assert (tmp_path / "r" / "sample_efficiency.png").read_bytes()[:4] == b"\x89PNG"
    # one sample-efficiency panel per budget, named in the figure; the report points to it
    assert "one panel per step budget" in md and "![sample efficiency](sample_efficiency.png)" in md


# ------------------------------------------------------------------------------- run directories and export
@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep") / "runs"
    rng = np.random.default_rng(7)
    for env, length, episodes in (("Pendulum-v1", 200, 25), (SWINGUP, 1000, 6)):
        for alpha in ("0.5", "0"):
            for seed in (1, 2, 3):
                write_run(root, env, alpha, seed, rng.normal(-500 if env == "Pendulum-v1" else 300, 80, episodes),
                          episode_length=length)
    (root / "slurm").mkdir()  # sweep.sh's own folder is not a run
    return root


def test_export_then_read_gives_the_same_episodes(run_dirs, tmp_path, capsys):
    groups, skipped = report.load_run_dirs(run_dirs)
    assert skipped == [] and len(groups) == 4 and sum(map(len, groups.values())) == 12
    assert report.main([str(run_dirs), "--export", str(tmp_path / "episodes.csv.gz")]) == 0
    assert "exported 186 episodes of 12 runs" in capsys.readouterr().out  # (25 + 6) x 2 alphas x 3 seeds
    back = report.load_csv(tmp_path / "episodes.csv.gz")
    assert back.keys() == groups.keys()
    for key in groups:
        assert [r["seed"] for r in back[key]] == [r["seed"] for r in groups[key]]
        for ours, theirs in zip(groups[key], back[key]):
            for field in ("steps", "returns", "lengths"):
                np.testing.assert_array_equal(ours[field], theirs[field])
            assert ours["final"] == theirs["final"]
    # the rows themselves: the header, then what the event files hold, float32 values exactly
    rows = list(csv.reader(gzip.open(tmp_path / "episodes.csv.gz", "rt")))
    assert rows[0] == list(report.COLUMNS)
    assert rows[1][:4] == ["Pendulum-v1", "0", "1", "200"] and rows[1][5] == "200"
    assert float(rows[1][4]) == float(np.float32(float(rows[1][4])))
    assert rows[-1][:4] == [SWINGUP, "0.5", "3", "6000"] and rows[-1][5] == "1000"
    assert len(rows) == 1 + 186
    # the same export twice is the same bytes (no time stamp in the gzip header)
    report.export_csv({None: back}, tmp_path / "again.csv.gz")
    assert (tmp_path / "again.csv.gz").read_bytes() == (tmp_path / "episodes.csv.gz").read_bytes()


def test_report_from_run_directories_equals_report_from_their_export(run_dirs, tmp_path):
    result = run_report(run_dirs, "--out", tmp_path / "from_dirs", "--export", tmp_path / "episodes.csv.gz")
    assert result.returncode == 0, result.stderr
    assert report.main([str(tmp_path / "episodes.csv.gz"), "--out", str(tmp_path / "from_csv")]) == 0
    md = (tmp_path / "from_csv" / "results.md").read_bytes()
    assert md == (tmp_path / "from_dirs" / "results.md").read_bytes()
    md = md.decode()
    assert str(tmp_path) not in md and "episodes.csv" not in md  # nothing that names where it came from
    assert "| Pendulum-v1 | PPO (α=0) | 3 |" in md and "mean over envs" in md
    for name in ("results.md", "learning_curves.png", "sample_efficiency.png"):
        assert (tmp_path / "from_csv" / name).is_file()


def test_unfinished_runs_are_marked_from_run_directories(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "Pendulum-v1", "0", 1, [-300.0] * 12, done=False)
    write_run(runs, "Pendulum-v1", "0", 2, [-100.0] * 12)
    (runs / "Pendulum-v1__alpha0__seed3").mkdir()  # not started
    result = run_report(runs, "--out", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    md = (tmp_path / "r" / "results.md").read_text()
    assert "| Pendulum-v1 | -200.00 ± 100.00 † |" in md
    assert "† includes 1 unfinished run(s)" in md and "- Pendulum-v1__alpha0__seed3: no event file" in md


def test_a_resumed_run_counts_the_episodes_of_its_resume_and_says_nothing_of_the_purge(tmp_path):
    # As the trainer resumes: a second event file, whose purge_step drops what the stopped attempt logged after its
    # checkpoint (step 1000): episodes 1-5 of the first attempt (-500), then 7 of the resumed one (-100)
    from torch.utils.tensorboard import SummaryWriter

    run_dir = write_run(tmp_path / "runs", "Pendulum-v1", "0", 1, [-500.0] * 12)
    [log_dir] = {p.parent for p in run_dir.rglob("events.out.tfevents.*")}
    writer = SummaryWriter(str(log_dir), purge_step=1001)
    for step in range(1200, 2401, 200):
        writer.add_scalar("charts/episodic_return", -100.0, step)
        writer.add_scalar("charts/episodic_length", 200, step)
    writer.close()
    result = run_report(tmp_path / "runs", "--out", tmp_path / "r")
    assert (result.returncode, result.stderr) == (0, "")
    assert "| Pendulum-v1 | -220.00 ± 0.00 |" in (tmp_path / "r" / "results.md").read_text()  # 3 x -500, 7 x -100


def test_run_whose_lengths_do_not_pair_with_returns_is_skipped(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run_dir = tmp_path / "runs" / "Pendulum-v1__alpha0__seed1"
    writer = SummaryWriter(str(run_dir / "runs" / "x"))
    writer.add_scalar("charts/episodic_return", -1.0, 200)
    writer.close()
    _, skipped = report.load_run_dirs(tmp_path / "runs")
    assert skipped == [("Pendulum-v1__alpha0__seed1", "charts/episodic_return and charts/episodic_length "
                        "do not pair up (1 against 0 points)")]


# ------------------------------------------------------------------------------- implementations compared (--arms)
CHEETAH = "HalfCheetah-v4"
# final returns per arm and cell; the reference first, as benchmark/parity.sh names the arms
ARMS = {
    "reference-mujoco237": {(CHEETAH, "0.01"): [1000.0, 2000.0, 3000.0, 4000.0, 5000.0], ("Pendulum-v1", "0.5"): [-200.0, -150.0]},
    "ours-mujoco237": {(CHEETAH, "0.01"): [1500.0, 2500.0, 3500.0, 4500.0], ("Pendulum-v1", "0.5"): [-160.0, -140.0]},
    "ours-mujoco3": {(CHEETAH, "0.01"): [3000.0, 3000.0, 6000.0]},
}


@pytest.fixture(scope="module")
def arms_report(tmp_path_factory):
    """Three arms of sweep.sh directories (every episode of a run scores its final return), their
    comparison with --above 3000, and its export."""
    root = tmp_path_factory.mktemp("arms")
    for arm, cells in ARMS.items():
        for (env, alpha), values in cells.items():
            for seed, value in enumerate(values, start=1):
                write_run(root / arm, env, alpha, seed, [value] * 10, episode_length=1000 if env == CHEETAH else 200)
    specs = [f"{arm}={root / arm}" if arm != "ours-mujoco3" else str(root / arm) for arm in ARMS]  # a name, or the folder's
    result = run_report("--arms", *specs, "--above", "3000", "--out", root / "report", "--export", root / "episodes.csv.gz")
    assert result.returncode == 0, result.stderr
    assert "exported 160 episodes of 16 runs of 3 arms" in result.stdout
    return root, (root / "report" / "results.md").read_text()


def test_arms_per_env_and_alpha_by_hand(arms_report):
    _, md = arms_report
    assert "Arms: reference-mujoco237, ours-mujoco237, ours-mujoco3; each is compared with the first, reference-mujoco237." in md
    assert table(md, ["", "", "reference-mujoco237"], labels=2) == {
        (CHEETAH, "RPO α=0.01"): ["3000.00 ± 1414.21", "3000.00 ± 1118.03", "4000.00 ± 1414.21"],
        ("Pendulum-v1", "RPO α=0.5"): ["-175.00 ± 25.00", "-150.00 ± 10.00", "—"]}
    rows = table(md, ["", "", "arm", "runs", "IQM [95% CI]", "mean [95% CI]", "above 3000",
                      "P(arm > reference-mujoco237) [95% CI]"], labels=3)
    ref, ours237, ours3 = (rows[CHEETAH, "RPO α=0.01", arm] for arm in ARMS)
    # IQM: of 5 runs one is cut from each end (2000, 3000, 4000), of 4 one (2500, 3500), of 3 none
    assert [row[0] for row in (ref, ours237, ours3)] == ["5", "4", "3"]
    assert [estimate(row[1])[0] for row in (ref, ours237, ours3)] == [3000.0, 3000.0, 4000.0]
    assert [estimate(row[2])[0] for row in (ref, ours237, ours3)] == [3000.0, 3000.0, 4000.0]
    assert [row[3] for row in (ref, ours237, ours3)] == ["2 of 5", "2 of 4", "1 of 3"]  # 3000 is not above 3000
    assert ref[4] == "—"
    # P(ours > reference): 1500, 2500, 3500, 4500 beat 1, 2, 3, 4 of the 5 reference runs: 10 of 20 pairs;
    # 3000 beats 1000 and 2000 and ties 3000 (2.5 each, twice), 6000 beats all 5: 10 of 15
    assert estimate(ours237[4])[0] == 0.5 and estimate(ours3[4])[0] == pytest.approx(10 / 15, abs=0.005)
    for row in (ref, ours237, ours3):
        for cell in row[1:3] + row[4:] if row is not ref else row[1:3]:
            point, low, high = estimate(cell)
            assert low <= point <= high
    # Pendulum: -160 beats -200 only, -140 both: 3 of 4; two runs each, so intervals
    assert estimate(rows["Pendulum-v1", "RPO α=0.5", "ours-mujoco237"][4])[0] == 0.75
    assert ("Pendulum-v1", "RPO α=0.5", "ours-mujoco3") not in rows
    assert "above 3000: how many of the runs have a final return above 3000 (`--above 3000`)." in md
    assert "- ours-mujoco3: HalfCheetah-v4 α=0.01: 3 seeds, up to step 10000" in md


def test_arms_aggregate_over_cells_by_hand(arms_report):
    _, md = arms_report
    rows = table(md, ["", "cells", "runs", "normalized IQM [95% CI]"])
    pooled = np.sort(np.concatenate([score.normalized(env, values) for (env, _), values
                                     in ARMS["reference-mujoco237"].items()]))  # 7 runs: 1 cut from each end
    assert rows["reference-mujoco237"][:2] == ["2", "7"]
    assert estimate(rows["reference-mujoco237"][2])[0] == pytest.approx(np.mean(pooled[1:6]), abs=5e-4)
    assert rows["reference-mujoco237"][4] == "—"
    # mean over cells of P(arm > reference): (0.5 + 0.75) / 2 over 2 cells; ours-mujoco3 has one cell
    assert rows["ours-mujoco237"][4].startswith(f"{0.625:.2f} [") and rows["ours-mujoco237"][4].endswith("(2 cells)")
    assert estimate(rows["ours-mujoco3"][4])[0] == pytest.approx(10 / 15, abs=0.005)
    assert rows["ours-mujoco3"][:2] == ["1", "3"] and rows["ours-mujoco3"][4].endswith("(1 cell)")


def test_arms_rebuild_from_their_export_byte_for_byte(arms_report, tmp_path):
    root, md = arms_report
    rows = list(csv.reader(gzip.open(root / "episodes.csv.gz", "rt")))
    assert rows[0] == ["arm", *report.COLUMNS]
    # arms in the order given (the reference first, though not first by name), then env, alpha and seed
    assert list(dict.fromkeys(row[0] for row in rows[1:])) == list(ARMS)
    assert rows[1] == ["reference-mujoco237", CHEETAH, "0.01", "1", "1000", "1000.0", "1000"]
    assert len(rows) == 1 + 160
    # the export alone rebuilds the comparison; --above as results.md names it
    result = run_report(root / "episodes.csv.gz", "--above", "3000", "--out", tmp_path, "--export", tmp_path / "again.csv.gz")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "results.md").read_text() == md
    assert (tmp_path / "again.csv.gz").read_bytes() == (root / "episodes.csv.gz").read_bytes()
    assert (tmp_path / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    # arms read from one-arm CSVs are the same arms
    for arm in ARMS:
        assert report.main([str(root / arm), "--export", str(tmp_path / f"{arm}.csv")]) == 0
    assert report.main(["--arms", *(f"{arm}={tmp_path / arm}.csv" for arm in ARMS), "--above", "3000",
                        "--out", str(tmp_path / "r2")]) == 0
    assert (tmp_path / "r2" / "results.md").read_text() == md


def test_above_in_a_sweep_report(tmp_path):
    write_csv(tmp_path / "e.csv", {("Pendulum-v1", "0", s): [v] * 10 for s, v in ((1, -300.0), (2, -100.0), (3, -150.0))})
    result = run_report(tmp_path / "e.csv", "--above", "-160", "--out", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    md = (tmp_path / "r" / "results.md").read_text()
    assert table(md, ["", "", "runs", "IQM [95% CI]", "mean [95% CI]", "above -160"], labels=2)[
        "Pendulum-v1", "PPO (α=0)"][3] == "2 of 3"
    assert "(`--above -160`)" in md


# ------------------------------------------------------------------------------- scores and σ at budgets (--at)
WALKER = "dm_control/walker-walk-v0"
# Per alpha and seed: (the return of every episode that ends by step 1000, of every later one, the last episode's
# step). An episode ends every 100 steps, and RPO's seed 3 has one more at 1980 (99% of 2000: it reached 2000),
# seed 4 none after 1500 (it did not). The last 10 episodes by step 1000 are the first 10, by 2000 all later ones.
BUDGET_RUNS = {
    ("0", 1): (10.0, 100.0, 2000), ("0", 2): (20.0, 200.0, 2000), ("0", 3): (30.0, 300.0, 2000),
    ("0.5", 1): (15.0, 250.0, 2000), ("0.5", 2): (25.0, 150.0, 2000), ("0.5", 3): (35.0, 400.0, 1980),
    ("0.5", 4): (45.0, 500.0, 1500),
}
ITERATION = 250  # σ is logged every 250 steps, the last time at or before the run's last episode


def episodes(alpha, seed):
    early, late, end = BUDGET_RUNS[alpha, seed]
    steps = [*range(100, end + 1, 100)] if end % 100 == 0 else [*range(100, end, 100), end]
    return [(step, early if step <= 1000 else late) for step in steps]


def sigma(alpha, seed, step):
    """PPO's σ shrinks, faster for a higher seed; RPO's grows."""
    return 1 - seed * step / 10_000 if alpha == "0" else 1 + seed * step / 10_000


def sigmas(alpha, seed):
    end = BUDGET_RUNS[alpha, seed][2]
    return [(step, sigma(alpha, seed, step)) for step in range(ITERATION, end + 1, ITERATION)]


# The evaluation after training (eval/episodic_return, logged at step = episode index): RPO's seed 4 has none.
EVALUATIONS = {("0", 1): [100.0, 120.0], ("0", 2): [200.0, 220.0], ("0", 3): [300.0, 340.0],
               ("0.5", 1): [500.0, 520.0], ("0.5", 2): [600.0, 600.0], ("0.5", 3): [250.0, 270.0]}


@pytest.fixture(scope="module")
def budget_sweep(tmp_path_factory):
    """BUDGET_RUNS as sweep.sh's run directories; their report with --at (budgets given out of order, in both
    notations) and its export; then the report made from the export alone."""
    root = tmp_path_factory.mktemp("budgets")
    for alpha, seed in BUDGET_RUNS:
        steps, returns = zip(*episodes(alpha, seed))
        other = [(tag, step, value) for step, s in sigmas(alpha, seed)
                 for tag, value in (("charts/action_std", s), ("losses/entropy", -s))]  # other tags are left alone
        other += [("eval/episodic_return", i, value) for i, value in enumerate(EVALUATIONS.get((alpha, seed), []))]
        write_run(root / "runs", WALKER, alpha, seed, returns, episode_length=100, steps=steps, other=other)
    at = ("--at", "3k,1000, 2k,50")
    export = root / "export" / "episodes.csv.gz"
    made = run_report(root / "runs", "--out", root / "from_dirs", "--export", export, *at)
    assert made.returncode == 0, made.stderr
    rebuilt = run_report(export, "--out", root / "from_csv", *at)
    assert rebuilt.returncode == 0, rebuilt.stderr
    return root, made.stdout, (root / "from_dirs" / "results.md").read_text()


def test_scores_at_budgets_by_hand(budget_sweep):
    _, _, md = budget_sweep
    rows = table(md, ["", "steps", "PPO (α=0): IQM [95% CI]", "RPO α=0.5: IQM [95% CI]", "P(RPO α=0.5 > PPO) [95% CI]"],
                 labels=2)
    assert list(rows) == [(WALKER, "50"), (WALKER, "1k"), (WALKER, "2k"), (WALKER, "3k")]  # sorted, as --at writes them
    # step 50: every run reached it, but none had an episode by then
    assert rows[WALKER, "50"] == ["n/a (0 of 3 runs)", "n/a (0 of 4 runs)", "—"]
    # 1k: the mean of the first 10 episodes. PPO 10, 20, 30: the IQM of 3 runs cuts none (int(0.75) = 0);
    # RPO 15, 25, 35, 45: of 4 one from each end, (25 + 35) / 2
    ppo, rpo, p = rows[WALKER, "1k"]
    assert estimate(ppo)[0] == 20.0 and estimate(rpo)[0] == 30.0
    assert "of" not in ppo + rpo  # every run counts
    # P(RPO > PPO): 15 beats 10; 25 beats 10, 20; 35 and 45 beat all three: 9 of 12 pairs
    assert estimate(p)[0] == 0.75
    # 2k: the episodes after step 1000. RPO's seed 3 ended at 1980, 99% of 2000: it counts; seed 4 at 1500 does not.
    ppo, rpo, p = rows[WALKER, "2k"]
    assert estimate(ppo)[0] == 200.0
    assert estimate(rpo)[0] == pytest.approx((250 + 150 + 400) / 3, abs=0.005) and rpo.endswith(" (3 of 4 runs)")
    # RPO 250, 150, 400 against PPO 100, 200, 300: 250 beats 2, 150 beats 1, 400 beats 3: 6 of 9 pairs
    assert estimate(p)[0] == pytest.approx(6 / 9, abs=0.005)
    for cell in (ppo, rpo, p):
        point, low, high = estimate(cell)
        assert low <= point <= high
    # 3k: no run went that far
    assert rows[WALKER, "3k"] == ["n/a (0 of 3 runs)", "n/a (0 of 4 runs)", "—"]
    # the flag is named, in one notation, so that the report can be rebuilt
    assert "(`--at 50,1k,2k,3k`)" in md


def test_sigma_at_budgets_by_hand(budget_sweep):
    root, _, md = budget_sweep
    rows = table(md, ["", "steps", "PPO (α=0)", "RPO α=0.5"], labels=2)
    # the last σ logged at or before 1000 is 1000's: PPO 1 - 0.1 s for seeds 1-3, RPO 1 + 0.1 s for seeds 1-4
    assert rows[WALKER, "1k"] == ["0.800 (0.700–0.900)", "1.250 (1.100–1.400)"]  # RPO: median (1.2 + 1.3) / 2
    # at 2000, 2000's: PPO 0.8, 0.6, 0.4; RPO 1.2, 1.4 and seed 3's last, 1750's: 1 + 3 * 0.175 = 1.525.
    # RPO's seed 4 (ended at 1500) did not reach 2000.
    assert rows[WALKER, "2k"] == ["0.600 (0.400–0.800)", "1.400 (1.200–1.525) (3 of 4 runs)"]
    assert rows[WALKER, "50"] == ["n/a (0 of 3 runs)", "n/a (0 of 4 runs)"]  # nothing logged yet
    assert rows[WALKER, "3k"] == ["n/a (0 of 3 runs)", "n/a (0 of 4 runs)"]
    assert "![policy σ](action_std.png)" in md
    assert (root / "from_dirs" / "action_std.png").read_bytes()[:4] == b"\x89PNG"


def test_the_mean_action_after_training_by_hand(budget_sweep):
    _, _, md = budget_sweep
    rows = table(md, ["", "PPO (α=0): evaluation IQM [95% CI]", "PPO (α=0): training IQM",
                      "RPO α=0.5: evaluation IQM [95% CI]", "RPO α=0.5: training IQM", "P(RPO α=0.5 > PPO) [95% CI]"])
    ppo, ppo_training, rpo, rpo_training, p = rows[WALKER]
    # the runs' mean evaluations: PPO 110, 210, 320, RPO 510, 600, 260 (seed 4 has none); IQMs of 3 cut nothing
    assert estimate(ppo)[0] == pytest.approx(640 / 3, abs=0.005) and "of" not in ppo
    assert estimate(rpo)[0] == pytest.approx(1370 / 3, abs=0.005) and rpo.endswith(" (3 of 4 runs)")
    # the same runs' final training returns: their last 10 episodes, PPO 100, 200, 300, RPO 250, 150, 400
    assert ppo_training == "200.00" and rpo_training == "266.67"
    # 510 and 600 beat all three of PPO, 260 beats 110 and 210: 8 of 9 pairs
    assert estimate(p)[0] == pytest.approx(8 / 9, abs=0.005)


def test_report_from_the_export_is_byte_for_byte(budget_sweep):
    root, stdout, md = budget_sweep
    export = root / "export"
    assert f"and their σ to {export / 'episodes.action_std.csv.gz'}" in stdout
    assert (root / "from_csv" / "results.md").read_text() == md
    assert (root / "from_csv" / "action_std.png").is_file()
    # the σ file: one row per logged point, runs in the episodes' order, exact decimals of the logged float32
    with gzip.open(export / "episodes.action_std.csv.gz", "rt") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["env_id", "rpo_alpha", "seed", "global_step", "action_std"]
    assert rows[1] == [WALKER, "0", "1", "250", repr(float(np.float32(sigma("0", 1, 250))))]
    assert len(rows) == 1 + sum(len(sigmas(alpha, seed)) for alpha, seed in BUDGET_RUNS)
    assert rows[-1][:4] == [WALKER, "0.5", "4", "1500"]
    # the evaluation file: one row per episode, in the runs' order
    assert f"and their evaluation to {export / 'episodes.eval.csv.gz'}" in stdout
    with gzip.open(export / "episodes.eval.csv.gz", "rt") as f:
        rows = list(csv.reader(f))
    assert rows == [["env_id", "rpo_alpha", "seed", "episode", "eval_return"],
                    *([WALKER, alpha, str(seed), str(i), repr(value)] for (alpha, seed), values in EVALUATIONS.items()
                      for i, value in enumerate(values))]
    # exported again from the export: the same bytes, all three files
    again = root / "again" / "episodes.csv.gz"
    assert report.main([str(export / "episodes.csv.gz"), "--export", str(again)]) == 0
    for name in ("episodes.csv.gz", "episodes.action_std.csv.gz", "episodes.eval.csv.gz"):
        assert (again.parent / name).read_bytes() == (export / name).read_bytes()


def test_without_sigma_file_or_at_the_report_is_as_before(budget_sweep, tmp_path):
    # an episodes CSV alone (as every study committed before σ was exported) gives no σ section and no plot,
    # and without --at no budgets: what was committed rebuilds unchanged
    root, _, _ = budget_sweep
    csv_only = tmp_path / "episodes.csv.gz"
    csv_only.write_bytes((root / "export" / "episodes.csv.gz").read_bytes())
    assert report.main([str(csv_only), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "results.md").read_text()
    assert "σ" not in md and "## Scores at budgets" not in md and "--at" not in md and "evaluation" not in md
    assert not (tmp_path / "r" / "action_std.png").exists()
    # an export of runs without σ or evaluation leaves no stale file of them beside it
    (tmp_path / "out").mkdir()
    for name in ("episodes.action_std.csv.gz", "episodes.eval.csv.gz"):
        (tmp_path / "out" / name).write_bytes(b"stale")
    assert report.main([str(csv_only), "--export", str(tmp_path / "out" / "episodes.csv.gz")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["episodes.csv.gz"]


def test_a_run_of_the_trainer_reaches_its_budget():
    # 8M steps in batches of 2048 are 7,999,488; walker-walk's last episode (1000 steps each) ends at 7,999,000
    steps = np.arange(1000, 7_999_001, 1000)
    run = score.make_run(1, steps, np.ones(len(steps)), np.full(len(steps), 1000), finished=True)
    assert score.reached(run, 8_000_000) and score.score_at_budget(run, 8_000_000) == 1.0
    short = score.make_run(1, steps[:7_919], np.ones(7_919), np.full(7_919, 1000), finished=True)  # ends at 7,919,000
    assert not score.reached(short, 8_000_000) and score.score_at_budget(short, 8_000_000) is None


def test_budgets_in_either_notation():
    assert report.parse_budgets("8M, 1M,2.5M,1000000,500k") == [500_000, 1_000_000, 2_500_000, 8_000_000]
    assert [report.budget_text(s) for s in (500_000, 1_000_000, 2_500_000, 8_000_000, 999_424, 50)] == [
        "500k", "1M", "2.5M", "8M", "999.424k", "50"]


# ------------------------------------------------------------------------------- bad input
def one_line_error(result, message):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("report.py: error: "), result.stderr
    assert message in result.stderr, result.stderr


def test_missing_path_is_one_line(tmp_path):
    one_line_error(run_report(tmp_path / "nope", "--out", tmp_path / "r"), "nope does not exist")
    assert not (tmp_path / "r").exists()


def test_csv_missing_columns_is_one_line(tmp_path):
    (tmp_path / "e.csv").write_text("env_id,rpo_alpha,seed,global_step,episodic_return\nPendulum-v1,0,1,200,-5\n")
    one_line_error(run_report(tmp_path / "e.csv", "--out", tmp_path / "r"), "missing column(s) episodic_length")
    (tmp_path / "empty.csv").write_text("")
    one_line_error(run_report(tmp_path / "empty.csv", "--out", tmp_path / "r"), "missing column(s) env_id")


def test_csv_with_a_bad_value_names_its_line(tmp_path):
    write_csv(tmp_path / "e.csv", {("Pendulum-v1", "0", 1): [-5.0, -6.0]})
    text = (tmp_path / "e.csv").read_text().replace("-6.0", "lots")
    (tmp_path / "e.csv").write_text(text)
    one_line_error(run_report(tmp_path / "e.csv", "--out", tmp_path / "r"), "e.csv, line 3: not a number")
    (tmp_path / "junk.csv.gz").write_bytes(b"\x1f\x8b not really gzip")
    one_line_error(run_report(tmp_path / "junk.csv.gz", "--out", tmp_path / "r"), "not a CSV or gzipped CSV")


def test_nothing_to_do_and_unknown_flags_are_one_line(tmp_path):
    one_line_error(run_report(tmp_path), "nothing to do")
    one_line_error(run_report(tmp_path, "--bogus"), "unrecognized arguments: --bogus")


def test_arms_bad_input_is_one_line(tmp_path, capsys):
    def fails(*args):
        return main_exit(capsys, *args)

    for arm in ("a", "b"):
        write_csv(tmp_path / f"{arm}.csv", {("Pendulum-v1", "0", 1): [-5.0]})
    one_line_error(run_report("--arms", tmp_path / "a.csv", "--out", tmp_path / "r"), "--arms needs two or more")
    one_line_error(fails("--arms", f"x={tmp_path / 'a.csv'}", f"x={tmp_path / 'b.csv'}", "--out", tmp_path / "r"),
                   "two arms are named x")
    one_line_error(fails("--arms", tmp_path / "a.csv", tmp_path / "nope", "--out", tmp_path / "r"), "nope does not exist")
    one_line_error(fails(tmp_path / "a.csv", "--arms", tmp_path / "a.csv", tmp_path / "b.csv", "--out", tmp_path / "r"),
                   "give one input")
    one_line_error(fails("--out", tmp_path / "r"), "give one input")
    one_line_error(fails(tmp_path / "a.csv", "--above", "lots", "--out", tmp_path / "r"), "--above: invalid float")
    one_line_error(fails(tmp_path / "a.csv", "--above", "nan", "--out", tmp_path / "r"), "--above must be a finite number")
    # a CSV of several arms is one input, not an arm
    assert report.main(["--arms", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--export", str(tmp_path / "ab.csv")]) == 0
    assert [row[0] for row in csv.reader(open(tmp_path / "ab.csv"))] == ["arm", "a", "b"]  # named after the files
    one_line_error(fails("--arms", tmp_path / "ab.csv", tmp_path / "b.csv", "--out", tmp_path / "r"),
                   "ab.csv: holds arms of its own")
    assert not (tmp_path / "r").exists()
    with pytest.raises(report.BadInput, match="holds 2 arms"):
        report.load_csv(tmp_path / "ab.csv")


def test_bad_budgets_are_one_line(budget_sweep, tmp_path, capsys):
    root, _, _ = budget_sweep
    export = root / "export" / "episodes.csv.gz"
    one_line_error(run_report(export, "--at", "1M,lots", "--out", tmp_path / "r"),
                   "argument --at: expected whole step counts")
    for bad in ("", "0", "-1M", "1.5", "nan", "inf", "1M,,2M", "M", "2 M M"):
        one_line_error(main_exit(capsys, export, "--at", bad, "--out", tmp_path / "r"), "argument --at")
    # a comparison of arms has no budgets
    one_line_error(main_exit(capsys, "--arms", f"a={export}", f"b={export}", "--at", "1k", "--out", tmp_path / "r"),
                   "--at is for one sweep's report")
    assert not (tmp_path / "r").exists()


def test_bad_sigma_file_is_one_line(budget_sweep, tmp_path, capsys):
    root, _, _ = budget_sweep
    export = tmp_path / "episodes.csv"
    with gzip.open(root / "export" / "episodes.csv.gz", "rt") as f:
        export.write_text(f.read())
    std = tmp_path / "episodes.action_std.csv"
    for text, message in (
            ("env_id,rpo_alpha,seed,global_step,action_std\nHopper-v4,0,1,2048,0.5\n",
             "holds the σ of runs that episodes.csv has no episodes of, e.g. Hopper-v4 α=0 seed 1"),
            (f"env_id,rpo_alpha,seed,global_step,action_std\n{WALKER},0,1,2048,wide\n",
             "episodes.action_std.csv, line 2: not a number"),
            ("env_id,seed\n", "missing column(s) rpo_alpha, global_step, action_std")):
        std.write_text(text)
        one_line_error(main_exit(capsys, export, "--out", tmp_path / "r"), message)
    std.unlink()
    for text, message in (
            ("env_id,rpo_alpha,seed,episode,eval_return\nHopper-v4,0.5,2,0,3000\n",
             "episodes.eval.csv: holds the evaluation of runs that episodes.csv has no episodes of, e.g. Hopper-v4 "
             "α=0.5 seed 2"),
            (f"env_id,rpo_alpha,seed,episode,eval_return\n{WALKER},0,1,first,3000\n",
             "episodes.eval.csv, line 2: not a number")):
        (tmp_path / "episodes.eval.csv").write_text(text)
        one_line_error(main_exit(capsys, export, "--out", tmp_path / "r"), message)


# ------------------------------------------------------------------------------- published.csv
# benchmark/published.csv is CleanRL's RPO documentation (docs/rl-algorithms/rpo.md in the CleanRL repository,
# docs.cleanrl.dev/rl-algorithms/rpo/), its result tables copied row by row: PPO (`ppo_continuous_action_8M`) beside
# RPO (`rpo_continuous_action`, α = 0.5, and `rpo_continuous_action_alpha_0_01`), mean ± std over 10 seeds at 8M
# steps. Those pages are not in this repository, so the tests check known cells and the tables' shape, not every row.
def published_rows():
    with open(PUBLISHED, newline="") as f:
        return list(csv.DictReader(f))


def test_published_csv_holds_the_reference_numbers():
    # Budgets: the seed says "8M timesteps ... 10 random seeds" for dm_control and Gym; its MuJoCo
    # tables name the PPO column "_8M", the reference script's default is 8,000,000 steps and
    # rpo_alpha 0.5 (seed 002), and the reference's benchmark/rpo.sh runs 10 seeds of each MuJoCo set.
    rows = published_rows()
    assert list(rows[0]) == ["table", "suite", "env_id", "method", "rpo_alpha", "mean", "std", "timesteps", "seeds"]
    by = {(r["table"], r["env_id"], r["method"]): r for r in rows}
    assert len(by) == len(rows)  # a table names each env and method once
    pendulum_rpo, pendulum_ppo = by["gym", "Pendulum-v1", "rpo"], by["gym", "Pendulum-v1", "ppo"]
    assert (pendulum_rpo["mean"], pendulum_rpo["std"], pendulum_rpo["rpo_alpha"]) == ("-151.08", "3.73", "0.5")
    assert (pendulum_ppo["mean"], pendulum_ppo["std"], pendulum_ppo["rpo_alpha"]) == ("-1141.98", "135.55", "0")
    assert by["mujoco_v4_tuned_alpha0.01", "Ant-v4", "rpo"]["mean"] == "2702.91"
    assert by["mujoco_v4_tuned_alpha0.01", "Ant-v4", "rpo"]["rpo_alpha"] == "0.01"
    assert by["mujoco_v4_tuned_alpha0.5", "Ant-v4", "rpo"]["mean"] == "-7.99"
    assert by["mujoco_v2", "HumanoidStandup-v2", "rpo"]["mean"] == "156848.90"
    assert by["dm_control", "dm_control/walker-run-v0", "ppo"]["std"] == "91.34"
    assert sum(r["table"] == "dm_control" for r in rows) == 2 * 48
    assert {r["suite"] for r in rows if r["env_id"].endswith("-v2")} == {"mujoco_v2"}
    assert {(r["method"], r["rpo_alpha"]) for r in rows} == {("ppo", "0"), ("rpo", "0.5"), ("rpo", "0.01")}
    assert {(r["timesteps"], r["seeds"]) for r in rows} == {("8000000", "10")}
    assert len(rows) == 188


# ------------------------------------------------------------------------------- the committed results
@pytest.mark.parametrize("export", sorted(RESULTS.rglob("episodes.csv.gz")), ids=lambda p: str(p.parent.relative_to(RESULTS)))
def test_committed_results_regenerate_from_the_committed_csv(tmp_path, export):
    # every committed study: benchmark/results/<name>/episodes.csv.gz
    # (a report made with --above or --at names the flag; an export with an arm column is a comparison of arms)
    flags = dict(re.findall(r"\(`(--above|--at) (\S+)`\)", (export.parent / "results.md").read_text()))
    result = run_report(export, "--out", tmp_path, *(x for flag in flags.items() for x in flag))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "results.md").read_bytes() == (export.parent / "results.md").read_bytes()
