"""Parity with the reference: benchmark/parity.sh runs the reference RPO script (through
benchmark/reference_trainer.py) and ours through benchmark/sweep.sh, and report.py --arms compares them.

The reference is CleanRL's published script, taken out of the cleanrl 1.2.0 wheel by benchmark/reference.sh,
which builds it and its venv in /tmp/rpo-reference (REF_DIR moves it). The end-to-end test trains it and ours
on Pendulum-v1 for 2,048 steps; the arm on mujoco 2.3.7 joins where PUBLISHED_PYTHON or .venv-mujoco237 has
that simulator. The adapter's own behaviour is tested with a stand-in reference script, on this venv's python.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import IMPORT_REFERENCE, episodic_returns, run_dirs, scalars, wait_for

ROOT = Path(__file__).resolve().parents[1]
PARITY = ROOT / "benchmark" / "parity.sh"
ADAPTER = ROOT / "benchmark" / "reference_trainer.py"
REPORT = ROOT / "benchmark" / "report.py"
ENV = "Pendulum-v1"  # 200-step episodes
TINY = ["--total-timesteps", "2048", "--num-steps", "512", "--num-minibatches", "4", "--update-epochs", "2"]

sys.path.insert(0, str(ROOT / "benchmark"))
import reference_trainer  # noqa: E402
import score  # noqa: E402


def mujoco_version(python):
    if not os.path.isfile(python):
        return None
    proc = subprocess.run([python, "-c", "import mujoco; print(mujoco.__version__)"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def parity_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHON", "PUBLISHED_PYTHON", "REFERENCE_PYTHON", "RPO_REFERENCE", "REF_DIR")}
    return {**env, "PYTHON": sys.executable, **extra}


def parity(out, *args, env, trainer=TINY):
    return subprocess.run([str(PARITY), "--env-ids", ENV, "--alphas", "0.5", "--out", str(out), *args, "--", *trainer],
                          capture_output=True, text=True, env=env, timeout=900)


# ------------------------------------------------------------------------------- the same math
# The reference's own Agent, imported from its script in its own venv. The published text's Agent reads a global
# `device` that the script defines only when run (cleanrl 1.2.0's does not), so the import sets one.
REFERENCE_AGENT = IMPORT_REFERENCE + """
import gymnasium as gym, numpy as np, torch
ref.device = torch.device("cpu")
class Envs:
    single_observation_space = gym.spaces.Box(-np.inf, np.inf, (17,))
    single_action_space = gym.spaces.Box(-1.0, 1.0, (6,))
data = torch.load(sys.argv[2])
torch.set_num_threads(1)
torch.manual_seed(1)
agent = ref.Agent(Envs, data["rpo_alpha"])
init = {k: v.clone() for k, v in agent.state_dict().items()}
agent.load_state_dict(data["state"])
torch.manual_seed(7)
_, logprob, entropy, value = agent.get_action_and_value(data["x"], data["a"])
torch.save({"init": init, "logprob": logprob, "entropy": entropy, "value": value}, sys.argv[3])
"""


def test_the_agent_is_the_references_from_its_seed_to_its_rpo_noise(reference, tmp_path):
    """HalfCheetah's shapes: the same seed gives the same initial weights, bit for bit, and the same weights,
    inputs and torch seed give the update's log-prob (through the same RPO noise), entropy and value up to
    float rounding. With alpha = 0.5 another noise draw would move the log-prob by far more than rounding."""
    import torch

    import rpo_continuous_action as rpo

    python, script = reference
    # One thread on both sides, as the trainer and the parity adapter run: the orthogonal init's QR of a 64x64
    # matrix, and the matmuls, round differently with 1 and 2 threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(1)
        agent = rpo.Agent(17, 6, rpo_alpha=0.5)
        init = {k: v.clone() for k, v in agent.state_dict().items()}
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():  # a policy that is not the initial one: a spread-out mean and unequal sigmas
            for p in agent.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=g))
        x, a = torch.randn(256, 17, generator=g), torch.randn(256, 6, generator=g)
        torch.save({"rpo_alpha": 0.5, "state": agent.state_dict(), "x": x, "a": a}, tmp_path / "in.pt")
        with torch.no_grad():
            torch.manual_seed(7)
            _, logprob, entropy, value = agent.get_action_and_value(x, a)
            torch.manual_seed(8)  # another draw of the noise
            _, other, _, _ = agent.get_action_and_value(x, a)
    finally:
        torch.set_num_threads(threads)
    proc = subprocess.run([python, "-c", REFERENCE_AGENT, script, tmp_path / "in.pt", tmp_path / "out.pt"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = torch.load(tmp_path / "out.pt")

    assert init.keys() == theirs["init"].keys()
    for name, tensor in init.items():
        assert torch.equal(tensor, theirs["init"][name]), name
    assert torch.equal(value, theirs["value"])
    # log-probs of tens: torch.distributions.Normal's formula and ours round apart by ~1e-5 (float32 at 50)
    assert logprob.abs().max() > 50
    torch.testing.assert_close(logprob, theirs["logprob"], rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(entropy, theirs["entropy"], rtol=1e-6, atol=1e-6)
    assert (other - theirs["logprob"]).abs().max() > 0.1  # another noise draw is far from the reference's


# ------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def parity_study(reference, tmp_path_factory):
    """Two seeds per arm through parity.sh: the reference, ours on mujoco 3, and ours on 2.3.7 where there is one.
    parity.sh finds the reference by REF_DIR alone, as benchmark/reference.sh left it."""
    python, script = reference
    assert os.path.dirname(python) == os.path.join(os.path.dirname(script), "venv", "bin")
    published = os.environ.get("PUBLISHED_PYTHON") or str(ROOT / ".venv-mujoco237" / "bin" / "python")
    arms = ["reference-mujoco237", "ours-mujoco3"]
    if mujoco_version(published) == "2.3.7":
        arms.insert(1, "ours-mujoco237")
    env = parity_env(REF_DIR=os.path.dirname(script), PUBLISHED_PYTHON=published)
    out = tmp_path_factory.mktemp("parity") / "study"
    result = parity(out, "--seeds", "2", "--workers", "2", "--arms", " ".join(arms), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return out, arms, env, result


def test_parity_runs_every_arm_through_sweep(parity_study):
    out, arms, _, result = parity_study
    assert sorted(p.name for p in out.iterdir()) == sorted(arms)
    assert f"parity: all arms finished in {out}" in result.stdout
    for arm in arms:
        versions = (out / arm / "versions").read_text()
        assert versions.count("\n") == 1 and ("mujoco 2.3.7" in versions) == arm.endswith("237"), versions
        assert ("gymnasium 0.29" in versions) == arm.startswith("reference"), versions
        for seed in (1, 2):
            run = out / arm / f"{ENV}__alpha0.5__seed{seed}"
            assert (run / "DONE").is_file(), (run / "train.log").read_text()[-2000:]
            # the run's name says which script trained it, with this seed
            [events] = run.rglob("events.out.tfevents.*")
            script = "rpo_reference" if arm.startswith("reference") else "rpo_continuous_action"
            assert events.parent.name.startswith(f"{ENV}__{script}__{seed}__"), events
            # ours keep a checkpoint to resume from; the reference writes none
            assert bool(list(run.rglob("*.cleanrl_model"))) == arm.startswith("ours"), arm


def test_reference_episodes_are_read_by_the_report(parity_study):
    out, _, _, _ = parity_study
    groups, skipped = score.load_run_dirs(out / "reference-mujoco237")
    assert skipped == []
    runs = groups[ENV, "0.5"]
    assert [r["seed"] for r in runs] == [1, 2]
    for run in runs:
        # every 200-step episode of 2,048 steps, as the reference's own event file holds it
        assert list(run["steps"]) == list(range(200, 2001, 200)) and list(run["lengths"]) == [200] * 10
        direct = episodic_returns(out / "reference-mujoco237" / f"{ENV}__alpha0.5__seed{run['seed']}")
        assert [(int(s), float(v)) for s, v in zip(run["steps"], run["returns"])] == direct
        assert all(-2000 < v < 0 for v in run["returns"])  # Pendulum's returns
    # the two seeds are two different runs
    assert list(runs[0]["returns"]) != list(runs[1]["returns"])


def test_report_compares_the_arms(parity_study, tmp_path):
    out, arms, _, _ = parity_study
    result = subprocess.run([sys.executable, str(REPORT), "--arms", *(str(out / arm) for arm in arms),
                             "--out", str(tmp_path / "r"), "--export", str(tmp_path / "e.csv.gz")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"exported {10 * 2 * len(arms)} episodes of {2 * len(arms)} runs of {len(arms)} arms" in result.stdout
    md = (tmp_path / "r" / "results.md").read_text()
    assert f"Arms: {', '.join(arms)}; each is compared with the first, reference-mujoco237." in md
    for arm in arms:
        row = next(line for line in md.splitlines() if line.startswith(f"| {ENV} | RPO α=0.5 | {arm} | 2 |"))
        p = row.rstrip(" |").rsplit("| ", 1)[1]
        assert (p == "—") == (arm == "reference-mujoco237"), row  # P(arm > reference) [CI] for the others
    assert "Skipped runs" not in md


def test_rerun_resumes_and_runs_nothing_more(parity_study):
    out, arms, env, _ = parity_study
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    result = parity(out, "--seeds", "2", "--workers", "2", "--arms", " ".join(arms), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("(finished earlier)") == 2 * len(arms)
    assert result.stdout.count("nothing to do") == len(arms)
    assert {p: p.stat().st_mtime_ns for p in before} == before  # the same stack: versions gets no new line


def test_interrupted_reference_run_starts_again_from_scratch(reference, tmp_path):
    python, script = reference
    env = parity_env(REFERENCE_PYTHON=python, RPO_REFERENCE=script)
    out, run = tmp_path / "study", tmp_path / "study" / "reference-mujoco237" / f"{ENV}__alpha0.5__seed1"
    args = [str(PARITY), "--env-ids", ENV, "--alphas", "0.5", "--seeds", "1", "--out", str(out), "--arms", "reference-mujoco237"]
    runner = subprocess.Popen([*args, "--", "--total-timesteps", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env)
    try:
        wait_for(lambda: len(episodic_returns(run)) >= 2 if run.is_dir() else False, "the reference's first episodes")
    finally:
        runner.send_signal(signal.SIGINT)  # as a Ctrl-C: parity.sh passes it to sweep.sh, which stops the trainer
        stdout, stderr = runner.communicate(timeout=120)
    assert runner.returncode == 130, stdout + stderr
    assert "stopped Pendulum-v1 alpha=0.5 seed=1 (exit 130" in stdout
    log = (run / "train.log").read_text()
    assert reference_trainer.INTERRUPTED in log and log.rstrip().endswith("trainer exited with status 130")
    assert not (run / "DONE").exists() and not list(run.rglob("*.cleanrl_model"))
    stopped_at = max(step for step, _ in episodic_returns(run))
    # the rerun (a smaller budget, to be quick) has no checkpoint to resume: the run starts over, the old events gone
    rerun = subprocess.run([*args, "--", *TINY], capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "start Pendulum-v1 alpha=0.5 seed=1" in rerun.stdout and "resume" not in rerun.stdout
    assert (run / "train.log").read_text().count("starting from scratch") == 2
    assert len({p.parent for p in run.rglob("events.out.tfevents.*")}) == 1
    assert [step for step, _ in episodic_returns(run)] == list(range(200, 2001, 200)) and stopped_at > 0


# ------------------------------------------------------------------------------- the adapter
STAND_IN = """import os, sys, time, torch
print("argv", sys.argv[1:], "threads", torch.get_num_threads(), "name", __name__, flush=True)
if "--sleep" in sys.argv:
    open("started", "w").close()
    time.sleep(60)
"""


def adapter(tmp_path, *args, script=None):
    env = {**os.environ, "RPO_REFERENCE": str(script or tmp_path / "stand_in.py")}
    return subprocess.run([sys.executable, str(ADAPTER), *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


def test_adapter_drops_what_the_reference_lacks_and_sets_threads(tmp_path):
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    result = adapter(tmp_path, "--env-id", ENV, "--seed", "3", "--rpo-alpha", "0.01", "--save-model", "--torch-threads", "1",
                     "--resume", "x.cleanrl_model", "--total-timesteps", "4096")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("argv ['--env-id', 'Pendulum-v1', '--seed', '3', '--rpo-alpha', '0.01', "
                                     "'--total-timesteps', '4096', '--cuda', 'False'] threads 1 name __main__")
    assert reference_trainer.reference_argv(["--torch-threads=3", "--resume=a", "--no-save-model", "--seed", "2"]) == (
        ["--seed", "2", "--cuda", "False"], 3)
    assert reference_trainer.reference_argv(["--seed", "1"]) == (["--seed", "1", "--cuda", "False"], None)


def test_adapter_writes_our_booleans_the_references_way():
    """The reference parses its flags with argparse (`--anneal-lr False`), ours with tyro (`--no-anneal-lr`); it
    always runs on the CPU, so --no-cuda and --cuda False are what it gets anyway."""
    argv, _ = reference_trainer.reference_argv(["--no-anneal-lr", "--norm-adv", "--no-clip-vloss", "--no-cuda",
                                                "--no-torch-deterministic", "--capture-video", "--cuda", "false",
                                                "--num-steps", "512"])
    assert argv == ["--anneal-lr", "False", "--norm-adv", "--clip-vloss", "False", "--torch-deterministic", "False",
                    "--capture-video", "--num-steps", "512", "--cuda", "False"]
    # a flag the reference lacks goes through as it is, for the reference to refuse
    assert reference_trainer.reference_argv(["--no-bootstrap-truncated"])[0] == ["--no-bootstrap-truncated", "--cuda", "False"]


@pytest.mark.parametrize("cuda", [["--cuda"], ["--cuda", "True"], ["--cuda=1"]])
def test_adapter_refuses_a_gpu_run_in_one_line(tmp_path, cuda):
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    result = adapter(tmp_path, "--seed", "1", *cuda)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"reference_trainer.py: error: {reference_trainer.NO_GPU}\n"


def test_the_reference_takes_our_boolean_flags(reference, tmp_path):
    """The real reference, through the adapter, with our syntax for its booleans: --no-anneal-lr keeps the learning
    rate where annealing would have halved it in the second of two iterations."""
    python, script = reference
    result = subprocess.run([python, str(ADAPTER), "--env-id", ENV, "--total-timesteps", "1024", "--num-steps", "512",
                             "--num-minibatches", "4", "--update-epochs", "1", "--no-anneal-lr", "--no-norm-adv",
                             "--clip-vloss", "--no-cuda", "--torch-threads", "1"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300,
                            env={**os.environ, "RPO_REFERENCE": script})
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = run_dirs(str(tmp_path))
    assert os.path.basename(run).startswith(f"{ENV}__rpo_reference__1__")
    assert [v for _, v in scalars(run)["charts/learning_rate"]] == pytest.approx([3e-4, 3e-4])


def test_adapter_says_the_reference_restarts_when_stopped(tmp_path):
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    env = {**os.environ, "RPO_REFERENCE": str(tmp_path / "stand_in.py")}
    proc = subprocess.Popen([sys.executable, str(ADAPTER), "--sleep"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / "started").exists(), "the stand-in to start", timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143  # 128 + SIGTERM, as sweep.sh expects of a stopped trainer
    assert stderr.strip().splitlines()[-1] == reference_trainer.INTERRUPTED
    assert "Traceback" not in stderr


def test_adapter_bad_input_is_one_line(tmp_path):
    result = adapter(tmp_path, "--seed", "1", script=tmp_path / "nope.py")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "nope.py does not exist" in result.stderr
    assert "build it with benchmark/reference.sh" in result.stderr
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    result = adapter(tmp_path, "--torch-threads", "0")
    assert result.returncode == 2 and result.stderr == (
        "reference_trainer.py: error: --torch-threads must be an integer >= 1, got '0'\n")


# ------------------------------------------------------------------------------- parity.sh's bad input
def fake_python(tmp_path, mujoco):
    """A 'python' that answers every command with a mujoco version: parity.sh's checks only ask that."""
    path = tmp_path / f"python-{mujoco}"
    path.write_text(f"#!/bin/sh\necho {mujoco}\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("args, env, message", [
    ([], {}, "no --out given"),
    (["--out"], {}, "option --out needs a value"),
    (["--out", "OUT", "--arms", "ours-mujoco4"], {}, "unknown arm 'ours-mujoco4' (the arms: reference-mujoco237 "
                                                     "ours-mujoco237 ours-mujoco3)"),
    (["--out", "OUT", "--arms", " "], {}, "no arms given"),
    (["--out", "OUT", "--arms", "ours-mujoco237"], {"PUBLISHED_PYTHON": "/nonexistent/python"},
     "arm ours-mujoco237: no python at /nonexistent/python; build it with 'python3 -m venv .venv-mujoco237 && "
     ".venv-mujoco237/bin/pip install torch==2.13.0 -e \".[mujoco-published]\"' (Python 3.10 or 3.11) or set "
     "PUBLISHED_PYTHON\n"),
    (["--out", "OUT", "--arms", "ours-mujoco3"], {"PYTHON": "4.0.0"}, "arm ours-mujoco3 needs mujoco 3.x but"),
    (["--out", "OUT", "--arms", "ours-mujoco3"], {"PYTHON": "2.3.7"}, "has mujoco 2.3.7"),
    (["--out", "OUT", "--arms", "ours-mujoco237"], {"PUBLISHED_PYTHON": "3.17.0"}, "arm ours-mujoco237 needs mujoco 2.3.7 but"),
    (["--out", "OUT", "--arms", "reference-mujoco237"], {"REFERENCE_PYTHON": "2.3.7", "RPO_REFERENCE": "/nonexistent.py"},
     "no reference script at /nonexistent.py; build it with 'benchmark/reference.sh'"),
    # sweep.sh's own checks, passed through as its one line
    (["--out", "OUT", "--arms", "ours-mujoco3", "--env-ids", ENV, "--seeds", "0"], {"PYTHON": "3.17.0"},
     "sweep.sh: error: --seeds must be an integer >= 1, got '0'"),
])
def test_parity_bad_input_is_one_line(tmp_path, args, env, message):
    # a version number stands for a python that has that mujoco
    env = {k: fake_python(tmp_path, v) if v[0].isdigit() else v for k, v in env.items()}
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    result = subprocess.run([str(PARITY), *args], capture_output=True, text=True, env=parity_env(**env), timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr, result.stderr
    if "sweep.sh" not in message:
        assert result.stderr.startswith("parity.sh: error: ") and not (tmp_path / "out").exists()


def test_reference_build_names_the_pythons_its_simulator_has_wheels_for(tmp_path):
    # A python 3.12 stand-in: mujoco 2.3.7 has no wheel for it, so pip would fail after torch's download
    python312 = tmp_path / "python3.12"
    python312.write_text("#!/bin/sh\nexec " + sys.executable + " -c 'import sys; sys.version_info = (3, 12, 0); "
                         "exec(sys.argv[1])' \"$2\"\n")
    python312.chmod(0o755)
    result = subprocess.run([str(ROOT / "benchmark" / "reference.sh")], capture_output=True, text=True,
                            env={**os.environ, "REF_DIR": str(tmp_path / "ref"), "PYTHON3": str(python312)})
    assert result.returncode == 4  # the parity tests skip on it, as they do offline
    assert result.stderr == (f"reference.sh: error: {python312} is Python 3.12, but the reference's stack needs "
                             "Python 3.10 or 3.11 (torch 2.13.0 has wheels from 3.10 on, mujoco 2.3.7 up to 3.11): "
                             "set PYTHON3 to one of those\n")
    assert not (tmp_path / "ref" / "venv").exists()
