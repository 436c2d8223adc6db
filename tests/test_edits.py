"""Copies of the trainer edited the way researchers edit it train exactly what their code says.

Each test writes an edited copy of rpo_continuous_action.py, trains it for a few iterations on
Pendulum-v1 and reads back what a user sees. The sharpest check of rollout/update consistency:
with --rpo-alpha 0 --update-epochs 1 --num-minibatches 1 the only gradient step of an iteration
comes after a forward pass on exactly the rollout's batch, so old_approx_kl must be 0 (to float
rounding) at every iteration, and with a clipped or an unclipped value loss the first loss is the same.
"""
import math
import os

import numpy as np
import pytest
import torch

import rpo_continuous_action as rpo
from conftest import TRAINER, run_dirs, run_trainer, scalars

CONSISTENCY = ["--env-id", "Pendulum-v1", "--rpo-alpha", "0", "--update-epochs", "1", "--num-minibatches", "1",
               "--num-steps", "256", "--total-timesteps", "1536"]
ACTOR = """        self.actor_mean = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),"""
CRITIC = """        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),"""
OPTIMIZER = "optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)"
MEAN_AND_LOGSTD = """        action_mean = self.actor_mean(x)
        return action_mean, self.actor_logstd.expand_as(action_mean)"""

EDITS = {
    "relu_actor": [(ACTOR, ACTOR.replace("nn.Tanh()", "nn.ReLU()"))],
    "relu_critic": [(CRITIC, CRITIC.replace("nn.Tanh()", "nn.ReLU()"))],
    "deeper_actor_with_layernorm": [(ACTOR, ACTOR.replace("            nn.Tanh(),\n            layer_init(nn.Linear(64, 64)),",
                                                          "            nn.Tanh(),\n            layer_init(nn.Linear(64, 64)),\n"
                                                          "            nn.LayerNorm(64),\n            nn.Tanh(),\n"
                                                          "            layer_init(nn.Linear(64, 64)),", 1))],
    "state_dependent_logstd": [
        ("        self.actor_logstd = nn.Parameter(torch.zeros(1, act_dim))",
         "        self.actor_logstd = nn.Parameter(torch.zeros(1, act_dim))\n"
         "        self.actor_logstd_head = layer_init(nn.Linear(obs_dim, act_dim), std=0.5)"),
        (MEAN_AND_LOGSTD, "        action_mean = self.actor_mean(x)\n"
                          "        return action_mean, self.actor_logstd_head(x).clamp(-2, 1)")],
    "adamw": [(OPTIMIZER, "optimizer = optim.AdamW(agent.parameters(), lr=args.learning_rate, eps=1e-5, weight_decay=0.01)")],
}


def edited_copy(directory, edits):
    source = open(TRAINER).read()
    for old, new in edits:
        assert source.count(old) == 1, f"the trainer no longer has {old!r}"
        source = source.replace(old, new)
    path = os.path.join(directory, "rpo_continuous_action.py")
    with open(path, "w") as f:
        f.write(source)
    return path


def train_copy(tmp_path, edits, *flags, check=True):
    script = edited_copy(str(tmp_path), edits)
    proc = run_trainer(str(tmp_path), *flags, script=script, check=check)
    return proc, (scalars(run_dirs(str(tmp_path))[0]) if check else None)


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_copy_acts_and_scores_with_the_agent_as_written(tmp_path, edit):
    proc, logged = train_copy(tmp_path, EDITS[edit], *CONSISTENCY)
    old_approx_kl = [v for _, v in logged["losses/old_approx_kl"]]
    assert len(old_approx_kl) == 6
    np.testing.assert_allclose(old_approx_kl, 0.0, atol=1e-6)
    np.testing.assert_allclose([v for _, v in logged["losses/approx_kl"]], 0.0, atol=1e-6)
    # which way the rollout acted: the numpy copy follows Linear/Tanh/ReLU actors with a learned std, torch the rest
    falls_back = edit in ("deeper_actor_with_layernorm", "state_dependent_logstd")
    assert ("note: acting through torch (slower)" in proc.stderr) == falls_back
    if edit == "state_dependent_logstd":  # the logged sigma is the state-dependent one, not the unused parameter's 1.0
        assert all(abs(v - 1.0) > 1e-3 for _, v in logged["charts/action_std"])


def test_relu_critic_values_are_the_critics_own(tmp_path):
    """The values that GAE and value clipping use come from the edited critic: on the first minibatch the
    new values equal the stored ones, so the clipped and unclipped value losses are the same number."""
    losses = []
    for clip in ("--clip-vloss", "--no-clip-vloss"):
        (tmp_path / clip).mkdir()
        _, logged = train_copy(tmp_path / clip, EDITS["relu_critic"], *CONSISTENCY, clip)
        losses.append(logged["losses/value_loss"][0][1])
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_adamw_trains_anneals_saves_and_resumes(tmp_path):
    flags = ["--env-id", "Pendulum-v1", "--num-steps", "256", "--num-minibatches", "4", "--update-epochs", "2",
             "--total-timesteps", "1024", "--save-model", "--eval-episodes", "0", "--learning-rate", "1e-3"]
    _, logged = train_copy(tmp_path, EDITS["adamw"], *flags)
    np.testing.assert_allclose([v for _, v in logged["charts/learning_rate"]], [1e-3, 7.5e-4, 5e-4, 2.5e-4], rtol=1e-6)
    [model] = [os.path.join(d, f) for d, _, files in os.walk(tmp_path / "runs") for f in files if f.endswith("_model")]
    saved = torch.load(model, weights_only=True)["optimizer"]
    [group] = saved["param_groups"]
    assert group["weight_decay"] == 0.01 and group["lr"] == pytest.approx(2.5e-4)  # AdamW's own state, annealed
    # AdamW keeps a state per parameter of the Agent (Pendulum-v1: 3 observations, 1 action), and took a step per
    # minibatch: 4 iterations x 2 epochs x 4 minibatches
    assert len(saved["state"]) == len(list(rpo.Agent(3, 1, 0.5).parameters()))
    assert int(saved["state"][0]["step"]) == 4 * 2 * 4
    # the saved run continues to twice the steps: the schedule is recomputed for the new total
    proc = run_trainer(str(tmp_path), "--resume", model, "--total-timesteps", "2048", script=str(tmp_path / "rpo_continuous_action.py"))
    assert "resuming" in proc.stdout
    resumed = torch.load(model, weights_only=True)["optimizer"]
    assert int(resumed["state"][0]["step"]) == 8 * 2 * 4 and resumed["param_groups"][0]["lr"] == pytest.approx(1e-3 / 8)


def test_a_numpy_copy_that_disagrees_with_the_agent_is_not_used(tmp_path):
    """The fast path's copy of the actor is checked before each rollout: a wrong one (here: told that ReLU
    is tanh) is caught on the probes, and torch acts instead."""
    edits = EDITS["relu_actor"] + [("nn.ReLU: lambda x: np.maximum(x, 0)", "nn.ReLU: np.tanh")]
    proc, logged = train_copy(tmp_path, edits, *CONSISTENCY)
    assert "note: acting through torch (slower): the numpy copy cannot compute this Agent" in proc.stderr
    np.testing.assert_allclose([v for _, v in logged["losses/old_approx_kl"]], 0.0, atol=1e-6)


def test_a_rollout_that_did_not_act_as_the_agent_stops_the_run(tmp_path):
    """Behind the probes, every rollout is checked against the Agent: with the probes edited away, the wrong
    copy acts, and the run stops at the first iteration with one line instead of training on it."""
    edits = EDITS["relu_actor"] + [("nn.ReLU: lambda x: np.maximum(x, 0)", "nn.ReLU: np.tanh"),
                                   ("self.use_torch = not (np.allclose(self._mean(probes)", "self.use_torch = False and (np.allclose(self._mean(probes)")]
    proc, _ = train_copy(tmp_path, edits, *CONSISTENCY, check=False)
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert "error: at iteration 1 the rollout acted up to " in line
    assert line.endswith("away from Agent.get_mean_and_logstd; make RolloutActor act through torch for this Agent")


def test_a_distribution_the_rollout_does_not_sample_is_refused(tmp_path):
    """An Agent that scores actions under another distribution than the Gaussian the rollout samples stops
    at the first iteration, with one line saying what to change."""
    edits = [("        logprob = gaussian_logprob(action, action_mean, action_logstd)",
              "        logprob = gaussian_logprob(action, action_mean, action_logstd + 0.1)")]
    proc, _ = train_copy(tmp_path, edits, *CONSISTENCY, check=False)
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert line.endswith("error: Agent.get_action_and_value scores actions under another distribution than the "
                         "N(mean, exp(logstd)) of get_mean_and_logstd that the rollout samples: change both")


def test_the_entropy_shortcut_changes_no_number(tmp_path):
    """At the default --ent-coef 0 the update leaves the entropy term out of the loss (it is 0 x entropy); a copy
    that always subtracts it logs the same numbers, bit for bit, with RPO's noise on."""
    flags = ["--env-id", "Pendulum-v1", "--num-steps", "512", "--num-minibatches", "8", "--update-epochs", "2",
             "--total-timesteps", "2048"]
    logged = []
    for name, edits in (("shortcut", []), ("full_loss", [("            if args.ent_coef:  #", "            if True:  #")])):
        (tmp_path / name).mkdir()
        logged.append(train_copy(tmp_path / name, edits, *flags)[1])
    shortcut, full_loss = ({tag: v for tag, v in run.items() if tag != "charts/SPS"} for run in logged)
    # the first update starts from σ = 1 on Pendulum's one action dimension: the entropy of N(0, 1), nearly
    assert len(shortcut["losses/value_loss"]) == 4
    assert shortcut["losses/entropy"][0][1] == pytest.approx(0.5 + 0.5 * math.log(2 * math.pi), abs=1e-2)
    assert shortcut == full_loss


@pytest.mark.parametrize("layer,num_envs", [("nn.Dropout(0.2)", "1"), ("nn.BatchNorm1d(64)", "3")])
def test_an_agent_whose_mean_is_not_its_observations_own_is_named_as_the_cause(tmp_path, layer, num_envs):
    """Dropout makes the mean differ between two calls, and BatchNorm in training mode makes an observation's mean
    depend on the batch it came in: the run stops with one line that says so, instead of telling the user to act
    through torch, which such a run already does."""
    edits = [(ACTOR, ACTOR.replace("            nn.Tanh(),\n            layer_init(nn.Linear(64, 64)),",
                                   f"            nn.Tanh(),\n            {layer},\n            layer_init(nn.Linear(64, 64)),", 1))]
    proc, _ = train_copy(tmp_path, edits, *CONSISTENCY, "--num-envs", num_envs, check=False)
    assert proc.returncode == 2
    note, line = proc.stderr.splitlines()
    assert note.startswith("note: acting through torch (slower)") and "Traceback" not in proc.stderr
    assert line.endswith("error: Agent.get_mean_and_logstd gives other means when called again (dropout, BatchNorm or "
                         "other training-mode layers): the rollout cannot be scored; make it deterministic")


def test_batchnorm_acting_on_one_observation_stops_with_one_line(tmp_path):
    """The copy a user makes first: BatchNorm in the actor, one env. In training mode BatchNorm cannot normalize a
    batch of one observation, which is what each rollout step gives it: one line names that, no traceback."""
    edits = [(ACTOR, ACTOR.replace("            nn.Tanh(),\n            layer_init(nn.Linear(64, 64)),",
                                   "            nn.Tanh(),\n            nn.BatchNorm1d(64),\n"
                                   "            layer_init(nn.Linear(64, 64)),", 1))]
    proc, _ = train_copy(tmp_path, edits, *CONSISTENCY, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.splitlines()[-1]
    assert line.endswith("error: the Agent cannot act on 1 observation(s) at a time, as the rollout does: Expected more "
                         "than 1 value per channel when training, got input size torch.Size([1, 64])")


def test_a_number_added_to_update_is_logged(tmp_path):
    """Logging follows `update`'s returned dict: one added line there is one more TensorBoard curve."""
    edits = [('"clipfrac": ((ratio - 1.0).abs() > args.clip_coef).float().mean().item()}',
              '"clipfrac": ((ratio - 1.0).abs() > args.clip_coef).float().mean().item(), "logstd_mean": agent.actor_logstd.mean().item()}')]
    _, logged = train_copy(tmp_path, edits, *CONSISTENCY)
    assert len(logged["losses/logstd_mean"]) == 6
    assert [s for s, _ in logged["losses/logstd_mean"]] == [s for s, _ in logged["losses/approx_kl"]]
