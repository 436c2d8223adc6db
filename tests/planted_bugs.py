"""Plants a plausible bug for each training promise of the docs in a copy of the repo, and shows which tests catch it.

    .venv/bin/python tests/planted_bugs.py                 # every bug, then the table bug -> failing tests
    .venv/bin/python tests/planted_bugs.py --bug ent-sign   # some of them (--list names them)

For each bug: rpo_continuous_action.py, pyproject.toml and tests/ are copied into a temporary directory, the bug's text
replacements (old -> new) are made in the copy's trainer, and the bug's tests run against the copy (conftest puts the
copy's root first on sys.path and runs the copy's trainer). The real trainer is never touched. Before any bug, the
untouched copy must pass the same tests, so that a failure means the bug.

Exit status: 0 if every bug makes at least one test fail; 1 if some bug survives; 2 if an `old` text is not in the
trainer exactly once (the trainer changed: re-anchor that bug), or the untouched copy fails. Not run by pytest (the file
is not named test_*.py): it takes minutes.
"""
import argparse
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = ["tests/test_promises.py"]

# The longer replacements. A sub-env's observations normalized with statistics of their own, as the reference's
# per-env wrappers keep them (obs_rms is sub-env 0's):
NORMALIZE_OBS = '''    def normalize_obs(self, obs):
        self.obs_rms.update(obs)
        return normalize_obs(obs, self.obs_rms.mean, self.obs_rms.var, self.epsilon, self.clip)
'''
PER_ENV_OBS = '''    def normalize_obs(self, obs, rows=None):  # PLANTED
        rows = range(len(obs)) if rows is None else rows
        if not hasattr(self, "per_env"):
            self.per_env = [self.obs_rms] + [RunningMeanStd(shape=self.obs_rms.mean.shape, dtype=np.float32)
                                             for _ in range(self.num_envs - 1)]
        out = []
        for i, row in zip(rows, obs):
            self.per_env[i].update(row[None])
            out.append(normalize_obs(row[None], self.per_env[i].mean, self.per_env[i].var, self.epsilon, self.clip))
        return np.concatenate(out)
'''

# the noise-free KL checked before each step, as some PPO code checks its KL, instead of after the epoch
EARLY_STOP_BEFORE_THE_STEP = '''            with torch.no_grad():  # PLANTED
                _, now, _, _ = agent.get_action_and_value(b_obs[mb_inds], b_actions[mb_inds], rpo_noise=False)
            if args.target_kl is not None and approx_kl(now - b_logprobs[mb_inds]) > args.target_kl:
                break
            optimizer.zero_grad()
'''

# name: (what the bug is, [(old, new), ...])
BUGS = {
    "target-kl-noisy": ("--target-kl compares the noisy approx_kl (with RPO's noise)",
                        [("approx_kl_unperturbed > args.target_kl", "approx_kl(logratio) > args.target_kl")]),
    "kl-unperturbed-noisy": ("approx_kl_unperturbed (so --target-kl too) scored with RPO's noise",
                             [("rpo_noise=False)\n            approx_kl_unperturbed =", "rpo_noise=True)\n            approx_kl_unperturbed =")]),
    "target-kl-before-step": ("--target-kl stops before a step whose noise-free KL already exceeds it (checked per "
                              "minibatch, before the step)",
                              [("            optimizer.zero_grad()\n", EARLY_STOP_BEFORE_THE_STEP)]),
    "target-kl-never": ("--target-kl never stops the update",
                        [("args.target_kl is not None and approx_kl_unperturbed", "False and approx_kl_unperturbed")]),
    "ent-sign": ("the entropy term added: + ent_coef * entropy",
                 [("loss = loss - args.ent_coef * entropy.mean()", "loss = loss + args.ent_coef * entropy.mean()")]),
    "loss-logged-without-entropy": ("losses/loss logged without the entropy term",
                                    [('"loss": loss.item()', '"loss": (pg_loss + v_loss * args.vf_coef).item()')]),
    "bootstrap-terminations": ("--bootstrap-truncated also bootstraps terminated episodes",
                               [("truncations & ~terminations", "truncations | terminations")]),
    "bootstrap-reset-obs": ("--bootstrap-truncated bootstraps from the next episode's first observation",
                            [('infos["final_obs"][i][None]', "next_obs[i][None]")]),
    "bootstrap-no-gamma": ("--bootstrap-truncated adds V(final observation) without gamma",
                           [("rewards[step, i] += args.gamma * ", "rewards[step, i] += ")]),
    "clipfrac-last-minibatch": ("clipfrac of the last minibatch only",
                                [("ratio = torch.stack(ratios)", "ratio = ratios[-1]")]),
    "clipfrac-last-epoch": ("clipfrac of the last epoch only",
                            [("    for epoch in range(args.update_epochs):\n",
                              "    for epoch in range(args.update_epochs):\n        ratios = []\n")]),
    "per-env-obs-statistics": ("each sub-env's observations normalized with statistics of its own",
                               [(NORMALIZE_OBS, PER_ENV_OBS),
                                ('self.normalize_obs(np.stack(infos["final_obs"][ended]))',
                                 'self.normalize_obs(np.stack(infos["final_obs"][ended]), ended)')]),
    "return-statistics-of-env-0": ("the return statistics of sub-env 0's discounted return only",
                                   [("self.return_rms.update(self.discounted_reward)",
                                     "self.return_rms.update(self.discounted_reward[:1])")]),
    "explained-variance-formula": ("explained variance divided by Var(values) instead of Var(returns)",
                                   [("1 - np.var(returns.reshape(-1) - values) / var_y",
                                     "1 - np.var(returns.reshape(-1) - values) / np.var(values)")]),
    "rpo-noise-gaussian": ("RPO's noise drawn from N(0, alpha) instead of U(-alpha, alpha)",
                           [(".uniform_(-self.rpo_alpha, self.rpo_alpha)", ".normal_(0, self.rpo_alpha)")]),
}


def die(message):
    print(f"planted_bugs.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def plant(source, edits, name):
    for old, new in edits:
        count = source.count(old)
        if count != 1:
            die(f"bug {name!r}: the trainer has {count} copies of {old!r}, not one; "
                "the trainer changed: re-anchor this bug")
        source = source.replace(old, new)
    return source


def copy_repo(directory, source):
    shutil.copytree(os.path.join(ROOT, "tests"), os.path.join(directory, "tests"),
                    ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), directory)
    trainer = os.path.join(directory, "rpo_continuous_action.py")
    with open(trainer, "w") as f:
        f.write(source)
    py_compile.compile(trainer, doraise=True)  # a bug must be one the trainer runs with, not a syntax error


def failing_tests(directory, tests):
    """The node ids that fail (or error, or pass where marked strict xfail) in the copy, and pytest's last line."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *tests],
                          cwd=directory, capture_output=True, text=True, timeout=1800)
    failed = sorted({m.group(2) for m in re.finditer(r"^(FAILED|ERROR) (\S+)", proc.stdout, re.M)})
    summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not failed):
        die(f"pytest exited {proc.returncode} in {directory}:\n"
                 f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return failed, summary


def check_imports_the_copy(directory):
    code = "import sys; sys.path.insert(0, 'tests'); import conftest, rpo_continuous_action as r; print(r.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=directory, capture_output=True, text=True).stdout.strip()
    if os.path.dirname(os.path.realpath(out)) != os.path.realpath(directory):
        die(f"the tests in the copy import {out!r}, not the copy's trainer")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bug", action="append", choices=sorted(BUGS), help="plant only these (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the bugs and exit")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies (their paths are printed)")
    options = parser.parse_args(argv)
    if options.list:
        for name, (what, _) in BUGS.items():
            print(f"{name:30} {what}")
        return 0
    names = options.bug or list(BUGS)
    source = open(os.path.join(ROOT, "rpo_continuous_action.py")).read()
    planted = {name: plant(source, BUGS[name][1], name) for name in names}  # every anchor checked before any run

    with tempfile.TemporaryDirectory(prefix="planted-bugs-") as tmp:
        control = os.path.join(tmp, "control")
        copy_repo(control, source)
        check_imports_the_copy(control)
        failed, summary = failing_tests(control, TESTS)
        print(f"{'no bug (control)':30} {summary}", flush=True)
        if failed:
            die(f"the untouched copy fails {', '.join(failed)}: fix that first")
        rows = []
        for name in names:
            directory = os.path.join(tmp, name)
            copy_repo(directory, planted[name])
            failed, summary = failing_tests(directory, TESTS)
            rows.append((name, failed))
            print(f"{name:30} {summary}", flush=True)
            if options.keep:
                kept = os.path.join(tempfile.gettempdir(), f"planted-bug-{name}")
                shutil.copytree(directory, kept, dirs_exist_ok=True)
                print(f"{'':30} kept in {kept}")

    print("\n| bug | what | failing tests |\n|---|---|---|")
    for name, failed in rows:
        tests = ", ".join(f"`{t.split('::', 1)[1]}`" for t in failed) or "**none: the bug survives**"
        print(f"| {name} | {BUGS[name][0]} | {tests} |")
    survivors = [name for name, failed in rows if not failed]
    if survivors:
        print(f"\n{len(survivors)} of {len(rows)} bugs survive: {', '.join(survivors)}", file=sys.stderr)
        return 1
    print(f"\nall {len(rows)} planted bugs make a test fail")
    return 0


if __name__ == "__main__":
    sys.exit(main())
