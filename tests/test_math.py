"""The method's math: RPO's perturbation, GAE, the clipped losses, the rollout's policy and the normalizers."""
import math

import numpy as np
import pytest
import torch
from torch.distributions.normal import Normal

import rpo_continuous_action as rpo


def make_agent(obs_dim=5, act_dim=1, alpha=0.5, seed=0):
    torch.manual_seed(seed)
    return rpo.Agent(obs_dim, act_dim, alpha)


def recovered_noise(agent, x, logstd=0.0):
    """z for each sample, read back from the log-prob of the unperturbed mean (1-d actions)."""
    with torch.no_grad():
        agent.actor_logstd.fill_(logstd)
        mean = agent.actor_mean(x)
        _, logprob, _, _ = agent.get_action_and_value(x, mean)
    sigma = math.exp(logstd)
    # log N(mu; mu + z, sigma) = -z^2 / (2 sigma^2) - log sigma - log sqrt(2 pi)
    z_squared = -2 * sigma**2 * (logprob + logstd + 0.5 * math.log(2 * math.pi))
    return z_squared.clamp(min=0).sqrt()


def test_perturbation_is_uniform_within_alpha():
    alpha = 0.3
    agent = make_agent(alpha=alpha)
    z = recovered_noise(agent, torch.randn(20000, 5))
    assert z.max() <= alpha + 1e-5
    assert z.max() > 0.95 * alpha  # the whole range is used
    # |z| of U(-a, a) is U(0, a): mean a/2, second moment a^2/3
    assert z.mean().item() == pytest.approx(alpha / 2, rel=0.03)
    assert (z**2).mean().item() == pytest.approx(alpha**2 / 3, rel=0.03)


def test_perturbation_is_fresh_for_every_sample_and_pass():
    agent = make_agent(act_dim=3, alpha=0.5)
    x, a = torch.randn(64, 5), torch.randn(64, 3)
    with torch.no_grad():
        _, first, _, _ = agent.get_action_and_value(x, a)
        _, second, _, _ = agent.get_action_and_value(x, a)
    assert not torch.allclose(first, second)
    # identical rows get different noise: the draw is per sample, not per batch
    same_rows = x[:1].expand(64, 5)
    with torch.no_grad():
        _, logprob, _, _ = agent.get_action_and_value(same_rows, a[:1].expand(64, 3))
    assert logprob.unique().numel() == 64


def test_alpha_zero_is_ppo_exactly():
    agent = make_agent(act_dim=3, alpha=0.0)
    x, a = torch.randn(128, 5), torch.randn(128, 3)
    with torch.no_grad():
        _, logprob, entropy, value = agent.get_action_and_value(x, a)
        mean, logstd = agent.actor_mean(x), agent.actor_logstd.expand(128, 3)
        # PPO's Gaussian log-density, unperturbed, in the same order of operations: equal to the last bit
        ppo = (-0.5 * ((a - mean) / logstd.exp()) ** 2 - logstd - 0.5 * math.log(2 * math.pi)).sum(1)
        assert torch.equal(logprob, ppo)
        # and what torch.distributions says, to float rounding
        torch.testing.assert_close(logprob, Normal(mean, logstd.exp()).log_prob(a).sum(1), rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(entropy, Normal(mean, logstd.exp()).entropy().sum(1))
    assert torch.equal(value, agent.critic(x))


def test_without_an_action_the_agent_samples_its_unperturbed_policy_and_scores_that_sample():
    """As in the reference, get_action_and_value(x) draws an action of N(mu, sigma), with no RPO noise on the
    mean (which would widen the spread to sqrt(sigma^2 + alpha^2 / 3)), and returns that action's log-prob under
    the same unperturbed Gaussian."""
    agent = make_agent(act_dim=2, alpha=0.5)
    with torch.no_grad():
        agent.actor_logstd.fill_(-1.0)  # sigma 0.368; with the noise the spread would be 0.467
    x = torch.randn(1, 5).expand(40000, 5)
    with torch.no_grad():
        action, logprob, entropy, value = agent.get_action_and_value(x)
        mean, std = agent.actor_mean(x[:1]), math.exp(-1.0)
    assert action.shape == (40000, 2) and not action.requires_grad
    torch.testing.assert_close(action.mean(0, keepdim=True), mean, atol=0.01, rtol=0)
    torch.testing.assert_close(action.std(0), torch.full((2,), std), atol=0.005, rtol=0)
    expected = Normal(mean.expand(40000, 2), std).log_prob(action).sum(1)
    torch.testing.assert_close(logprob, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy, torch.full((40000,), 2 * (0.5 + 0.5 * math.log(2 * math.pi) - 1.0)))
    assert torch.equal(value, agent.critic(x).detach())


def test_the_rollout_acts_with_the_unperturbed_policy_and_the_check_holds_it_to_the_agent():
    """The rollout samples N(mu, sigma) (no RPO noise) through the numpy copy; after it, `check` accepts the
    rollout only if every action was the Agent's mean + sigma * noise, and names the iteration if not."""
    agent = make_agent(act_dim=2, alpha=0.5)
    with torch.no_grad():
        agent.actor_logstd.fill_(-0.7)
    x = torch.randn(256, 5)
    actor = rpo.RolloutActor(agent)
    actor.refresh(x[:1].numpy())
    assert not actor.use_torch  # the default Agent runs on the fast path
    noise = np.random.default_rng(0).standard_normal((256, 2)).astype(np.float32)
    action = actor(x.numpy(), noise)
    with torch.no_grad():
        mean, std = agent.actor_mean(x), agent.actor_logstd.exp().expand(256, 2)
    np.testing.assert_allclose(action, mean.numpy() + std.numpy() * noise, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        _, logprob, _, _ = agent.get_action_and_value(x, torch.from_numpy(action), rpo_noise=False)
    expected = Normal(mean, std).log_prob(torch.from_numpy(action)).sum(1)
    torch.testing.assert_close(logprob, expected, rtol=1e-5, atol=1e-5)
    actor.check(x, torch.from_numpy(action), logprob, noise, iteration=1)  # passes: the rollout acted as the Agent
    # an action that is not mean + sigma * noise is refused, with the iteration named
    action[17, 1] += 0.01
    with pytest.raises(rpo.UserError, match="at iteration 3 the rollout acted up to 0.01 away"):
        actor.check(x, torch.from_numpy(action), logprob, noise, iteration=3)
    # log-probs of another Gaussian than the one sampled are refused too
    action[17, 1] -= 0.01
    with pytest.raises(rpo.UserError, match="scores actions under another distribution"):
        actor.check(x, torch.from_numpy(action), logprob + 0.1, noise, iteration=4)


def test_the_check_allows_float32_rounding_of_large_terms_whose_sum_is_near_zero():
    """Seen at 5.8M steps of RPO on walker-walk, where sigma grew to 15 and the mean to 64: an action mean + sigma *
    noise near 0 is the sum of two large terms, which numpy and torch round apart by a part of each term (1.9e-5
    there). The check allows that, and still refuses an action 0.05 away."""
    agent = make_agent(act_dim=2, alpha=0.5)
    with torch.no_grad():
        agent.actor_mean[-1].weight.mul_(4000.0)  # means of tens
        agent.actor_logstd.fill_(math.log(15.0))
    x = torch.randn(64, 5)
    with torch.no_grad():
        mean = agent.actor_mean(x)
    assert mean.abs().max() > 20
    noise = (-mean / 15.0).numpy()  # every action is mean + sigma * noise = 0, up to rounding
    actions = torch.zeros(64, 2) + 1.9e-5  # the numpy copy's rounding, seen
    with torch.no_grad():
        _, logprob, _, _ = agent.get_action_and_value(x, actions, rpo_noise=False)
    actor = rpo.RolloutActor(agent)
    actor.check(x, actions, logprob, noise, iteration=2855)
    with pytest.raises(rpo.UserError, match="at iteration 2855 the rollout acted up to 0.05 away"):
        actor.check(x, actions + 0.05, logprob, noise, iteration=2855)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "Hopper-v4"])  # float32 and float64 observations
def test_normalizers_are_the_per_env_wrappers_bit_for_bit(env_id):
    """NormalizeObsReward computes, for one env, what the reference's per-env wrapper chain computes:
    the same observations (final ones too), rewards and statistics, step for step."""
    import gymnasium as gym

    def reference_chain():
        env = gym.make(env_id)
        env = gym.wrappers.FlattenObservation(env)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env = gym.wrappers.ClipAction(env)
        env = gym.wrappers.NormalizeObservation(env)
        env = gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10), env.observation_space)
        env = gym.wrappers.NormalizeReward(env, gamma=0.99)
        return gym.wrappers.TransformReward(env, lambda reward: np.clip(reward, -10, 10))

    same_step = gym.vector.AutoresetMode.SAME_STEP
    theirs = gym.vector.SyncVectorEnv([reference_chain], autoreset_mode=same_step)
    args, _ = rpo.parse_args(["--env-id", env_id])
    ours = rpo.make_envs(args, "test")
    obs_a, _ = theirs.reset(seed=5)
    obs_b, _ = ours.reset(seed=5)
    assert np.array_equal(obs_a, obs_b)
    shape = (450, 1) + ours.single_action_space.shape  # episode ends (Pendulum: 2, Hopper: many), clipped actions
    ends = 0
    for action in np.random.default_rng(1).uniform(-3, 3, shape).astype(np.float32):
        a, b = theirs.step(action), ours.step(action)
        for x, y in zip(a[:4], b[:4]):
            assert np.array_equal(x, y)
        if "final_obs" in a[4]:
            assert np.array_equal(a[4]["final_obs"][0], b[4]["final_obs"][0])
            ends += 1
    assert ends >= 2
    chain = theirs.envs[0]
    obs_normalizer, reward_normalizer = chain.env.env.env, chain.env
    assert np.array_equal(obs_normalizer.obs_rms.mean, ours.obs_rms.mean)
    assert np.array_equal(obs_normalizer.obs_rms.var, ours.obs_rms.var) and obs_normalizer.obs_rms.count == ours.obs_rms.count
    assert reward_normalizer.return_rms.var == ours.return_rms.var
    assert np.array_equal(reward_normalizer.discounted_reward, ours.discounted_reward)


def test_noise_follows_the_mean_dtype():
    """A float64 Agent draws RPO's z in float64: the log-prob is the float64 formula with z from the same generator
    state drawn as float64 (a float32 draw takes other bits of the stream and rounds, and misses by far more)."""
    agent = make_agent(act_dim=2, alpha=0.5).double()
    x, a = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    torch.manual_seed(7)
    with torch.no_grad():
        _, logprob, _, _ = agent.get_action_and_value(x, a)
        torch.manual_seed(7)
        z = torch.empty(8, 2, dtype=torch.float64).uniform_(-0.5, 0.5)
        mean, logstd = agent.actor_mean(x), agent.actor_logstd.expand(8, 2)
        expected = (-0.5 * ((a - mean - z) / logstd.exp()) ** 2 - logstd - 0.5 * math.log(2 * math.pi)).sum(1)
    assert logprob.dtype == torch.float64
    torch.testing.assert_close(logprob, expected, rtol=1e-13, atol=1e-13)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_noise_on_the_gpu():
    agent = make_agent(act_dim=2).cuda()
    _, logprob, _, _ = agent.get_action_and_value(torch.randn(8, 5, device="cuda"), torch.randn(8, 2, device="cuda"))
    assert logprob.device.type == "cuda"


def reference_gae(rewards, values, dones, next_value, next_done, gamma, lam):
    """The reference script's loop, with its convention: dones[t] says obs[t] began a new episode."""
    T = len(rewards)
    advantages = np.zeros_like(rewards)
    lastgaelam = 0
    for t in reversed(range(T)):
        if t == T - 1:
            nextnonterminal = 1.0 - next_done
            nextvalues = next_value
        else:
            nextnonterminal = 1.0 - dones[t + 1]
            nextvalues = values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        advantages[t] = lastgaelam = delta + gamma * lam * nextnonterminal * lastgaelam
    return advantages, advantages + values


def test_gae_matches_the_reference_loop():
    rng = np.random.default_rng(3)
    T, N = 300, 4
    rewards = rng.normal(size=(T, N))
    values = rng.normal(size=(T, N))
    terminated = rng.random((T, N)) < 0.03
    truncated = rng.random((T, N)) < 0.02
    dones = np.logical_or(terminated, truncated).astype(np.float64)  # obs[t] starts an episode
    next_value, next_done = rng.normal(size=N), np.array([0.0, 1.0, 0.0, 1.0])
    advantages, returns = rpo.compute_gae(rewards, values, dones, next_value, next_done, 0.99, 0.95)
    ref_adv, ref_ret = reference_gae(rewards, values, dones, next_value, next_done, 0.99, 0.95)
    np.testing.assert_allclose(advantages, ref_adv, rtol=1e-12)
    np.testing.assert_allclose(returns, ref_ret, rtol=1e-12)
    assert dones.sum() > 10  # the case has episode ends in it


def test_gae_does_not_bootstrap_across_an_episode_end():
    rewards = np.array([[1.0], [1.0], [1.0]])
    values = np.array([[0.5], [0.5], [100.0]])  # the next episode's start is worth a lot
    dones = np.array([[0.0], [0.0], [1.0]])  # obs[2] starts a new episode: step 1 ended one
    advantages, _ = rpo.compute_gae(rewards, values, dones, np.array([0.0]), np.array([0.0]), 0.9, 1.0)
    assert advantages[1, 0] == pytest.approx(1.0 - 0.5)  # reward only, no value of step 2
    assert advantages[0, 0] == pytest.approx((1.0 + 0.9 * 0.5 - 0.5) + 0.9 * 0.5)


def test_policy_loss_hand_computed():
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0])
    ratio = torch.tensor([1.5, 0.5, 1.5, 0.5])
    # A>0: min(1.5, 1.2) -> 1.2 ; min(0.5, 0.8) -> 0.5.  A<0: max(1.5, 1.2) -> 1.5 ; max(0.5, 0.8) -> 0.8
    expected = -(1.2 + 0.5 - 1.5 - 0.8) / 4
    assert rpo.policy_loss(advantages, ratio, 0.2).item() == pytest.approx(expected)


def test_value_loss_hand_computed():
    newvalue = torch.tensor([2.0, 0.0])
    oldvalue = torch.tensor([1.0, 1.0])
    returns = torch.tensor([3.0, 0.0])
    # sample 0: unclipped (2-3)^2=1, clipped 1.2 -> (1.2-3)^2=3.24 -> 3.24
    # sample 1: unclipped 0, clipped 0.8 -> 0.64 -> 0.64
    assert rpo.value_loss(newvalue, returns, oldvalue, 0.2, True).item() == pytest.approx(0.5 * (3.24 + 0.64) / 2)
    assert rpo.value_loss(newvalue, returns, oldvalue, 0.2, False).item() == pytest.approx(0.5 * (1 + 0) / 2)
