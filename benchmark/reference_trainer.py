"""The reference RPO script as a sweep.sh trainer, so that it runs through the same runner as ours.

    benchmark/reference.sh   # builds /tmp/rpo-reference/venv and /tmp/rpo-reference/rpo_reference.py
    PYTHON=/tmp/rpo-reference/venv/bin/python TRAINER=benchmark/reference_trainer.py \
        benchmark/sweep.sh --env-ids HalfCheetah-v4 --seeds 10 --alphas 0.01 --out OUT -- --total-timesteps 1000000

The reference is the published CleanRL script (cleanrl/rpo_continuous_action.py of the cleanrl 1.2.0 wheel,
on gymnasium 0.29 and mujoco 2.3.7), which benchmark/reference.sh builds with its venv. sweep.sh calls its
trainer with --env-id --seed --rpo-alpha --save-model --torch-threads 1 [--resume CKPT] and the flags after
its `--`, written for our trainer. The reference knows the first three and the trainer flags the two scripts
share (--total-timesteps, --num-steps, ...), but not the rest, and it parses them with argparse. This adapter
  - drops --save-model and --resume (the reference writes no checkpoint);
  - applies --torch-threads with torch.set_num_threads (the reference would take every core, and parallel
    runs crawl);
  - writes our boolean flags the reference's way: --no-anneal-lr becomes --anneal-lr False (a bare
    --anneal-lr is the same in both);
  - runs the reference on the CPU (--cuda False): its RPO noise is drawn on the CPU and never moved to the
    network's device, so its update fails on a GPU; an explicit --cuda is refused;
and runs the reference script in this process as __main__ with the remaining arguments. Run it with the
reference's own python (its venv).

The reference cannot resume: a run that is interrupted writes no checkpoint, so the next sweep
starts it again from scratch (sweep.sh deletes its partial event files first).

Environment: RPO_REFERENCE, the reference script (default REF_DIR/rpo_reference.py, REF_DIR defaulting to
/tmp/rpo-reference as in benchmark/reference.sh).
"""

import os
import runpy
import signal
import sys

DEFAULT = os.path.join(os.environ.get("REF_DIR", "/tmp/rpo-reference"), "rpo_reference.py")
DROPPED = {"--save-model": 0, "--no-save-model": 0, "--resume": 1}  # flag -> how many values it takes
# The reference's boolean flags (argparse, `type=strtobool, nargs="?", const=True`): --flag, --flag False
BOOLEANS = {"--torch-deterministic", "--cuda", "--track", "--capture-video", "--anneal-lr", "--norm-adv", "--clip-vloss"}
FALSE = ("n", "no", "f", "false", "off", "0")  # what strtobool reads as False
NO_GPU = ("the reference cannot train on a GPU (its RPO noise stays on the CPU: cleanrl 1.2.0's script has no "
          ".to(device) on it), so it runs on the CPU; drop --cuda")
INTERRUPTED = "reference_trainer.py: interrupted; the reference writes no checkpoint, so this run starts from scratch next time"


def reference_argv(argv):
    """(the arguments the reference understands, torch threads or None) from sweep.sh's arguments;
    ValueError for what the reference cannot do."""
    kept, threads, i = [], None, 0
    while i < len(argv):
        flag, _, value = argv[i].partition("=")
        if flag == "--torch-threads":
            if not value:
                i += 1
                value = argv[i] if i < len(argv) else ""
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"--torch-threads must be an integer >= 1, got '{value}'")
            threads = int(value)
        elif flag in DROPPED:
            i += DROPPED[flag] if not value else 0
        elif flag == "--cuda":  # --cuda, --cuda=B or --cuda B: refused unless B is false
            if not value and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                i += 1
                value = argv[i]
            if value.lower() not in FALSE:
                raise ValueError(NO_GPU)
        elif flag == "--no-cuda":
            pass  # the reference always gets --cuda False
        elif flag.startswith("--no-") and "--" + flag[5:] in BOOLEANS and not value:
            kept += ["--" + flag[5:], "False"]
        else:
            kept.append(argv[i])
        i += 1
    return [*kept, "--cuda", "False"], threads


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    script = os.environ.get("RPO_REFERENCE", DEFAULT)
    if not os.path.isfile(script):
        print(f"reference_trainer.py: error: the reference script {script} does not exist; build it with "
              "benchmark/reference.sh (or point RPO_REFERENCE at it)", file=sys.stderr)
        return 2
    try:
        args, threads = reference_argv(argv)
    except ValueError as e:
        print(f"reference_trainer.py: error: {e}", file=sys.stderr)
        return 2
    if threads is not None:
        import torch

        torch.set_num_threads(threads)

    stopped_by = []

    def on_signal(signum, frame):
        stopped_by.append(signum)
        raise KeyboardInterrupt

    # sweep.sh stops its trainers with SIGINT or SIGTERM. It starts them in the background, where SIGINT
    # is ignored and Python keeps it so: without a handler of its own, the reference would not stop.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 128 + (stopped_by[0] if stopped_by else signal.SIGINT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
