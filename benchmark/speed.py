#!/usr/bin/env python3
"""Where the trainer's time goes, on this machine, next to the environment's own limit.

    python benchmark/speed.py --env-id Hopper-v4 --iterations 6

Prints three figures side by side:
  ceiling   steps/s of the same wrapped env (the trainer's wrapper chain and vector env) stepped
            alone with random actions: no policy, no learning. The trainer cannot beat it.
  trainer   steps/s of a real training run with the default hyperparameters (first iteration
            excluded: it pays for imports and warm-up).
  breakdown seconds per iteration in the rollout (acting + env stepping + logging + the batched critic),
            advantage estimation (GAE) and the update (the epochs of minibatch SGD).
  --side-by-side   also runs two trainers at once (as two runs share a 2-core machine) and prints
                   each one's steps/s against a run alone.
  --memory         also prints the peak resident memory of a whole default run (imports included)
                   of the trainer and, if built, of the reference.
  --against-reference  steps/s of this trainer and of the reference, run alternately (so that a shared
                   machine's drift hits both alike), iterations 2..K of each, --repeats times; prints the
                   medians and their ratio.
The reference is the published CleanRL script (from the cleanrl 1.2.0 wheel; gymnasium 0.29, mujoco 2.3),
which cannot run on gymnasium 1.x: it lives in a virtual environment of its own, REF_DIR/venv with the script
saved as REF_DIR/rpo_reference.py (REF_DIR defaults to /tmp/rpo-reference), and benchmark/reference.sh builds
both. It runs with its default hyperparameters, on the CPU, through benchmark/reference_trainer.py.
Flags after `--` go to the trainer.
"""
import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import rpo_continuous_action as rpo  # noqa: E402

ADAPTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_trainer.py")


def ceiling(env_id, steps, seed=1):
    args, _ = rpo.parse_args(["--env-id", env_id, "--num-envs", "1"])
    envs = rpo.make_envs(args, "speed")
    envs.reset(seed=seed)
    envs.action_space.seed(seed)
    actions = [envs.action_space.sample() for _ in range(steps)]
    start = time.perf_counter()
    for action in actions:
        envs.step(action)
    elapsed = time.perf_counter() - start
    envs.close()
    return steps / elapsed


def profile_training(env_id, iterations, extra):
    timings = {"gae": [], "update": []}

    def timed(name, fn):
        def wrapper(*a, **k):
            start = time.perf_counter()
            out = fn(*a, **k)
            timings[name].append(time.perf_counter() - start)
            return out
        return wrapper

    iteration_ends = []
    real_gae, real_update, real_add_scalar = rpo.compute_gae, rpo.update, rpo.SummaryWriter.add_scalar

    def add_scalar(self, tag, *a, **k):  # charts/SPS is written once per iteration, after the update
        if tag == "charts/SPS":
            iteration_ends.append(time.perf_counter())
        return real_add_scalar(self, tag, *a, **k)

    rpo.compute_gae, rpo.update = timed("gae", real_gae), timed("update", real_update)
    rpo.SummaryWriter.add_scalar = add_scalar
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            args, _ = rpo.parse_args(["--env-id", env_id, *extra])
            args, _ = rpo.parse_args(["--env-id", env_id, *extra, "--total-timesteps", str(iterations * args.batch_size)])
            with open(os.devnull, "w") as devnull:
                stdout, sys.stdout = sys.stdout, devnull
                try:
                    rpo.train(args)
                finally:
                    sys.stdout = stdout
        finally:
            os.chdir(cwd)
            rpo.compute_gae, rpo.update, rpo.SummaryWriter.add_scalar = real_gae, real_update, real_add_scalar
    per_iteration = np.diff(iteration_ends)  # drops the first iteration (warm-up)
    gae, update = np.median(timings["gae"][1:]), np.median(timings["update"][1:])
    total = np.median(per_iteration)
    phases = {"rollout": total - gae - update, "gae": gae, "update": update, "total": total}
    return args.batch_size / total, phases, args.batch_size


def batch_size(env_id, extra):
    """Steps per iteration with these trainer flags, as the trainer computes it (the reference's: no flags)."""
    return rpo.parse_args(["--env-id", env_id, *extra, "--total-timesteps", str(2**40)])[0].batch_size


def reference(ref_dir):
    """(python, script, environment) that run the reference in REF_DIR through its adapter, as parity.sh does."""
    script = os.path.join(ref_dir, "rpo_reference.py")
    return (os.path.join(ref_dir, "venv", "bin", "python"), ADAPTER, {**os.environ, "RPO_REFERENCE": script})


def trainer_runs(env_id, iterations, copies, extra, python=sys.executable, script=None, env=None):
    """Start `copies` trainers at once; returns their steps/s (iterations 2..K) and the peak RSS in MiB."""
    script = script or os.path.abspath(rpo.__file__)
    batch = batch_size(env_id, extra)
    cmd = [python, script, "--env-id", env_id, *extra, "--total-timesteps", str(iterations * batch), "--no-cuda"]
    with tempfile.TemporaryDirectory() as tmp:
        # stderr to files, not pipes: a full pipe would stall a run that is not being read yet
        errs = [tempfile.TemporaryFile("w+", dir=tmp) for _ in range(copies)]
        procs = [subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=err, text=True, env=env) for err in errs]
        outputs = [p.communicate()[0] for p in procs]
        for p, err in zip(procs, errs):
            if p.returncode != 0:
                err.seek(0)
                last = (err.read().strip().splitlines() or ["(no message)"])[-1]
                sys.exit(f"speed.py: error: {os.path.basename(script)} exited {p.returncode}: {last}")
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    rates = []
    for out in outputs:
        sps = [int(x) for x in re.findall(r"^SPS: (\d+)", out, re.M)]
        # SPS is cumulative: steps of iterations 2..K over their time, from the first and last figures
        first, last = batch / sps[0], iterations * batch / sps[-1]
        rates.append((iterations - 1) * batch / (last - first))
    return rates, peak_mib


def fail(message):
    """Bad input: one line on stderr, exit 2."""
    print(f"speed.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.error = fail  # one line, not argparse's usage block
    parser.add_argument("--env-id", default="Hopper-v4")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--ceiling-steps", type=int, default=20000)
    parser.add_argument("--side-by-side", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--against-reference", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ref-dir", default=os.environ.get("REF_DIR", "/tmp/rpo-reference"))
    parser.add_argument("extra", nargs="*", help="trainer flags, after --")
    opts = parser.parse_args(argv)
    # --iterations: the first is warm-up and not measured, so a rate needs two
    for name, least in (("iterations", 2), ("ceiling_steps", 1), ("repeats", 1)):
        if getattr(opts, name) < least:
            fail(f"--{name.replace('_', '-')} must be at least {least}, got {getattr(opts, name)}")
    if opts.extra:
        from tune_flags import trainer_refuses  # the trainer's own parser, its message in one line

        why = trainer_refuses(["--env-id", opts.env_id, *opts.extra])
        if why:
            fail(f"the trainer refuses {' '.join(opts.extra)}: {why}")
    ref_python, adapter, ref_env = reference(opts.ref_dir)
    ref_built = os.path.exists(ref_python) and os.path.exists(ref_env["RPO_REFERENCE"])
    if opts.against_reference and not ref_built:  # before minutes of measuring
        sys.exit(f"speed.py: error: no reference in {opts.ref_dir}; build it with benchmark/reference.sh")

    import torch

    torch.set_num_threads(1)
    try:
        limit = ceiling(opts.env_id, opts.ceiling_steps)
        sps, phases, batch = profile_training(opts.env_id, opts.iterations, opts.extra)
    except rpo.UserError as e:  # e.g. an env id gymnasium does not know
        fail(str(e).splitlines()[0])
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {opts.env_id}")
    print(f"ceiling (env stepped alone): {limit:8.0f} steps/s")
    print(f"trainer:                     {sps:8.0f} steps/s  ({sps / limit:.0%} of the ceiling)")
    print(f"per iteration ({batch} steps):")
    for name in ("rollout", "gae", "update"):
        print(f"  {name:8s} {phases[name]:6.3f} s  {phases[name] / phases['total']:6.1%}")
    print(f"  (the env stepped alone for one batch: {batch / limit:.3f} s)")

    if opts.side_by_side:
        [alone], _ = trainer_runs(opts.env_id, opts.iterations, 1, opts.extra)
        pair, _ = trainer_runs(opts.env_id, opts.iterations, 2, opts.extra)
        print(f"side by side: one run alone {alone:.0f} steps/s; two at once {pair[0]:.0f} and {pair[1]:.0f} steps/s "
              f"({min(pair) / alone:.0%} of alone)")
    if opts.against_reference:
        ours, theirs = [], []
        for _ in range(opts.repeats):
            theirs += trainer_runs(opts.env_id, opts.iterations, 1, [], ref_python, adapter, ref_env)[0]
            ours += trainer_runs(opts.env_id, opts.iterations, 1, opts.extra)[0]
        print(f"against the reference (medians of {opts.repeats}): reference {np.median(theirs):.0f} steps/s, "
              f"trainer {np.median(ours):.0f} steps/s, ratio {np.median(ours) / np.median(theirs):.2f}")
    if opts.memory:
        # ru_maxrss of children is the largest child so far: measure the reference first, in its own process tree
        code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
                "stderr=subprocess.DEVNULL, cwd=__import__('tempfile').mkdtemp()); "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
        def peak(python, script, env=None):
            steps = opts.iterations * batch_size(opts.env_id, [])  # a default run
            cmd = [python, script, "--env-id", opts.env_id, "--total-timesteps", str(steps), "--no-cuda"]
            return float(subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True,
                                        env=env).stdout)
        mine = peak(sys.executable, os.path.abspath(rpo.__file__))
        line = f"peak resident memory of a run: trainer {mine:.0f} MiB"
        if ref_built:
            line += f", reference {peak(ref_python, adapter, ref_env):.0f} MiB"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
