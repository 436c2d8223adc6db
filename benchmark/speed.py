#!/usr/bin/env python3
"""Where the trainer's time goes, on this machine, next to the environment's own limit.

    python benchmark/speed.py --env-id Hopper-v4 --iterations 6

Prints three figures side by side:
  ceiling   steps/s of the same wrapped env (the trainer's wrapper chain and vector env) stepped
            alone with random actions: no policy, no learning. The trainer cannot beat it.
  trainer   steps/s of a real training run with the default hyperparameters (first iteration
            excluded: it pays for imports and warm-up).
  breakdown seconds per iteration in the rollout (acting + env stepping + logging),
            advantage estimation (GAE) and the update (the epochs of minibatch SGD).
Flags after `--` go to the trainer.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import rpo_continuous_action as rpo  # noqa: E402


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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="Hopper-v4")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--ceiling-steps", type=int, default=20000)
    parser.add_argument("extra", nargs="*", help="trainer flags, after --")
    opts = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    limit = ceiling(opts.env_id, opts.ceiling_steps)
    sps, phases, batch = profile_training(opts.env_id, opts.iterations, opts.extra)
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {opts.env_id}")
    print(f"ceiling (env stepped alone): {limit:8.0f} steps/s")
    print(f"trainer:                     {sps:8.0f} steps/s  ({sps / limit:.0%} of the ceiling)")
    print(f"per iteration ({batch} steps):")
    for name in ("rollout", "gae", "update"):
        print(f"  {name:8s} {phases[name]:6.3f} s  {phases[name] / phases['total']:6.1%}")
    print(f"  (the env stepped alone for one batch: {batch / limit:.3f} s)")


if __name__ == "__main__":
    main()
