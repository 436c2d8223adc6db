"""The method's math: RPO's perturbation, GAE, the clipped losses, and the rollout's numpy policy."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
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


def test_sampling_uses_the_unperturbed_policy():
    """The rollout (no action given) samples from N(mu, sigma) and scores under it: no RPO noise."""
    agent = make_agent(act_dim=2, alpha=0.5)
    x = torch.randn(256, 5)
    with torch.no_grad():
        action, logprob, _, _ = agent.get_action_and_value(x)
        mean, std = agent.actor_mean(x), agent.actor_logstd.exp().expand(256, 2)
        assert torch.allclose(logprob, Normal(mean, std).log_prob(action).sum(1))
    policy = rpo.RolloutPolicy(agent)
    obs = x.numpy()
    noise = np.random.default_rng(0).standard_normal((256, 2)).astype(np.float32)
    action, logprob, value = policy.act(obs, noise), policy.logprob(noise), policy.value(obs)
    with torch.no_grad():
        expected = Normal(mean, std).log_prob(torch.from_numpy(action)).sum(1).numpy()
    np.testing.assert_allclose(action, mean.numpy() + std.numpy() * noise, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logprob, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(value, agent.critic(x).detach().numpy()[:, 0], rtol=1e-5, atol=1e-6)


def test_noise_follows_the_mean_dtype():
    agent = make_agent(act_dim=2).double()
    x, a = torch.randn(8, 5, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    _, logprob, _, _ = agent.get_action_and_value(x, a)
    assert logprob.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_noise_on_the_gpu():
    agent = make_agent(act_dim=2).cuda()
    _, logprob, _, _ = agent.get_action_and_value(torch.randn(8, 5, device="cuda"), torch.randn(8, 2, device="cuda"))
    assert logprob.device.type == "cuda"


def reference_gae(rewards, values, dones_after, next_value, next_done, gamma, lam):
    """The reference script's loop, with its convention: dones[t] says obs[t] began a new episode."""
    T = len(rewards)
    dones = np.concatenate([np.zeros_like(dones_after[:1]), dones_after[:-1]])  # done flag stored with obs[t]
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
    dones = np.logical_or(terminated, truncated).astype(np.float64)
    next_value = rng.normal(size=N)
    advantages, returns = rpo.compute_gae(rewards, values, dones, next_value, 0.99, 0.95)
    ref_adv, ref_ret = reference_gae(rewards, values, dones, next_value, dones[-1], 0.99, 0.95)
    np.testing.assert_allclose(advantages, ref_adv, rtol=1e-12)
    np.testing.assert_allclose(returns, ref_ret, rtol=1e-12)
    assert dones.sum() > 10  # the case has episode ends in it


def test_gae_does_not_bootstrap_across_an_episode_end():
    rewards = np.array([[1.0], [1.0], [1.0]])
    values = np.array([[0.5], [0.5], [100.0]])  # the next episode's start is worth a lot
    dones = np.array([[0.0], [1.0], [0.0]])
    advantages, _ = rpo.compute_gae(rewards, values, dones, np.array([0.0]), 0.9, 1.0)
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


def test_flat_parameters_train_like_separate_ones():
    """flatten_parameters and the written-out Adam change where the numbers live, not what Adam and
    clipping compute."""
    x, a = torch.randn(64, 5), torch.randn(64, 2)
    agents = [make_agent(act_dim=2, alpha=0.0, seed=7) for _ in range(2)]
    flat = rpo.flatten_parameters(agents[1])
    optimizers = [torch.optim.Adam(agents[0].parameters(), lr=1e-2, eps=1e-5),
                  rpo.Adam(flat, lr=1e-2, eps=1e-5)]
    for _ in range(5):
        # the library's way on separate parameters ...
        _, logprob, _, value = agents[0].get_action_and_value(x, a)
        optimizers[0].zero_grad()
        (-logprob.mean() + value.square().mean()).backward()
        torch.nn.utils.clip_grad_norm_(agents[0].parameters(), 0.5)
        optimizers[0].step()
        # ... and the trainer's on the flat one (as in update())
        _, logprob, _, value = agents[1].get_action_and_value(x, a)
        flat.grad.zero_()
        (-logprob.mean() + value.square().mean()).backward()
        flat.grad.mul_(torch.clamp(0.5 / (torch.linalg.vector_norm(flat.grad) + 1e-6), max=1.0))
        optimizers[1].step()
    for p, q in zip(agents[0].parameters(), agents[1].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert not torch.equal(agents[1].critic[0].weight, make_agent(act_dim=2, seed=7).critic[0].weight)


def test_adam_is_torch_adam_and_its_state_travels_both_ways():
    gen = torch.Generator().manual_seed(3)
    theirs = nn.Parameter(torch.randn(300, generator=gen))
    ours = nn.Parameter(theirs.detach().clone())
    ours.grad = torch.zeros_like(ours)
    reference = torch.optim.Adam([theirs], lr=3e-4, eps=1e-5, foreach=False)
    adam = rpo.Adam(ours, lr=3e-4, eps=1e-5)
    for step in range(25):
        grad = torch.randn(300, generator=gen) * (step + 1)
        theirs.grad = grad.clone()
        ours.grad.copy_(grad)
        reference.param_groups[0]["lr"] = adam.lr = 3e-4 * (1 - step / 25)  # annealed, as in training
        reference.step()
        adam.step()
    assert torch.equal(ours, theirs)  # the same operations in the same order: bit for bit
    # a state saved by one continues in the other (checkpoints written with torch.optim.Adam still resume)
    moved = nn.Parameter(ours.detach().clone())
    moved.grad = ours.grad.clone()
    resumed = rpo.Adam(moved, lr=1.0, eps=1e-5)
    resumed.load_state_dict(reference.state_dict())
    assert resumed.lr == reference.param_groups[0]["lr"] and resumed.steps == 25
    reference.load_state_dict(adam.state_dict())
    reference.step()
    resumed.step()
    assert torch.equal(moved, theirs)


def test_adam_resumes_the_fused_state_older_checkpoints_hold_and_refuses_a_foreign_one():
    p = nn.Parameter(torch.randn(50))
    p.grad = torch.randn(50)
    fused = torch.optim.Adam([p], lr=3e-4, eps=1e-5, fused=True)  # what checkpoints held before rpo.Adam
    fused.step()
    adam = rpo.Adam(nn.Parameter(p.detach().clone()), lr=1.0, eps=1e-5)
    adam.load_state_dict(fused.state_dict())
    assert adam.steps == 1 and adam.lr == 3e-4 and torch.equal(adam.exp_avg_sq, fused.state[p]["exp_avg_sq"])
    per_layer = torch.optim.Adam([nn.Parameter(torch.zeros(30)), nn.Parameter(torch.zeros(20))])
    with pytest.raises(rpo.UserError, match="optimizer state does not fit"):
        adam.load_state_dict(per_layer.state_dict())
