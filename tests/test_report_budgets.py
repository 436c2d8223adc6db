"""benchmark/report.py's --at (scores at budgets) and the policy's σ (charts/action_std), with known answers.

No training: run directories are written by hand with TensorBoard's SummaryWriter, as the trainer writes
them (charts/episodic_return and charts/episodic_length at the step an episode ended, charts/action_std
at the end of every iteration, env_id and DONE beside them).
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

sys.path.insert(0, str(ROOT / "benchmark"))
import report  # noqa: E402
import score  # noqa: E402

WALKER = "dm_control/walker-walk-v0"
# Per alpha and seed: (the return of every episode that ends by step 1000, of every later one, the last episode's
# step). An episode ends every 100 steps, and RPO's seed 3 has one more at 1980 (99% of 2000: it reached 2000),
# seed 4 none after 1500 (it did not). The last 10 episodes by step 1000 are the first 10, by 2000 all later ones.
RUNS = {
    ("0", 1): (10.0, 100.0, 2000), ("0", 2): (20.0, 200.0, 2000), ("0", 3): (30.0, 300.0, 2000),
    ("0.5", 1): (15.0, 250.0, 2000), ("0.5", 2): (25.0, 150.0, 2000), ("0.5", 3): (35.0, 400.0, 1980),
    ("0.5", 4): (45.0, 500.0, 1500),
}
ITERATION = 250  # σ is logged every 250 steps, the last time at or before the run's last episode


def episodes(alpha, seed):
    early, late, end = RUNS[alpha, seed]
    steps = [*range(100, end + 1, 100)] if end % 100 == 0 else [*range(100, end, 100), end]
    return [(step, early if step <= 1000 else late) for step in steps]


def sigma(alpha, seed, step):
    """PPO's σ shrinks, faster for a higher seed; RPO's grows."""
    return 1 - seed * step / 10_000 if alpha == "0" else 1 + seed * step / 10_000


def sigmas(alpha, seed):
    end = RUNS[alpha, seed][2]
    return [(step, sigma(alpha, seed, step)) for step in range(ITERATION, end + 1, ITERATION)]


def run_report(*args):
    return subprocess.run([sys.executable, str(REPORT), *map(str, args)], capture_output=True, text=True, timeout=300)


def estimate(cell):
    """'12.34 [10.00, 15.00] (3 of 4 runs)' -> (12.34, 10.0, 15.0)."""
    m = re.match(r"(-?[\d.]+) \[(-?[\d.]+), (-?[\d.]+)\]", cell)
    assert m, cell
    return tuple(float(g) for g in m.groups())


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """RUNS as sweep.sh's run directories; their report with --at (budgets given out of order, in both notations)
    and its export; then the report made from the export alone."""
    from torch.utils.tensorboard import SummaryWriter

    root = tmp_path_factory.mktemp("budgets")
    for alpha, seed in RUNS:
        run_dir = root / "runs" / f"dm_control-walker-walk-v0__alpha{alpha}__seed{seed}"
        writer = SummaryWriter(str(run_dir / "runs" / "dm_control" / f"walker-walk-v0__rpo_continuous_action__{seed}__1"))
        for step, value in episodes(alpha, seed):
            writer.add_scalar("charts/episodic_return", value, step)
            writer.add_scalar("charts/episodic_length", 100, step)
        for step, value in sigmas(alpha, seed):
            writer.add_scalar("charts/action_std", value, step)
            writer.add_scalar("losses/entropy", -value, step)  # other tags are left alone
        writer.close()
        (run_dir / "env_id").write_text(WALKER + "\n")
        (run_dir / "DONE").write_text("2026-12-06 12:00:00\n")
    at = ("--at", "3k,1000, 2k,50")
    export = root / "export" / "episodes.csv.gz"
    made = run_report(root / "runs", "--out", root / "from_dirs", "--export", export, *at)
    assert made.returncode == 0, made.stderr
    rebuilt = run_report(export, "--out", root / "from_csv", *at)
    assert rebuilt.returncode == 0, rebuilt.stderr
    return root, made.stdout, (root / "from_dirs" / "results.md").read_text()


def test_scores_at_budgets_by_hand(sweep):
    _, _, md = sweep
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


def test_sigma_at_budgets_by_hand(sweep):
    root, _, md = sweep
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


def test_report_from_the_export_is_byte_for_byte(sweep):
    root, stdout, md = sweep
    export = root / "export"
    assert f"and their σ to {export / 'episodes.action_std.csv.gz'}" in stdout
    assert (root / "from_csv" / "results.md").read_text() == md
    assert (root / "from_csv" / "action_std.png").is_file()
    # the σ file: one row per logged point, runs in the episodes' order, exact decimals of the logged float32
    with gzip.open(export / "episodes.action_std.csv.gz", "rt") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["env_id", "rpo_alpha", "seed", "global_step", "action_std"]
    assert rows[1] == [WALKER, "0", "1", "250", repr(float(np.float32(sigma("0", 1, 250))))]
    assert len(rows) == 1 + sum(len(sigmas(alpha, seed)) for alpha, seed in RUNS)
    assert rows[-1][:4] == [WALKER, "0.5", "4", "1500"]
    # exported again from the export: the same bytes, both files
    again = root / "again" / "episodes.csv.gz"
    assert report.main([str(export / "episodes.csv.gz"), "--export", str(again)]) == 0
    for name in ("episodes.csv.gz", "episodes.action_std.csv.gz"):
        assert (again.parent / name).read_bytes() == (export / name).read_bytes()


def test_without_sigma_file_or_at_the_report_is_as_before(sweep, tmp_path):
    # an episodes CSV alone (as every study committed before σ was exported) gives no σ section and no plot,
    # and without --at no budgets: what was committed rebuilds unchanged
    root, _, _ = sweep
    csv_only = tmp_path / "episodes.csv.gz"
    csv_only.write_bytes((root / "export" / "episodes.csv.gz").read_bytes())
    assert report.main([str(csv_only), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "results.md").read_text()
    assert "σ" not in md and "## Scores at budgets" not in md and "--at" not in md
    assert not (tmp_path / "r" / "action_std.png").exists()
    # an export of runs without σ leaves no stale σ file beside it
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "episodes.action_std.csv.gz").write_bytes(b"stale")
    assert report.main([str(csv_only), "--export", str(tmp_path / "out" / "episodes.csv.gz")]) == 0
    assert not (tmp_path / "out" / "episodes.action_std.csv.gz").exists()


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
def one_line_error(code, err, message):
    assert code == 2, err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("report.py: error: "), err
    assert message in err, err


def test_bad_budgets_are_one_line(sweep, tmp_path, capsys):
    root, _, _ = sweep
    export = root / "export" / "episodes.csv.gz"
    result = run_report(export, "--at", "1M,lots", "--out", tmp_path / "r")
    one_line_error(result.returncode, result.stderr, "argument --at: expected whole step counts")
    for bad in ("", "0", "-1M", "1.5", "nan", "inf", "1M,,2M", "M", "2 M M"):
        with pytest.raises(SystemExit) as exit:
            report.main([str(export), "--at", bad, "--out", str(tmp_path / "r")])
        one_line_error(exit.value.code, capsys.readouterr().err, "argument --at")
    with pytest.raises(SystemExit) as exit:  # a comparison of arms has no budgets
        report.main(["--arms", f"a={export}", f"b={export}", "--at", "1k", "--out", str(tmp_path / "r")])
    one_line_error(exit.value.code, capsys.readouterr().err, "--at is for one sweep's report")
    assert not (tmp_path / "r").exists()


def test_bad_sigma_file_is_one_line(sweep, tmp_path, capsys):
    root, _, _ = sweep
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
        with pytest.raises(SystemExit) as exit:
            report.main([str(export), "--out", str(tmp_path / "r")])
        one_line_error(exit.value.code, capsys.readouterr().err, message)
