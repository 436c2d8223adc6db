"""Every command that README.md and docs/ show for the project's scripts still parses, and the quick start runs.

A command is a line of a shell code block (with its backslash continuations), or an inline code span with
arguments, that runs rpo_continuous_action.py, a benchmark/*.py or a benchmark/*.sh, alone or in a `&&` chain.
Each is checked by the script's own parser, without changing the script:

- the trainer: its parse_args (tyro, then the trainer's own checks), in this process. A --resume or
  --eval-checkpoint path becomes the checkpoint of the quick start's run;
- benchmark/*.py with argparse: run as __main__ with ArgumentParser.parse_args/parse_known_args stopped right after
  a successful parse; the trainer flags after `--` then go to the trainer's parse_args, and tune.py's --param and
  --enqueue must name trainer flags;
- benchmark/reference_trainer.py: its own reference_argv;
- benchmark/*.sh: run for real from a scratch copy of benchmark/ in a temporary directory (so that what they write
  stays there), with stand-ins. Each python they start (PYTHON, and
  parity.sh's PUBLISHED_PYTHON and REFERENCE_PYTHON) records the trainer's arguments, which then go to the
  trainer's parse_args (or the adapter's reference_argv), and answers parity.sh's version checks; a fake sbatch on
  PATH runs task 0 of the job array it is given; rpo.sh runs from a copy whose sweep.sh keeps the first env id and
  one seed of each set (its full sets are 1,290 runs);
- benchmark/reference.sh builds a venv from the package registry, so it is not run here: it must exist, and the
  documentation gives it no arguments.

The README's install-and-train line and its quick start (train, evaluate, resume) run for real, at a tiny budget,
and its test command is the one CI runs.
"""

import argparse
import contextlib
import glob
import io
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest

import rpo_continuous_action as rpo
from conftest import ROOT as _ROOT
from conftest import clean_env, run_dirs, scalars

ROOT = Path(_ROOT)
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
SCRIPT = re.compile(r"(?:\./)?(rpo_continuous_action\.py|benchmark/[\w.-]+\.(?:py|sh))")
PYTHON = re.compile(r"(?:.*/)?python[\d.]*")
ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=.*")
SEPARATORS = {"&&", "||", ";", "|", "&"}
TINY_TRAIN = ["--total-timesteps", "1024", "--num-steps", "512"]  # two iterations of 512 steps


# ------------------------------------------------------------------------------------ extraction
@dataclass
class Command:
    where: str          # file:line
    text: str           # the segment as written
    script: str         # rpo_continuous_action.py or benchmark/<name>
    args: list
    env: dict = field(default_factory=dict)


def _segments(text):
    """The simple commands of one shell line, as token lists (`&&`, `;`, `|` split it; `#` starts a comment)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars="&|;")
    lexer.whitespace_split = True
    segment = []
    for token in lexer:
        if token in SEPARATORS:
            yield segment
            segment = []
        else:
            segment.append(token)
    yield segment


def _invocation(tokens):
    """(script, args, env) if these tokens run one of the project's scripts, else None."""
    env, i = {}, 0
    while i < len(tokens) and ASSIGNMENT.fullmatch(tokens[i]):
        name, _, value = tokens[i].partition("=")
        env[name] = value
        i += 1
    if i < len(tokens) and (PYTHON.fullmatch(tokens[i]) or tokens[i] in ("bash", "sh")):
        i += 1
    if i < len(tokens) and (m := SCRIPT.fullmatch(tokens[i])):
        return m.group(1), tokens[i + 1:], env
    return None


def _candidates(markdown):
    """(line number, text, from a code block) of every shell line and inline code span of a markdown text."""
    fence, start, pending = None, 0, ""
    for number, line in enumerate(markdown.splitlines(), 1):
        stripped = line.strip()
        if fence is None:
            if m := re.match(r"(```+|~~~+)\s*([\w-]*)", stripped):
                fence = (m.group(1), m.group(2).lower())
                continue
            for span in re.findall(r"`([^`]+)`", line):
                yield number, span, False
        elif stripped.startswith(fence[0]):
            fence = None
        elif fence[1] in SHELL_FENCES:
            text = stripped[2:] if stripped.startswith("$ ") else stripped
            start = start if pending else number
            if text.endswith("\\"):
                pending += text[:-1] + " "
                continue
            yield start, pending + text, True
            pending = ""


def extract(markdown, name):
    """The commands of a markdown text that run the project's scripts; `name` is where it comes from."""
    commands = []
    for number, text, in_block in _candidates(markdown):
        if not SCRIPT.search(text):
            continue
        where = f"{name}:{number}"
        try:
            segments = list(_segments(text))
        except ValueError as e:  # an unclosed quote: not a command a shell can run
            if in_block:
                commands.append(Command(where, text, "unparsable", [str(e)]))
            continue
        for tokens in segments:
            found = _invocation(tokens)
            if found and (in_block or found[1]):  # an inline span without arguments names a script
                commands.append(Command(where, shlex.join(tokens), *found))
    return commands


def documented_commands(root=ROOT):
    docs = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return [c for path in docs for c in extract(path.read_text(encoding="utf-8"), path.relative_to(root))]


COMMANDS = documented_commands()


# ------------------------------------------------------------------------------------ the trainer's parser
def trainer_refuses(argv):
    """None if the trainer's parse_args accepts argv, else what it says."""
    out, program = io.StringIO(), sys.argv[0]
    sys.argv[0] = "rpo_continuous_action.py"  # what tyro's message names
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rpo.parse_args(list(argv))
    except rpo.UserError as e:
        return str(e)
    except SystemExit as e:
        return None if e.code in (0, None) else out.getvalue().strip() or f"exit {e.code}"
    finally:
        sys.argv[0] = program
    return None


def with_checkpoint(args, checkpoint):
    """args with every --resume/--eval-checkpoint value replaced by a real checkpoint."""
    args, out = list(args), []
    while args:
        token = args.pop(0)
        name = token.split("=", 1)[0]
        if name in ("--resume", "--eval-checkpoint"):
            if "=" not in token and args:
                args.pop(0)
            out += [name, str(checkpoint)]
        else:
            out.append(token)
    return out


def check_trainer(args, request):
    if any(a.split("=", 1)[0] in ("--resume", "--eval-checkpoint") for a in args):
        args = with_checkpoint(args, request.getfixturevalue("quick_start")["checkpoint"])
    why = trainer_refuses(args)
    assert why is None, f"the trainer's parser refuses {shlex.join(args)}:\n{why}"


# ------------------------------------------------------------------------------------ argparse scripts
class Parsed(BaseException):
    """Raised right after a successful parse, so that the script goes no further."""

    def __init__(self, namespace):
        self.namespace = namespace


def argparse_parse(script, args, monkeypatch):
    """The namespace the script's argparse parser makes of args; fails the test with its message if it refuses."""
    depth = [0]
    parse_args, parse_known_args = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args

    def stop_after_parse_args(self, *a, **k):
        depth[0] += 1
        try:
            namespace = parse_args(self, *a, **k)
        finally:
            depth[0] -= 1
        raise Parsed(namespace)

    def stop_after_parse_known_args(self, *a, **k):
        result = parse_known_args(self, *a, **k)
        if depth[0] == 0:  # called by the script, not by parse_args
            raise Parsed(result[0])
        return result

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop_after_parse_args)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", stop_after_parse_known_args)
    monkeypatch.setattr(sys, "argv", [str(ROOT / script), *args])
    monkeypatch.setattr(sys, "path", list(sys.path))
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_path(str(ROOT / script), run_name="__main__")
    except Parsed as p:
        return p.namespace
    except SystemExit as e:
        if e.code in (0, None):
            return None  # --help
        pytest.fail(f"{script} refuses {shlex.join(args)}:\n{out.getvalue().strip()}")
    pytest.fail(f"{script} never parsed its arguments {shlex.join(args)}:\n{out.getvalue().strip()}")


TRAINER_FIELDS = {f.name for f in fields(rpo.Args)}


def check_python_script(command, request, monkeypatch):
    args = command.args
    namespace = argparse_parse(command.script, args, monkeypatch)
    if "--" in args:  # the trainer's flags
        check_trainer(args[args.index("--") + 1:], request)
    for spec in getattr(namespace, "param", None) or []:
        name = spec.partition("=")[0].lstrip("-").replace("-", "_")
        assert name in TRAINER_FIELDS, f"--param {spec}: the trainer has no flag --{name.replace('_', '-')}"
    for spec in getattr(namespace, "enqueue", None) or []:
        for item in spec.split(","):
            name = item.partition("=")[0].lstrip("-").replace("-", "_")
            assert name in TRAINER_FIELDS, f"--enqueue {spec}: the trainer has no flag --{name.replace('_', '-')}"


def reference_argv(args):
    adapter = runpy.run_path(str(ROOT / "benchmark" / "reference_trainer.py"), run_name="reference_trainer")
    try:
        return adapter["reference_argv"](list(args))
    except ValueError as e:
        pytest.fail(f"benchmark/reference_trainer.py refuses {shlex.join(args)}: {e}")


# ------------------------------------------------------------------------------------ shell scripts
STAND_IN_PYTHON = """#!/usr/bin/env bash
# A python for the shell scripts: answers `-c` (parity.sh's version checks) with fake modules, and records any
# other call (a trainer and its flags) for the test to check with the trainer's own parser.
if [[ $1 == -c ]]; then PYTHONPATH={fakes} exec {python} "$@"; fi
printf '%s\\0' "$@" >"{records}/$BASHPID.$RANDOM$RANDOM"
"""

FAKE_SBATCH = """#!/usr/bin/env bash
# sbatch for the tests: records its arguments, runs task 0 of the job array (its script, or --wrap's command)
# and prints a job id as `sbatch --parsable` does.
printf '%s\\n' "$*" >>"{records}/sbatch.calls"
wrap="" script=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --wrap) wrap=$2; shift 2 ;;
        --wrap=*) wrap=${{1#--wrap=}}; shift ;;
        *) [[ -f $1 ]] && script=$1; shift ;;
    esac
done
export SLURM_ARRAY_TASK_ID=0 SLURM_ARRAY_JOB_ID=4242 SLURM_JOB_ID=4242
if [[ -n $wrap ]]; then bash -c "$wrap" >>"{records}/sbatch.log" 2>&1; else bash "$script" >>"{records}/sbatch.log" 2>&1; fi
echo $? >>"{records}/sbatch.status"
echo 4242
"""

# rpo.sh's sets are 1,290 runs: its copy calls this sweep.sh, which keeps each set's first env id and one seed
ONE_OF_EACH_SET = """#!/usr/bin/env bash
args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --env-ids) read -r -a ids <<<"$2"; args+=(--env-ids "${{ids[0]}}"); shift 2 ;;
        --seeds) if [[ $2 =~ ^[1-9][0-9]*$ ]]; then args+=(--seeds 1); else args+=(--seeds "$2"); fi; shift 2 ;;
        --) args+=("$@"); break ;;
        *) args+=("$1"); shift ;;
    esac
done
exec {sweep} "${{args[@]}}"
"""

FAKE_MODULES = {"mujoco": None, "gymnasium": "1.4.0", "torch": "2.13.0"}


def stand_ins(tmp):
    """The environment that points the shell scripts at stand-ins, and the folder where they record."""
    records, bin_dir = tmp / "records", tmp / "bin"
    records.mkdir()
    bin_dir.mkdir()
    pythons = {}
    for name, mujoco in (("python-mujoco3", "3.17.0"), ("python-mujoco237", "2.3.7"), ("python-reference", "2.3.7")):
        fakes = tmp / "fakes" / name
        for module, version in FAKE_MODULES.items():
            (fakes / module).mkdir(parents=True)
            (fakes / module / "__init__.py").write_text(f"__version__ = {version or mujoco!r}\n")
        path = bin_dir / name
        path.write_text(STAND_IN_PYTHON.format(fakes=fakes, python=sys.executable, records=records))
        path.chmod(0o755)
        pythons[name] = path
    ref_dir = tmp / "reference"
    (ref_dir / "venv" / "bin").mkdir(parents=True)
    (ref_dir / "venv" / "bin" / "python").symlink_to(pythons["python-reference"])
    (ref_dir / "rpo_reference.py").write_text("# stand-in\n")
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(FAKE_SBATCH.format(records=records))
    sbatch.chmod(0o755)
    env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHON=str(pythons["python-mujoco3"]),
                    PUBLISHED_PYTHON=str(pythons["python-mujoco237"]),
                    REFERENCE_PYTHON=str(pythons["python-reference"]), REF_DIR=str(ref_dir),
                    RPO_REFERENCE=str(ref_dir / "rpo_reference.py"))
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "TRAINER"):
        env.pop(name, None)
    return env, records


def scratch_checkout(tmp):
    """A copy of the repository's scripts in tmp, so that a documented command writes only there (sweep.sh's default
    --out is benchmark/runs beside it); the trainer is a link to the real one."""
    checkout = tmp / "checkout"
    shutil.copytree(ROOT / "benchmark", checkout / "benchmark",
                    ignore=shutil.ignore_patterns("results", "runs", "__pycache__"))
    (checkout / "rpo_continuous_action.py").symlink_to(ROOT / "rpo_continuous_action.py")
    return checkout


def check_shell_script(command, request, tmp):
    if command.script == "benchmark/reference.sh":
        assert (ROOT / command.script).is_file(), f"{command.script} does not exist"
        assert command.args in ([], ["--help"]), f"{command.script} takes no arguments, got {shlex.join(command.args)}"
        return
    env, records = stand_ins(tmp)
    checkout = scratch_checkout(tmp)
    if command.script == "benchmark/rpo.sh":
        sweep = checkout / "benchmark" / "sweep.sh"
        sweep.rename(sweep.with_name("sweep-all.sh"))
        sweep.write_text(ONE_OF_EACH_SET.format(sweep=shlex.quote(str(sweep.with_name("sweep-all.sh")))))
        sweep.chmod(0o755)
    for name, value in command.env.items():
        if name == "TRAINER":  # a documented trainer, from the repository's root
            env[name] = str(checkout / value) if not os.path.isabs(value) else value
        elif name not in ("PYTHON", "PUBLISHED_PYTHON", "REFERENCE_PYTHON", "REF_DIR", "RPO_REFERENCE"):
            env[name] = value
    proc = subprocess.run(["bash", command.script, *command.args], cwd=checkout, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=600)
    assert proc.returncode == 0, (f"{command.script} {shlex.join(command.args)} exited {proc.returncode}:\n"
                                  f"{proc.stderr[-3000:]}\n{proc.stdout[-2000:]}")
    if (records / "sbatch.status").exists():
        statuses = (records / "sbatch.status").read_text().split()
        assert set(statuses) == {"0"}, f"a job array's task 0 failed:\n{(records / 'sbatch.log').read_text()[-3000:]}"
    calls = [p.read_bytes().split(b"\0")[:-1] for p in records.iterdir() if not p.name.startswith("sbatch.")]
    if "--help" not in command.args and "-h" not in command.args:
        assert calls, f"{command.script} {shlex.join(command.args)} started no trainer"
    seen = set()
    for call in calls:
        trainer, *args = [c.decode() for c in call]
        if (trainer, *args) in seen:
            continue
        seen.add((trainer, *args))
        if os.path.basename(trainer) == "rpo_continuous_action.py":
            check_trainer(args, request)
        elif os.path.basename(trainer) == "reference_trainer.py":
            reference_argv(args)
        else:
            pytest.fail(f"{command.script} started {trainer}, which this test cannot check")


# ------------------------------------------------------------------------------------ the tests
def test_the_documentation_shows_commands_of_every_kind():
    scripts = {c.script for c in COMMANDS}
    assert {"rpo_continuous_action.py", "benchmark/sweep.sh", "benchmark/rpo.sh", "benchmark/report.py",
            "benchmark/tune.py", "benchmark/parity.sh", "benchmark/speed.py"} <= scripts, scripts


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_documented_command_parses(command, request, monkeypatch, tmp_path):
    if command.script == "unparsable":
        pytest.fail(f"{command.where}: not a line a shell can run ({command.args[0]}): {command.text}")
    if command.script == "rpo_continuous_action.py":
        check_trainer(command.args, request)
    elif command.script == "benchmark/reference_trainer.py":
        reference_argv(command.args)
    elif command.script.endswith(".sh"):
        check_shell_script(command, request, tmp_path)
    elif command.script.endswith(".py") and "argparse" in (ROOT / command.script).read_text():
        check_python_script(command, request, monkeypatch)
    else:
        pytest.fail(f"{command.where}: no way to check {command.script}; add one to tests/test_docs.py")


def readme_section(title):
    """The trainer commands of a section of the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"\n## {title}\n" in text, f"the README has no section '{title}'"
    section = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return [c for c in extract(section, f"README.md, {title}") if c.script == "rpo_continuous_action.py"]


def run_for_real(command, cwd, extra):
    """Runs a documented trainer command in cwd, its globs expanded there, with `extra` flags appended."""
    args = []
    for token in command.args:
        matches = sorted(glob.glob(token, root_dir=cwd)) if any(ch in token for ch in "*?[") else []
        assert len(matches) <= 1, f"{token} names {len(matches)} paths: {matches}"
        args += matches or [token]
    proc = subprocess.run([sys.executable, str(ROOT / "rpo_continuous_action.py"), *args, *extra], cwd=cwd,
                          env=clean_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (f"{command.text} {shlex.join(extra)} exited {proc.returncode}:\n"
                                  f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory):
    """The README's quick start, run for real in a fresh folder at a tiny budget: train, evaluate, resume."""
    cwd = tmp_path_factory.mktemp("quick_start")
    commands = readme_section("Quick start")
    done = {}
    for command in commands:
        if "--eval-checkpoint" in command.args:
            done["evaluate"] = run_for_real(command, cwd, ["--eval-episodes", "2"])
        elif "--resume" in command.args:  # the run goes on for one more iteration
            done["resume"] = run_for_real(command, cwd, ["--total-timesteps", "1536"])
        else:
            done["train"] = run_for_real(command, cwd, [*TINY_TRAIN, "--eval-episodes", "1"])
    checkpoints = glob.glob(str(cwd / "runs" / "**" / "*.cleanrl_model"), recursive=True)
    return {"cwd": cwd, "runs": done, "checkpoint": checkpoints[0] if len(checkpoints) == 1 else None,
            "commands": commands}


def test_quick_start_trains_evaluates_and_resumes(quick_start):
    assert set(quick_start["runs"]) == {"train", "evaluate", "resume"}, [c.text for c in quick_start["commands"]]
    assert quick_start["checkpoint"], "the quick start's training saved no checkpoint (it needs --save-model)"
    assert "eval: episodic_return=" in quick_start["runs"]["evaluate"].stdout
    resumed = quick_start["runs"]["resume"].stdout
    assert "resuming" in resumed and "global_step=1024" in resumed, resumed[-2000:]


def test_the_install_and_train_line_trains(tmp_path):
    [line] = [c for c in readme_section("Install and train") if "--env-id" in c.args]
    run_for_real(line, tmp_path, TINY_TRAIN)
    args, _ = rpo.parse_args([*line.args, *TINY_TRAIN])  # what the run was asked for: its env, seed and batches
    [run] = run_dirs(str(tmp_path))
    assert os.path.relpath(run, tmp_path).startswith(os.path.join("runs", f"{args.env_id}__{args.exp_name}__{args.seed}__"))
    # one update per batch of the tiny budget
    assert [s for s, _ in scalars(run)["losses/value_loss"]] == list(
        range(args.batch_size, args.total_timesteps + 1, args.batch_size))


def test_the_readme_test_command_is_the_one_ci_runs():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Tests\n", 1)[1].split("\n## ", 1)[0]
    [command] = [line for line in section.splitlines() if "-m pytest" in line]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in ci or f"({command})" in ci, command  # alone, or alone in a subshell


STUDY_TEMPLATE = ["Question", "Command", "Setup", "Table", "Figure", "Findings", "Limits", "Data"]


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "docs" / "studies").glob("*.md") if p.name != "index.md"))
def test_every_study_page_follows_the_template(page):
    text = (ROOT / "docs" / "studies" / page).read_text(encoding="utf-8")
    assert re.findall(r"^## (.+)$", text, flags=re.M) == STUDY_TEMPLATE
