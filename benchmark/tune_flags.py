"""The trainer's flags as benchmark/tune.py reads and passes them on: a --param range or list as an Optuna
distribution, an --enqueue value, searched values back as flags, and what the trainer's own parser says to a
command line; and the checks of tune.py's own options. The trainer (and torch) is imported on first use only:
tune.py's Slurm workers and its rebuild of a study's tables do without.
"""

import argparse
import contextlib
import functools
import io
import math
import typing
from dataclasses import fields

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

SET_BY_TUNER = {"env_id", "seed", "resume", "eval_checkpoint", "save_model", "torch_threads", "batch_size",
                "minibatch_size", "num_iterations"}


class UserError(Exception):
    """Bad input: one line on stderr, exit 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise UserError(message)


# The least value of each of tune.py's integer options (None, where allowed, is a default computed later)
LEAST = {"seeds": 1, "n_trials": 1, "workers": 1, "report_every": 1, "startup_trials": 0, "prune_startup": 0,
         "prune_warmup": 0}


def check_counts(opts):
    """tune.py's integer options against LEAST."""
    for name, least in LEAST.items():
        value = getattr(opts, name)
        if value is not None and value < least:
            raise UserError(f"{flag(name)} must be an integer >= {least}, got {value}")


@functools.cache
def types():
    """{Args field: its type}."""
    import rpo_continuous_action as rpo

    return {f.name: typing.get_type_hints(rpo.Args)[f.name] for f in fields(rpo.Args)}


def flag(name):
    return "--" + name.replace("_", "-")


def field_type(name):
    inner = [a for a in typing.get_args(types()[name]) if a is not type(None)]
    return inner[0] if inner else types()[name]


def field_name(text):
    name = text.strip().lstrip("-").replace("-", "_")
    if name not in types() or name in SET_BY_TUNER:
        raise UserError(f"the trainer has no flag {flag(name)} that can be searched")
    return name


def convert(text, name):
    t = field_type(name)
    try:
        value = {"true": True, "false": False}[text.strip().lower()] if t is bool else t(text)
        if t is float and not math.isfinite(value):
            raise ValueError
        return value
    except (KeyError, ValueError):
        raise UserError(f"{flag(name)} takes {'true/false' if t is bool else t.__name__} values, got '{text}'") from None


def parse_params(specs):
    """The --param options -> {field: Optuna distribution}."""
    params = {}
    for spec in specs:
        name, dist = parse_param(spec)
        if name in params:
            raise UserError(f"--param {flag(name)} is given twice")
        params[name] = dist
    return params


def parse_param(spec):
    """--param FLAG=LOW:HIGH[:log] or FLAG=A,B,C -> (field, Optuna distribution)."""
    name_text, _, rng = spec.partition("=")
    name = field_name(name_text)
    if "," in rng:
        choices = [convert(c, name) for c in rng.split(",")]
        if len(set(choices)) != len(choices) or len(choices) < 2:
            raise UserError(f"--param {spec}: give two or more distinct values")
        return name, CategoricalDistribution(choices)
    parts = rng.split(":")
    log = parts[2:] == ["log"]
    if len(parts) != 2 + log:
        raise UserError(f"--param '{spec}': expected FLAG=LOW:HIGH[:log] or FLAG=A,B,C")
    t = field_type(name)
    if t not in (int, float):
        raise UserError(f"--param {spec}: {flag(name)} is not a number; list its values (FLAG=A,B)")
    low, high = (convert(p, name) for p in parts[:2])
    if not low < high:
        raise UserError(f"--param {spec}: empty range (LOW must be below HIGH)")
    if log and low <= 0:
        raise UserError(f"--param {spec}: a log range needs LOW > 0")
    return name, (IntDistribution if t is int else FloatDistribution)(low, high, log=log)


def parse_enqueue(spec, dists):
    """--enqueue FLAG=V[,FLAG=V] -> {field: value}, each value in its searched distribution."""
    values = {}
    for item in spec.split(","):
        name_text, _, text = item.partition("=")
        name = field_name(name_text)
        if name not in dists:
            raise UserError(f"--enqueue {spec}: {flag(name)} is not searched")
        v, d = convert(text, name), dists[name]
        if not (v in d.choices if isinstance(d, CategoricalDistribution) else d.low <= v <= d.high):
            raise UserError(f"--enqueue {spec}: {v} is outside the search space of {flag(name)}")
        values[name] = v
    return values


def parse_fixed(fixed, searched):
    """The trainer flags after --: (the fields they set, the alpha among them or None, the others)."""
    names, alpha, rest = set(), None, []
    for i, token in enumerate(fixed):
        text = token[2:].split("=", 1)[0].replace("-", "_") if token.startswith("--") else ""
        name = text[3:] if text.startswith("no_") and text[3:] in types() else text
        if name == "rpo_alpha":
            alpha = token.split("=", 1)[1] if "=" in token else fixed[i + 1] if i + 1 < len(fixed) else ""
        elif text and (name not in types() or name in {"batch_size", "minibatch_size", "num_iterations"}):
            raise UserError(f"unknown trainer flag {token.split('=', 1)[0]} (see rpo_continuous_action.py --help)")
        elif name in SET_BY_TUNER or name in searched:
            raise UserError(f"trainer flag {flag(name)} is set by the tuner" if name in SET_BY_TUNER else
                            f"{flag(name)} is searched (--param); remove it from the trainer flags")
        names.add(name)
        rest += [] if name == "rpo_alpha" or (i and fixed[i - 1].split("=")[0] == "--rpo-alpha") else [token]
    return names, alpha, rest


def param_flags(values):
    """{field: value} -> trainer flags (booleans as --flag / --no-flag)."""
    argv = []
    for name, v in values.items():
        if isinstance(v, bool):
            argv.append(flag(name) if v else "--no-" + name.replace("_", "-"))
        else:
            argv += [flag(name), repr(v) if isinstance(v, float) else str(v)]
    return argv


def trainer_refuses(argv):
    """The trainer's own parser on argv: None, or the reason it gives."""
    import rpo_continuous_action as rpo

    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
            rpo.parse_args(argv)
    except rpo.UserError as e:
        return str(e)
    except SystemExit:  # tyro's box of text: its message line
        lines = [ln.strip(" │|") for ln in buf.getvalue().splitlines()]
        lines = [ln for ln in lines if ln and not set(ln) <= set("-─│╭╮╰╯ ")]
        return lines[1] if len(lines) > 1 else (lines[0] if lines else "bad value")
    return None
