"""What the docs promise about training (docs/usage.md's flags and metrics, docs/differences.md), each pinned with a
number worked out here, not read off the trainer.

The trainer is reached only through its stable interfaces: `parse_args`, `make_envs`, `Agent`, `update(agent,
optimizer, batch, args)` and `main`, whose `make_envs` and `update` an in-process run can watch. Where a number
depends on how far the policy moved, the optimizer is one of the test's own that ignores the gradients and sets the
weights to what the test has planned (`Planned`): "any torch.optim optimizer works" (docs/changing-the-file.md) makes
that fair. `tests/planted_bugs.py` plants a plausible bug for each promise in a copy of the trainer and shows which
tests here fail.
"""
import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions.normal import Normal

import rpo_continuous_action as rpo
import term_trunc_env  # noqa: F401  registers TermTrunc-v0
from conftest import run_dirs, scalars


def update_args(*flags, batch):
    """The trainer's own args for an update of `batch` samples (Pendulum-v1's shapes: 3-d observations, 1-d actions)."""
    args, _ = rpo.parse_args(["--env-id", "Pendulum-v1", "--num-steps", str(batch), "--total-timesteps", str(batch),
                              *flags])
    return args


def k3(logratio):
    """Schulman's k3 estimator for one log-ratio shared by every sample: e^r - 1 - r."""
    return math.expm1(logratio) - logratio


class Planned(torch.optim.Optimizer):
    """An optimizer that ignores the gradients: its n-th step (n from 1) calls plan(n), which sets the weights."""

    def __init__(self, params, plan):
        super().__init__(params, {})
        self.plan, self.steps = plan, 0

    @torch.no_grad()
    def step(self, closure=None):
        self.steps += 1
        self.plan(self.steps)


def agent_for(act_dim=1, alpha=0.5, seed=0):
    torch.manual_seed(seed)
    return rpo.Agent(3, act_dim, alpha)


def at_the_mean_batch(agent, offsets):
    """len(offsets) copies of one observation, each with the action at the policy's mean (sigma = 1) and a stored
    log-prob of log N(mean; mean, 1) - offset: before any step, sample i's ratio is exactly e^offset[i]."""
    n = len(offsets)
    x = torch.full((n, 3), 0.3)
    with torch.no_grad():
        mean, logstd = agent.get_mean_and_logstd(x)
        values = agent.get_value(x).view(-1)
    assert torch.all(logstd == 0)
    stored = torch.full((n,), -0.5 * math.log(2 * math.pi)) - torch.as_tensor(offsets, dtype=torch.float32)
    return {"obs": x, "actions": mean.clone(), "logprobs": stored, "values": values, "returns": values + 1.0,
            "advantages": torch.linspace(-1, 1, n)}


def sampled_batch(agent, n, seed=1):
    """A rollout's batch as the trainer makes one: actions drawn from the unperturbed N(mean, sigma), their log-probs
    (torch.distributions, not the trainer's formula), values, and some returns."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    with torch.no_grad():
        mean, logstd = agent.get_mean_and_logstd(x)
        actions = mean + logstd.exp() * torch.randn(mean.shape, generator=g)
        logprobs = Normal(mean, logstd.exp()).log_prob(actions).sum(1)
        values = agent.get_value(x).view(-1)
    returns = values + torch.randn(n, generator=g)
    return {"obs": x, "actions": actions, "logprobs": logprobs, "values": values, "returns": returns,
            "advantages": returns - values}


def count_steps(optimizer):
    steps = []
    optimizer.register_step_post_hook(lambda *_: steps.append(1))
    return steps


# ------------------------------------------------ --target-kl ------------------------------------------------------
# The plan: 64 copies of one sample, actions at the mean, sigma = e^(n * 0.01) after the n-th step. Every minibatch
# then has the same noise-free log-ratio, log N(mu; mu, e^(0.01 n)) - log N(mu; mu, 1) = -0.01 n, and KL estimate
# k3(-0.01 n): 0.00079 after the 1st epoch of 4 steps, 0.0031 after the 2nd, 0.0069 after the 3rd.
GROW = 0.01


def grow_sigma(agent):
    return lambda n: agent.actor_logstd.fill_(GROW * n)


def test_target_kl_stops_after_the_epoch_whose_noise_free_kl_exceeds_it():
    """--target-kl 0.005 stops after the 3rd epoch's 4 steps: 12 of 40 steps. A check before each step (as some PPO
    code does) would stop before the 12th (k3 after 11 steps is 0.0058), one that never fires does all 40; the
    noise-free KL of the epoch measured before its last step (k3 after 11, 0.0058) still stops after the 3rd."""
    assert k3(-GROW * 8) < 0.005 < k3(-GROW * 11) < k3(-GROW * 12) and k3(-GROW * 10) < 0.005
    for flags, expected_steps in ((["--target-kl", "0.005"], 12), ([], 40)):
        agent = agent_for(alpha=0.5)
        batch = at_the_mean_batch(agent, [0.0] * 64)
        optimizer = Planned(agent.parameters(), grow_sigma(agent))
        stats = rpo.update(agent, optimizer, batch, update_args("--num-minibatches", "4", "--update-epochs", "10",
                                                                *flags, batch=64))
        assert optimizer.steps == expected_steps, flags
        # approx_kl_unperturbed: the stored actions rescored without noise after the last epoch's last step
        assert stats["approx_kl_unperturbed"] == pytest.approx(k3(-GROW * expected_steps), rel=1e-4)


def test_target_kl_compares_the_noise_free_kl_not_the_noisy_one():
    """With alpha = 0.5 the noisy approx_kl is about alpha^2/6 = 0.042 from the first minibatch on; a few small Adam
    steps move the policy itself by far less. --target-kl 0.01 must then let every epoch run (the noisy KL would stop
    the update after its first epoch, as docs/differences.md says the reference's test would)."""
    agent = agent_for(alpha=0.5)
    batch = sampled_batch(agent, 2048)
    optimizer = torch.optim.Adam(agent.parameters(), lr=3e-4, eps=1e-5)
    steps = count_steps(optimizer)
    stats = rpo.update(agent, optimizer, batch, update_args("--num-minibatches", "4", "--update-epochs", "3",
                                                            "--target-kl", "0.01", batch=2048))
    assert stats["approx_kl"] > 0.02 and stats["approx_kl_unperturbed"] < 0.001  # the two sides of 0.01
    assert len(steps) == 12


def test_a_tiny_target_kl_stops_after_one_whole_epoch():
    """Any move exceeds --target-kl 1e-12: the update stops after the first epoch's 4 steps, not before them."""
    agent = agent_for(alpha=0.0)
    batch = sampled_batch(agent, 256)
    optimizer = torch.optim.Adam(agent.parameters(), lr=3e-4, eps=1e-5)
    steps = count_steps(optimizer)
    stats = rpo.update(agent, optimizer, batch, update_args("--num-minibatches", "4", "--update-epochs", "10",
                                                            "--target-kl", "1e-12", batch=256))
    assert len(steps) == 4 and stats["approx_kl_unperturbed"] > 1e-12


# ------------------------------------------------ the KL metrics ---------------------------------------------------
def test_the_kl_metrics_at_alpha_0_are_the_noise_free_estimators_before_and_after_the_last_step():
    """At alpha = 0, with the planned sigma: the last minibatch's forward pass comes after 11 of 12 steps, so
    old_approx_kl = -mean(logratio) = 0.11 and approx_kl = k3(-0.11); approx_kl_unperturbed, after the 12th step,
    is k3(-0.12)."""
    agent = agent_for(alpha=0.0)
    batch = at_the_mean_batch(agent, [0.0] * 64)
    optimizer = Planned(agent.parameters(), grow_sigma(agent))
    stats = rpo.update(agent, optimizer, batch, update_args("--num-minibatches", "4", "--update-epochs", "3", batch=64))
    assert optimizer.steps == 12
    assert stats["old_approx_kl"] == pytest.approx(GROW * 11, rel=1e-4)
    assert stats["approx_kl"] == pytest.approx(k3(-GROW * 11), rel=1e-4)
    assert stats["approx_kl_unperturbed"] == pytest.approx(k3(-GROW * 12), rel=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_approx_kl_and_approx_kl_unperturbed_are_equal_at_alpha_0_where_the_last_step_changes_nothing(alpha):
    """docs/usage.md: at alpha = 0 the two are the same estimator on the same minibatch, one step apart, and equal where
    that step changes nothing. The plan grows sigma for 11 steps and leaves the 12th a no-op: at alpha = 0 both are
    k3(-0.11). At alpha = 0.5 approx_kl carries RPO's noise: each sample's log-ratio is -0.11 - z^2 / (2 sigma^2), so its
    k3 is at least k3(-0.11) = 0.0058, and 0.0045 more on average."""
    agent = agent_for(alpha=alpha)
    batch = at_the_mean_batch(agent, [0.0] * 64)
    optimizer = Planned(agent.parameters(), lambda n: agent.actor_logstd.fill_(GROW * min(n, 11)))
    stats = rpo.update(agent, optimizer, batch, update_args("--num-minibatches", "4", "--update-epochs", "3", batch=64))
    assert stats["approx_kl_unperturbed"] == pytest.approx(k3(-GROW * 11), rel=1e-4)
    if alpha == 0:
        assert stats["approx_kl"] == pytest.approx(stats["approx_kl_unperturbed"], rel=1e-6)
    else:
        assert stats["approx_kl"] > stats["approx_kl_unperturbed"] + 0.001


@pytest.mark.parametrize("act_dim,sigma", [(1, 1.0), (3, 1.0), (3, 2.0)])
def test_before_the_policy_moves_approx_kl_is_alpha_squared_over_6_per_dimension(act_dim, sigma):
    """docs/usage.md: before the first step, approx_kl is near alpha^2/6 per action dimension at sigma = 1. Worked out:
    an action a = mu + sigma * eps scored under N(mu + z, sigma) has log-ratio r = sum_i (eps_i z_i / sigma -
    z_i^2 / (2 sigma^2)). E[e^r | z] = 1, so E[k3] = E[e^r - 1 - r] = E[-r] = d E[z^2] / (2 sigma^2) = d alpha^2 /
    (6 sigma^2). The one update step comes after the only forward pass, so the logged approx_kl is the mean of k3 over
    the n samples; its tolerance is 5 standard errors, the per-sample spread computed here by Monte Carlo."""
    alpha, n = 0.5, 16384
    agent = agent_for(act_dim=act_dim, alpha=alpha)
    with torch.no_grad():
        agent.actor_logstd.fill_(math.log(sigma))
    batch = sampled_batch(agent, n)
    optimizer = torch.optim.Adam(agent.parameters(), lr=3e-4, eps=1e-5)
    stats = rpo.update(agent, optimizer, batch, update_args("--num-minibatches", "1", "--update-epochs", "1", batch=n))
    expected = act_dim * alpha**2 / (6 * sigma**2)
    rng = np.random.default_rng(0)
    eps, z = rng.standard_normal((200_000, act_dim)), rng.uniform(-alpha, alpha, (200_000, act_dim))
    r = (eps * z / sigma - z**2 / (2 * sigma**2)).sum(1)
    per_sample = np.expm1(r) - r
    assert per_sample.mean() == pytest.approx(expected, rel=0.02)  # the derivation, checked
    assert stats["approx_kl"] == pytest.approx(expected, abs=5 * per_sample.std() / math.sqrt(n))


# ------------------------------------------------ clipfrac ---------------------------------------------------------
def test_clipfrac_is_the_fraction_over_every_minibatch_of_every_epoch():
    """64 copies of one sample at alpha = 0, 9 of them stored with a log-prob 0.5 below the policy's (ratio e^0.5 =
    1.65, clipped at 0.2), the rest at ratio 1. The planned optimizer shrinks sigma to e^-0.3 for the 2nd epoch (every
    ratio now e^0.3 = 1.35 or more: all clipped) and restores it for the 3rd. The fraction over all 12 minibatches is
    (9/64 + 1 + 9/64) / 3 = 41/96. No single minibatch of 16 can show 9/64, and the last epoch alone shows 9/64."""
    agent = agent_for(alpha=0.0)
    batch = at_the_mean_batch(agent, [0.5] * 9 + [0.0] * 55)

    def plan(n):
        if n in (4, 8):  # the end of the 1st and of the 2nd epoch
            agent.actor_logstd.fill_(-0.3 if n == 4 else 0.0)

    optimizer = Planned(agent.parameters(), plan)
    stats = rpo.update(agent, optimizer, batch, update_args("--num-minibatches", "4", "--update-epochs", "3", batch=64))
    assert optimizer.steps == 12
    assert stats["clipfrac"] == pytest.approx(41 / 96, rel=1e-6)


# ------------------------------------------------ --ent-coef -------------------------------------------------------
def first_step_gradients(ent_coef):
    agent = agent_for(act_dim=2, alpha=0.5)
    batch = sampled_batch(agent, 128)
    optimizer = torch.optim.Adam(agent.parameters(), lr=3e-4, eps=1e-5)
    grads = []
    optimizer.register_step_pre_hook(
        lambda *_: grads.append({k: p.grad.clone() for k, p in agent.named_parameters()}) if not grads else None)
    torch.manual_seed(7)  # the same minibatches and RPO noise for both coefficients
    rpo.update(agent, optimizer, batch, update_args("--num-minibatches", "2", "--update-epochs", "1", "--ent-coef",
                                                    str(ent_coef), "--max-grad-norm", "1e9", batch=128))
    return grads[0]


def test_ent_coef_subtracts_its_multiple_of_the_entropy():
    """loss - ent_coef * mean entropy, with entropy = sum_i (1/2 + log(2 pi)/2 + logstd_i): the term adds exactly
    -ent_coef to the gradient of each log-sigma (the bonus raises sigma) and nothing to any other weight's."""
    plain, bonus = first_step_gradients(0.0), first_step_gradients(0.3)
    difference = bonus["actor_logstd"] - plain["actor_logstd"]
    torch.testing.assert_close(difference, torch.full((1, 2), -0.3), rtol=0, atol=1e-6)
    for name in plain:
        if name != "actor_logstd":
            torch.testing.assert_close(bonus[name], plain[name], rtol=0, atol=1e-7)


# ------------------------------------------------ a run, watched -----------------------------------------------------
SPIED = ["--env-id", "TermTrunc-v0", "--num-envs", "2", "--num-steps", "32", "--num-minibatches", "2",
         "--update-epochs", "2", "--total-timesteps", "128", "--gamma", "0.9", "--ent-coef", "0.1", "--vf-coef", "0.7",
         "--eval-episodes", "0"]
T, N, GAMMA = 32, 2, 0.9


def watched_run(cwd, *flags):
    """rpo.main(flags) in this process, in cwd, recording what the trainer's own interfaces see: every step of the
    vector env that make_envs returns (normalized observations and rewards, the two flags, the normalized final
    observations), and at every update a copy of the agent as the rollout used it and the batch."""
    steps, updates = [], []
    real_make_envs, real_update = rpo.make_envs, rpo.update

    def make_envs(args, run_name):
        envs = real_make_envs(args, run_name)
        real_step = envs.step

        def step(actions):
            out = real_step(actions)
            obs, rewards, terminations, truncations, infos = out
            final = {int(i): np.array(infos["final_obs"][i]) for i in np.flatnonzero(infos.get("_final_obs", []))}
            steps.append({"obs": np.array(obs), "rewards": np.array(rewards), "terminated": np.array(terminations),
                          "truncated": np.array(truncations), "final": final})
            return out

        envs.step = step
        return envs

    def update(agent, optimizer, batch, args):
        updates.append({"agent": copy.deepcopy(agent), "steps": len(steps),
                        "batch": {k: v.detach().cpu().clone() for k, v in batch.items()}})
        return real_update(agent, optimizer, batch, args)

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rpo, "make_envs", make_envs)
        mp.setattr(rpo, "update", update)
        mp.chdir(cwd)
        assert rpo.main(list(flags)) == 0
    torch.set_num_threads(threads)
    [run] = run_dirs(str(cwd))
    return steps, updates, scalars(run)


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    made = {}

    def run(bootstrap):
        if bootstrap not in made:
            flag = "--bootstrap-truncated" if bootstrap else "--no-bootstrap-truncated"
            made[bootstrap] = watched_run(tmp_path_factory.mktemp("watched"), *SPIED, flag)
        return made[bootstrap]

    return run


def value(agent, obs):
    with torch.no_grad():
        return agent.get_value(torch.as_tensor(obs, dtype=torch.float32)[None]).item()


@pytest.mark.parametrize("bootstrap", [True, False], ids=["bootstrap-truncated", "no-bootstrap-truncated"])
def test_the_value_target_of_an_episode_end(watched, bootstrap):
    """At the step that ends an episode the value target (GAE's return) is the normalized reward alone, plus, with
    --bootstrap-truncated and only where the time limit cut the episode without a termination, gamma = 0.9 times the
    value of the final observation (as normalized for the network), by the weights the rollout acted with."""
    steps, updates, _ = watched(bootstrap)
    assert len(updates) == 2
    seen = {"terminated": 0, "truncated": 0, "both": 0}
    # how far the plausible wrong targets are from the right one: the bootstrap on a termination, from the next
    # episode's first observation, without gamma
    apart = {"termination": 0.0, "reset observation": 0.0, "gamma": 0.0}
    for update in updates:
        agent, returns = update["agent"], update["batch"]["returns"].numpy().reshape(T, N)
        for t, step in enumerate(steps[update["steps"] - T:update["steps"]]):
            for i in range(N):
                terminated, truncated = bool(step["terminated"][i]), bool(step["truncated"][i])
                if not (terminated or truncated):
                    continue
                seen["both" if terminated and truncated else "terminated" if terminated else "truncated"] += 1
                final = value(agent, step["final"][i])
                if terminated:
                    apart["termination"] = max(apart["termination"], abs(GAMMA * final))
                else:
                    apart["reset observation"] = max(apart["reset observation"],
                                                     GAMMA * abs(final - value(agent, step["obs"][i])))
                    apart["gamma"] = max(apart["gamma"], (1 - GAMMA) * abs(final))
                expected = step["rewards"][i] + (GAMMA * final if bootstrap and truncated and not terminated else 0.0)
                assert returns[t, i] == pytest.approx(expected, rel=1e-5, abs=1e-5), (t, i, terminated, truncated)
    assert min(seen.values()) >= 4, seen  # every kind of ending, several times
    assert min(apart.values()) > 0.01, apart  # the test can tell the right target from each wrong one


def test_loss_is_policy_loss_plus_vf_coef_value_loss_minus_ent_coef_entropy(watched):
    """losses/loss, as logged: policy_loss + 0.7 value_loss - 0.1 entropy, of the same (last) minibatch."""
    _, _, logged = watched(True)
    values = {tag: [v for _, v in logged[f"losses/{tag}"]] for tag in ("loss", "policy_loss", "value_loss", "entropy")}
    assert len(values["loss"]) == 2 and all(h > 1 for h in values["entropy"])  # 1-d sigma near 1: entropy near 1.42
    for loss, pg, v, h in zip(*values.values()):
        assert loss == pytest.approx(pg + 0.7 * v - 0.1 * h, abs=1e-5)


def test_explained_variance_and_action_std_are_those_of_the_rollout(watched):
    """losses/explained_variance = 1 - Var(returns - values) / Var(returns) over the rollout's batch, and
    charts/action_std the rollout policy's sigma, averaged over samples and action dimensions."""
    _, updates, logged = watched(True)
    assert [s for s, _ in logged["losses/explained_variance"]] == [T * N, 2 * T * N]
    for update, (_, logged_ev), (_, logged_std) in zip(updates, logged["losses/explained_variance"],
                                                       logged["charts/action_std"]):
        returns, values = (update["batch"][k].double().numpy() for k in ("returns", "values"))
        assert logged_ev == pytest.approx(1 - np.var(returns - values) / np.var(returns), abs=1e-4)
        with torch.no_grad():
            sigma = update["agent"].get_mean_and_logstd(update["batch"]["obs"])[1].exp().mean().item()
        assert logged_std == pytest.approx(sigma, rel=1e-5)
    assert logged["charts/action_std"][1][1] != 1.0  # the 2nd rollout's sigma is no longer the initial one


# ------------------------------------------------ --num-envs above 1 -------------------------------------------------
def test_several_envs_share_one_set_of_normalizer_statistics():
    """Three sub-envs, 150 steps: the observation statistics are the mean and variance of every observation any
    sub-env gave (first ones, final ones, all), the return statistics those of every sub-env's discounted return
    G <- gamma (1 - terminated) G + r, each with the normalizer's prior (mean 0, variance 1, weight 1e-4), and every
    sub-env is normalized with them. Computed here from a plain vector env stepped with the same actions."""
    num_envs, gamma, prior = 3, 0.9, 1e-4
    args, _ = rpo.parse_args(["--env-id", "TermTrunc-v0", "--num-envs", str(num_envs), "--gamma", str(gamma)])
    ours = rpo.make_envs(args, "shared")
    plain = gym.vector.SyncVectorEnv([lambda: gym.make("TermTrunc-v0")] * num_envs,
                                     autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    normalized, _ = ours.reset(seed=3)
    raw, _ = plain.reset(seed=3)
    seen, returns, G = [raw], [], np.zeros(num_envs)
    for action in np.random.default_rng(0).uniform(-1, 1, (150, num_envs, 1)).astype(np.float32):
        normalized, normalized_reward, *_ = ours.step(action)
        raw, reward, terminated, truncated, infos = plain.step(action)
        if "final_obs" in infos:
            seen.append(np.stack(infos["final_obs"][infos["_final_obs"]]))
        seen.append(raw)
        G = gamma * (1 - terminated) * G + reward
        returns.append(G)
    plain.close()
    ours.close()

    def with_prior(x):  # mean and variance of the samples x together with the prior's pseudo-sample
        n, mean, var = len(x), x.mean(0), x.var(0)
        return n * mean / (n + prior), (prior + n * var + mean**2 * prior * n / (n + prior)) / (n + prior)

    seen, returns = np.concatenate(seen).astype(np.float64), np.concatenate(returns)
    assert len(seen) > 3 * (150 + 1) and np.ptp(seen[:, 2]) > 0.5  # final observations were counted; sub-envs differ
    mean, var = with_prior(seen)
    assert ours.obs_rms.count == pytest.approx(len(seen) + prior)
    np.testing.assert_allclose(ours.obs_rms.mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.obs_rms.var, var, rtol=1e-4, atol=1e-5)
    return_mean, return_var = with_prior(returns)
    assert ours.return_rms.count == pytest.approx(len(returns) + prior)
    assert ours.return_rms.mean == pytest.approx(return_mean, rel=1e-6)
    assert ours.return_rms.var == pytest.approx(return_var, rel=1e-6)
    # the last step's observations and rewards of every sub-env, normalized with the shared statistics
    np.testing.assert_allclose(normalized, np.clip((raw - mean) / np.sqrt(var + 1e-8), -10, 10), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(normalized_reward, np.clip(reward / np.sqrt(return_var + 1e-8), -10, 10), rtol=1e-5)
