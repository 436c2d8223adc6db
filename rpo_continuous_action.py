"""Robust Policy Optimization (RPO) for continuous actions, in one file.

RPO (Rahman & Xue, 2022, https://arxiv.org/abs/2212.07536) is PPO with one change: when the policy is updated, the
mean of its Gaussian is perturbed by z ~ U(-alpha, alpha), drawn afresh for every sample, action dimension and update
pass, which keeps the policy's entropy from collapsing. Rollouts sample the unperturbed N(mu, sigma). Search for "RPO:"
to find every line that differs from PPO; `--rpo-alpha 0` is PPO.

    python rpo_continuous_action.py --env-id Hopper-v4 --rpo-alpha 0.01 --save-model   # + checkpoint, evaluation

Top to bottom: Args, the environment, the Agent, advantages and losses, the update, the training loop; then the
plumbing. Edit the Agent and the optimizer freely: the rollout's fast path checks itself against the Agent.
"""

import ctypes.util
import io
import math
import os
import pickle
import random
import signal
import sys
import threading
import time
import warnings
from contextlib import closing, contextmanager, suppress
from dataclasses import asdict, dataclass, fields
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # the name of this experiment
    seed: int = 1  # seed of the experiment
    torch_deterministic: bool = True  # if toggled, `torch.backends.cudnn.deterministic=True`
    cuda: bool = True  # if toggled, cuda will be enabled by default (falls back to the CPU when there is no GPU)
    track: bool = False  # if toggled, this experiment will be tracked with Weights and Biases
    wandb_project_name: str = "cleanRL"  # the wandb's project name
    wandb_entity: Optional[str] = None  # the entity (team) of wandb's project
    capture_video: bool = False  # whether to capture videos of the agent performances (check out `videos` folder)
    torch_threads: int = 1  # torch threads; the networks are tiny, so more threads mostly add contention

    # Algorithm specific arguments
    env_id: str = "HalfCheetah-v4"  # the id of the environment
    total_timesteps: int = 8000000  # total timesteps of the experiments
    learning_rate: float = 3e-4  # the learning rate of the optimizer
    num_envs: int = 1  # the number of parallel game environments
    num_steps: int = 2048  # the number of steps to run in each environment per policy rollout
    anneal_lr: bool = True  # Toggle learning rate annealing for policy and value networks
    gamma: float = 0.99  # the discount factor gamma
    gae_lambda: float = 0.95  # the lambda for the general advantage estimation
    num_minibatches: int = 32  # the number of mini-batches
    update_epochs: int = 10  # the K epochs to update the policy
    norm_adv: bool = True  # Toggles advantages normalization
    clip_coef: float = 0.2  # the surrogate clipping coefficient
    clip_vloss: bool = True  # Toggles whether or not to use a clipped loss for the value function, as per the paper.
    ent_coef: float = 0.0  # coefficient of the entropy
    vf_coef: float = 0.5  # coefficient of the value function
    max_grad_norm: float = 0.5  # the maximum norm for the gradient clipping
    target_kl: Optional[float] = None  # the target KL divergence threshold (compared with the KL without RPO's noise)
    rpo_alpha: float = 0.5  # RPO: the alpha parameter, half-width of the uniform noise on the mean (0 gives PPO)
    bootstrap_truncated: bool = False  # bootstrap from the final observation's value where a time limit cut an episode

    # Keeping the policy
    save_model: bool = False  # save checkpoints to runs/{run_name}/{exp_name}.cleanrl_model and evaluate at the end
    checkpoint_interval: int = 50  # with --save-model, write a checkpoint every this many iterations
    eval_episodes: int = 10  # episodes of the deterministic policy evaluated after training or with --eval-checkpoint
    eval_checkpoint: Optional[str] = None  # evaluate this checkpoint instead of training
    resume: Optional[str] = None  # continue the run saved in this checkpoint

    # to be filled in runtime
    batch_size: int = 0  # the batch size (computed in runtime)
    minibatch_size: int = 0  # the mini-batch size (computed in runtime)
    num_iterations: int = 0  # the number of iterations (computed in runtime)


class UserError(Exception):
    """Bad input: reported as one line on stderr, without a traceback."""


# ---------------------------------------- Environment ----------------------------------------
def make_env(env_id, idx, capture_video, run_name, video_trigger=None):
    def thunk():
        if env_id.startswith("dm_control/"):
            use_headless_rendering(required=False)  # dm_control picks its GL backend on import
            try:
                import shimmy
            except ImportError:
                raise UserError(f"{env_id} needs dm_control: pip install -e '.[dm-control]'") from None
            gym.register_envs(shimmy)
        name, version = env_id.rsplit("-v", 1) if "-v" in env_id else (env_id, "")
        if version in ("2", "3") and f"{name}-v4" in gym.registry:  # gymnasium 1.x keeps them only to say they moved
            raise UserError(f"{env_id} needs mujoco-py, which gymnasium 1.x dropped: use {name}-v4 or {name}-v5 "
                            "(the published MuJoCo v2 results have v4 twins)")
        video = capture_video and idx == 0
        try:
            env = gym.make(env_id, **({"render_mode": "rgb_array"} if video else {}))
        except (gym.error.Error, ImportError) as e:  # unknown id, missing package, Pusher-v4 on mujoco 3
            hint = " (the published simulator: pip install -e '.[mujoco-published]' in a venv of its own)"
            raise UserError(f"cannot make environment {env_id!r}: {e}{hint if 'mujoco<3' in str(e) else ''}") from None
        if video:
            try:
                env = gym.wrappers.RecordVideo(env, f"videos/{run_name}", episode_trigger=video_trigger)
            except gym.error.DependencyNotInstalled:  # not the env's fault, and the project's extra is `video`
                raise UserError("--capture-video needs moviepy: pip install -e '.[video]'") from None
        space = env.action_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            kind = (f"actions of shape {space.shape}" if isinstance(space, gym.spaces.Box)
                    else f"a {type(space).__name__} action space")
            raise UserError(f"{env_id} has {kind}; RPO needs a vector of continuous actions (a Box of one dimension)")
        if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
            env = gym.wrappers.FlattenObservation(env)  # dm_control's Dict observations; a vector passes as it is
        env = gym.wrappers.ClipAction(gym.wrappers.RecordEpisodeStatistics(env))
        return env  # observations and rewards are normalized for all envs at once: NormalizeObsReward

    return thunk


class RunningMeanStd(gym.wrappers.utils.RunningMeanStd):
    def update(self, x):
        if len(x) > 1:
            return super().update(x)
        # One sample: gymnasium's update_from_moments less its terms that are exactly 0 or x 1, at a fifth of the cost
        delta, total = x[0] - self.mean, self.count + 1
        self.var = (self.var * self.count + np.square(delta) * self.count / total) / total
        self.mean, self.count = self.mean + delta / total, total


class NormalizeObsReward(gym.vector.VectorWrapper):
    """The reference's per-env NormalizeObservation, clip(obs, -10, 10), NormalizeReward and clip(reward, -10, 10), for
    all sub-envs in one batch: the per-env wrappers cost more than a small simulator, and gymnasium's vector versions
    refuse same-step autoreset. With one env the numbers are gymnasium 1.x's per-env wrappers' bit for bit, and the
    reference's (gymnasium 0.29) after the first observation (0.29 starts its statistics in float64: 1e-10 apart
    there); with several envs, the envs share one set of statistics (the per-env wrappers keep one each)."""

    def __init__(self, envs, gamma, epsilon=1e-8, clip=10.0):
        super().__init__(envs)
        self.obs_rms = RunningMeanStd(shape=envs.single_observation_space.shape, dtype=np.float32)
        self.return_rms = RunningMeanStd(shape=())
        self.discounted_reward = np.zeros(envs.num_envs)
        self.gamma, self.epsilon, self.clip = gamma, epsilon, clip

    def normalize_obs(self, obs):
        self.obs_rms.update(obs)
        return normalize_obs(obs, self.obs_rms.mean, self.obs_rms.var, self.epsilon, self.clip)

    def reset(self, **kwargs):
        obs, infos = self.env.reset(**kwargs)
        return self.normalize_obs(obs), infos

    def step(self, actions):
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        if "final_obs" in infos:  # an episode ended: its last observation counts before the next one's first
            ended = np.flatnonzero(infos["_final_obs"])
            for i, final in zip(ended, self.normalize_obs(np.stack(infos["final_obs"][ended]))):
                infos["final_obs"][i] = final
        self.discounted_reward = self.discounted_reward * self.gamma * (1 - terminations) + rewards
        self.return_rms.update(self.discounted_reward)
        rewards = (rewards / np.sqrt(self.return_rms.var + self.epsilon)).clip(-self.clip, self.clip)
        return self.normalize_obs(obs), rewards, terminations, truncations, infos


def normalize_obs(obs, mean, var, epsilon=1e-8, clip=10.0):
    return ((obs - mean) / np.sqrt(var + epsilon)).astype(np.float32, copy=False).clip(-clip, clip)


def make_envs(args, run_name):
    # SAME_STEP autoreset (gymnasium 0.29's behaviour): the step that ends an episode returns the next episode's first
    # observation, so no stored transition spans two episodes. No copy: NormalizeObsReward returns fresh arrays
    thunks = [make_env(args.env_id, i, args.capture_video, run_name) for i in range(args.num_envs)]
    envs = gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, copy=False)
    return NormalizeObsReward(envs, args.gamma)


# ---------------------------------------- Agent ----------------------------------------------
def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, obs_dim, act_dim, rpo_alpha):
        super().__init__()
        self.rpo_alpha = rpo_alpha
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor_mean = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, act_dim), std=0.01),
        )
        self.actor_logstd = nn.Parameter(torch.zeros(1, act_dim))

    def get_value(self, x):
        return self.critic(x)

    def get_mean_and_logstd(self, x):
        """The unperturbed policy N(mean, exp(logstd)) at x: the rollout acts with it."""
        action_mean = self.actor_mean(x)
        return action_mean, self.actor_logstd.expand_as(action_mean)

    def get_action_and_value(self, x, action=None, rpo_noise=True):
        """Without an action, a sample of the unperturbed policy N(mean, sigma), as the rollout acts. With one, the
        update's view of it: its log-prob under RPO's perturbed mean (unperturbed with rpo_noise=False). Either way
        also the policy's entropy and the value at x."""
        action_mean, action_logstd = self.get_mean_and_logstd(x)
        if action is None:
            action = (action_mean + action_logstd.exp() * torch.randn_like(action_mean)).detach()
        elif rpo_noise:
            # RPO: score the stored action under N(mu + z, sigma), z ~ U(-alpha, alpha) drawn afresh for
            # every sample and action dimension, on the mean's own device and dtype.
            z = torch.empty_like(action_mean).uniform_(-self.rpo_alpha, self.rpo_alpha)
            action_mean = action_mean + z
        logprob = gaussian_logprob(action, action_mean, action_logstd)
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + action_logstd).sum(-1)
        return action, logprob, entropy, self.critic(x)


def gaussian_logprob(action, mean, logstd):
    """log N(action; mean, exp(logstd)), summed over action dimensions (torch.distributions.Normal's formula)."""
    return (-0.5 * ((action - mean) / logstd.exp()) ** 2 - logstd - 0.5 * math.log(2 * math.pi)).sum(-1)


# ---------------------------------------- Advantages, losses, update -------------------------
def compute_gae(rewards, values, dones, next_value, next_done, gamma, gae_lambda):
    """Generalized advantage estimation over a (num_steps, num_envs) rollout. As in the reference, dones[t] is 1 where
    obs[t] starts a new episode (nothing is bootstrapped from it), and next_* are of the observation after the last."""
    next_values = np.concatenate([values[1:], next_value[None]])
    next_nonterminal = 1.0 - np.concatenate([dones[1:], next_done[None]])
    deltas = rewards + gamma * next_values * next_nonterminal - values
    advantages, lastgaelam = np.zeros_like(rewards), np.zeros_like(next_value)
    for t in reversed(range(len(rewards))):
        advantages[t] = lastgaelam = deltas[t] + gamma * gae_lambda * next_nonterminal[t] * lastgaelam
    return advantages, advantages + values


def policy_loss(advantages, ratio, clip_coef):
    """PPO's clipped surrogate objective, as a loss to minimise."""
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    return torch.max(pg_loss1, pg_loss2).mean()


def value_loss(newvalue, returns, oldvalue, clip_coef, clip_vloss):
    if not clip_vloss:
        return 0.5 * ((newvalue - returns) ** 2).mean()
    v_loss_unclipped = (newvalue - returns) ** 2
    v_clipped = oldvalue + torch.clamp(newvalue - oldvalue, -clip_coef, clip_coef)
    v_loss_clipped = (v_clipped - returns) ** 2
    return 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()


def approx_kl(logratio):  # Schulman's k3 estimator of KL(old || new), from log(new/old) of the sampled actions
    return ((logratio.exp() - 1) - logratio).mean()


def update(agent, optimizer, batch, args):
    """PPO's update on one rollout; returns the last minibatch's losses and the mean clip fraction, as floats."""
    params, ratios = list(agent.parameters()), []
    for epoch in range(args.update_epochs):
        # Shuffle once per epoch and gather every tensor in one go; each minibatch is then a slice (a view)
        b_inds = torch.randperm(args.batch_size, device=batch["obs"].device)
        keys = ("obs", "actions", "logprobs", "returns", "values", "advantages")
        b_obs, b_actions, b_logprobs, b_returns, b_values, b_advantages = (batch[k][b_inds] for k in keys)
        mb_advantages = b_advantages.view(args.num_minibatches, args.minibatch_size)  # row i: minibatch i's
        if args.norm_adv:  # per minibatch, as PPO does, all minibatches at once
            mean, std = mb_advantages.mean(1, keepdim=True), mb_advantages.std(1, keepdim=True)
            mb_advantages = (mb_advantages - mean) / (std + 1e-8)
        for i, start in enumerate(range(0, args.batch_size, args.minibatch_size)):
            mb_inds = slice(start, start + args.minibatch_size)
            # RPO: the stored actions scored under the perturbed mean, N(mu + z, sigma)
            _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb_inds], b_actions[mb_inds])
            logratio = newlogprob - b_logprobs[mb_inds]
            ratio = logratio.exp()

            pg_loss = policy_loss(mb_advantages[i], ratio, args.clip_coef)
            v_loss = value_loss(newvalue.view(-1), b_returns[mb_inds], b_values[mb_inds], args.clip_coef,
                                args.clip_vloss)
            loss = pg_loss + v_loss * args.vf_coef
            if args.ent_coef:  # at the default 0 the entropy term would only add time (a twentieth of the update's)
                loss = loss - args.ent_coef * entropy.mean()

            optimizer.zero_grad()
            loss.backward()
            # on the CPU, torch's batched (foreach) path loops over the same per-tensor norms, only slower
            nn.utils.clip_grad_norm_(params, args.max_grad_norm, foreach=params[0].is_cuda)
            optimizer.step()
            ratios.append(ratio.detach())  # for the clip fraction, computed once at the end

        # RPO: the logged KLs of the last minibatch (as PPO logs them) include the noise z; the noise-free one, after
        # the epoch's last step, measures the policy's own move and is what --target-kl compares (alike at alpha = 0)
        with torch.no_grad():
            _, unperturbed_logprob, _, _ = agent.get_action_and_value(b_obs[mb_inds], b_actions[mb_inds],
                                                                       rpo_noise=False)
            approx_kl_unperturbed = approx_kl(unperturbed_logprob - b_logprobs[mb_inds])
        if args.target_kl is not None and approx_kl_unperturbed > args.target_kl:
            break
    with torch.no_grad():
        ratio = torch.stack(ratios)
        return {"loss": loss.item(), "value_loss": v_loss.item(), "policy_loss": pg_loss.item(),
                "entropy": entropy.mean().item(), "old_approx_kl": (-logratio).mean().item(),
                "approx_kl": approx_kl(logratio).item(), "approx_kl_unperturbed": approx_kl_unperturbed.item(),
                "clipfrac": ((ratio - 1.0).abs() > args.clip_coef).float().mean().item()}


# ---------------------------------------- Training loop --------------------------------------
def train(args, checkpoint=None):
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_name = checkpoint["run_name"] if checkpoint else run_name

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    rollout_rng = np.random.default_rng(args.seed)  # the rollout's Gaussian noise

    # env setup
    envs = make_envs(args, run_name)
    obs_shape, act_shape = envs.single_observation_space.shape, envs.single_action_space.shape
    agent = Agent(int(np.prod(obs_shape)), int(np.prod(act_shape)), args.rpo_alpha).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)  # the reference's eps
    base_lrs = [group["lr"] for group in optimizer.param_groups]  # annealed from, each iteration
    act = RolloutActor(agent)  # acts as the Agent does, in numpy; act.check holds it to that every iteration

    # ALGO Logic: Storage setup. numpy on the CPU, where the envs live; the batch moves to `device` once per update
    T, N = args.num_steps, args.num_envs  # the PPO paper's T steps of N actors
    obs = np.zeros((T, N) + obs_shape, dtype=np.float32)
    actions = np.zeros((T, N) + act_shape, dtype=np.float32)
    rewards = np.zeros((T, N), dtype=np.float32)
    dones = np.zeros((T, N), dtype=np.float32)

    # TRY NOT TO MODIFY: start the game
    global_step, start_iteration = 0, 1
    next_obs, _ = envs.reset(seed=args.seed)
    next_done = np.zeros(N, dtype=np.float32)
    if checkpoint:  # the envs, their last observation and the normalizers as they were when saved
        global_step, start_iteration, next_obs = restore(checkpoint, args, envs, agent, optimizer, rollout_rng)
    log = Logger(args, run_name, global_step, resumed=checkpoint is not None)
    # What a checkpoint holds besides the weights: the run as of the end of the last finished iteration
    point = resume_point(envs, next_obs, global_step, start_iteration - 1, rollout_rng) if args.save_model else None

    with closing(envs), closing(log), StopRequest() as stop:
        for iteration in range(start_iteration, args.num_iterations + 1):
            # Annealing the rate if instructed to do so: each parameter group's, linearly to 0
            if args.anneal_lr:
                frac = 1.0 - (iteration - 1.0) / args.num_iterations
                for group, lr in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = frac * lr

            # Rollout: act with the unperturbed policy N(mean, sigma); RPO's noise belongs to the update only
            act.refresh(next_obs)
            noise = rollout_rng.standard_normal((T, N) + act_shape, dtype=np.float32)
            for step in range(T):
                global_step += N
                obs[step], dones[step] = next_obs, next_done
                actions[step] = act(next_obs, noise[step])  # the Agent's mean + sigma * noise
                next_obs, reward, terminations, truncations, infos = envs.step(actions[step])
                rewards[step], next_done = reward, np.logical_or(terminations, truncations)
                if "final_obs" in infos:  # an episode ended in some sub-env
                    log.episodes(global_step, infos["final_info"])
                    if args.bootstrap_truncated:  # a time limit is not a failure: credit where the agent got to
                        for i in np.flatnonzero(truncations & ~terminations):
                            v = agent.get_value(torch.as_tensor(infos["final_obs"][i][None], device=device)).detach()
                            rewards[step, i] += args.gamma * v.view(-1).cpu().numpy()[0]
                if stop.signum is not None:  # the partial rollout is not trained on: the run stops where it began
                    global_step -= (step + 1) * N
                    break
            if stop.signum is not None:
                break

            # Bootstrap value, GAE. The weights did not change during the rollout, so the log-probs and values of
            # all its steps come from one batched call each, of the Agent itself
            b_obs = torch.from_numpy(obs.reshape((-1,) + obs_shape)).to(device)
            b_actions = torch.from_numpy(actions.reshape((-1,) + act_shape)).to(device)
            with torch.no_grad():  # RPO: the rollout's log-probs are of the unperturbed policy it acted with
                _, b_logprobs, _, b_values = agent.get_action_and_value(b_obs, b_actions, rpo_noise=False)
                next_value = agent.get_value(torch.from_numpy(next_obs).to(device)).view(-1).cpu().numpy()
                action_std = agent.get_mean_and_logstd(b_obs)[1].exp().mean().item()
            act.check(b_obs, b_actions, b_logprobs, noise, iteration)  # stops the run if the rollout did not act so
            values = b_values.view(-1).cpu().numpy()
            advantages, returns = compute_gae(rewards, values.reshape(T, N), dones, next_value, next_done,
                                              args.gamma, args.gae_lambda)

            # the batch, flattened above, on `device`: the update shuffles it each epoch
            batch = {"obs": b_obs, "actions": b_actions, "logprobs": b_logprobs, "values": b_values.view(-1),
                     "advantages": torch.from_numpy(advantages.reshape(-1)).to(device),
                     "returns": torch.from_numpy(returns.reshape(-1)).to(device)}

            # Optimizing the policy and value network
            stats = update(agent, optimizer, batch, args)
            if not math.isfinite(stats["loss"]):
                raise UserError(f"the loss became {stats['loss']} at iteration {iteration} (global_step="
                                f"{global_step}); stopping rather than training on garbage")
            var_y = np.var(returns)
            stats["explained_variance"] = np.nan if var_y == 0 else 1 - np.var(returns.reshape(-1) - values) / var_y

            # TRY NOT TO MODIFY: record the update's statistics for plotting purposes
            log.iteration(global_step, optimizer.param_groups[0]["lr"], stats, action_std)

            # Save: the run as of this iteration's end, written every checkpoint_interval iterations and at the last
            if args.save_model:
                point = resume_point(envs, next_obs, global_step, iteration, rollout_rng)
                if iteration % args.checkpoint_interval == 0 or iteration == args.num_iterations:
                    save_checkpoint(log.model_path, args, run_name, agent, optimizer, envs, point)
            if stop.signum is not None:  # arrived during the update: this iteration is complete
                break

        # Stopped by a signal: a checkpoint of the last finished iteration. Else the model is saved and evaluated
        if stop.signum is not None:
            hint = ""
            if args.save_model:
                save_checkpoint(log.model_path, args, run_name, agent, optimizer, envs, point)
                hint = f"; continue with --resume {log.model_path}"
            print(f"{signal.Signals(stop.signum).name}: stopped at global_step={global_step}{hint}", file=sys.stderr)
            return 128 + stop.signum
        if args.save_model:
            print(f"model saved to {log.model_path}")
            if args.eval_episodes > 0:
                eval_returns = evaluate(agent, vars(envs.obs_rms), args, run_name, args.eval_episodes, args.seed)
                for i, episodic_return in enumerate(eval_returns):
                    log.scalars(i, {"eval/episodic_return": episodic_return})
    return 0


# =============================================================================================
# Plumbing: the rollout's fast path, logging, checkpoints, evaluation, signals, the command line
class RolloutActor:
    """Acts for one rollout: `agent.get_mean_and_logstd`'s mean plus sigma * noise. For one observation torch costs 4x
    the arithmetic, so an `actor_mean` of nn.Linear/nn.Tanh/nn.ReLU is copied into numpy before each rollout and probed
    against the Agent (an Agent it cannot copy acts through torch); `check` then holds every action to the Agent."""

    ACTIVATIONS = {nn.Tanh: np.tanh, nn.ReLU: lambda x: np.maximum(x, 0)}

    def __init__(self, agent):
        self.agent, self.device, self.use_torch = agent, next(agent.parameters()).device, False

    def refresh(self, obs):
        if self.use_torch:
            return
        try:
            self.layers = [(m.weight.detach().cpu().numpy().T.copy(), m.bias.detach().cpu().numpy().copy())
                           if isinstance(m, nn.Linear) else self.ACTIVATIONS[type(m)] for m in self.agent.actor_mean]
            self.std = np.exp(self.agent.actor_logstd.detach().cpu().numpy()[0])
            # the observations about to be acted on, and 64 wider ones: a copy right only near them would be wrong
            probes = np.concatenate([obs, np.random.default_rng(0).normal(0, 3, (64, obs.shape[1]))]).astype(np.float32)
            mean, logstd = self._torch(probes)
            # float32 sums in another order: apart by rounding only, far below any wrong layer's difference
            self.use_torch = not (np.allclose(self._mean(probes), mean, rtol=1e-4, atol=1e-5)
                                  and np.allclose(np.log(self.std), logstd, rtol=1e-4, atol=1e-5))
        except (AttributeError, KeyError, TypeError, ValueError):  # not a Sequential of those layers
            self.use_torch = True
        if self.use_torch:
            print("note: acting through torch (slower): the numpy copy cannot compute this Agent", file=sys.stderr)

    @torch.no_grad()
    def _torch(self, obs):
        return [x.cpu().numpy() for x in self.agent.get_mean_and_logstd(torch.as_tensor(obs, device=self.device))]

    def _mean(self, x):
        for layer in self.layers:
            x = layer(x) if callable(layer) else x @ layer[0] + layer[1]
        return x

    def __call__(self, obs, noise):
        """An action of N(mean, sigma) for each observation, given standard normal noise."""
        if not self.use_torch:
            return self._mean(obs) + self.std * noise
        try:
            mean, logstd = self._torch(obs)
        except (RuntimeError, ValueError) as e:  # e.g. BatchNorm in training mode, given one observation
            raise UserError(f"the Agent cannot act on {len(obs)} observation(s) at a time, as the rollout does: "
                            f"{str(e).strip().splitlines()[0]}") from None
        return mean + np.exp(logstd) * noise

    @torch.no_grad()
    def check(self, obs, actions, logprobs, noise, iteration):
        """Stops the run unless each action was the Agent's mean + sigma * noise, and its log-prob that Gaussian's."""
        mean, logstd = self.agent.get_mean_and_logstd(obs)
        spread = logstd.exp() * torch.from_numpy(noise.reshape(actions.shape)).to(actions.device)
        gap = (actions - mean - spread).abs()  # float32 rounds by a part of each term, however small their sum
        if (gap > 1e-5 + 1e-4 * (mean.abs() + spread.abs())).any():
            if self.use_torch:  # torch acted as the Agent is written: its mean is not a function of the observation
                raise UserError("Agent.get_mean_and_logstd gives other means when called again (dropout, BatchNorm or "
                                "other training-mode layers): the rollout cannot be scored; make it deterministic")
            raise UserError(f"at iteration {iteration} the rollout acted up to {gap.max():.2g} away from "
                            "Agent.get_mean_and_logstd; make RolloutActor act through torch for this Agent")
        # 1e-4: another formula for the same Gaussian (torch's Normal, say) rounds apart by that much
        if not torch.allclose(logprobs, gaussian_logprob(actions, mean, logstd), rtol=1e-4, atol=1e-4):
            raise UserError("Agent.get_action_and_value scores actions under another distribution than the "
                            "N(mean, exp(logstd)) of get_mean_and_logstd that the rollout samples: change both")


def use_headless_rendering(required=True):
    """Pick an offscreen OpenGL backend for MuJoCo and dm_control when there is no display."""
    if os.environ.get("MUJOCO_GL") or os.environ.get("DISPLAY"):
        return  # MUJOCO_GL=egl picks a GPU's renderer
    for backend, library in (("osmesa", "OSMesa"), ("egl", "EGL")):  # libEGL is often there without a driver behind it
        if ctypes.util.find_library(library):
            os.environ["MUJOCO_GL"] = backend
            return
    if required:
        raise UserError("--capture-video without a display needs OSMesa or EGL: apt-get install libosmesa6")


class Logger:
    """TensorBoard (and W&B with --track), the progress bar on a terminal, and the reference's printed lines. A log
    that cannot be written (full disk, read-only folder) stops the run with one line, the OS's reason (`faults`)."""

    def __init__(self, args, run_name, global_step, resumed):
        self.args, self.log_dir = args, f"runs/{run_name}"
        self.model_path = f"{self.log_dir}/{args.exp_name}.cleanrl_model"
        if args.track:
            try:
                import wandb
            except ImportError:
                raise UserError("--track needs Weights & Biases: pip install -e '.[wandb]'") from None
            self.wandb = wandb
            wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                       config=vars(args), name=run_name, id=run_name.replace("/", "-"), resume="allow", save_code=True)
        # On resume, purge_step makes TensorBoard drop what the interrupted run logged after its checkpoint.
        # max_queue: with the default of 10, each add_scalar waits on the writer thread (~50 us instead of ~6 us)
        self.excepthook, threading.excepthook = threading.excepthook, self.quiet_writer_thread
        with self.faults():
            self.writer = SummaryWriter(self.log_dir, purge_step=global_step + 1 if resumed else None, max_queue=1000)
            if not resumed:
                self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % (
                    "\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])))
        self.start_time, self.start_step, self.last_return = time.time(), global_step, None
        self.progress = tqdm(total=args.num_iterations * args.batch_size, initial=global_step, unit="step",
                             unit_scale=True, dynamic_ncols=True, disable=not sys.stderr.isatty())

    def scalars(self, step, values, flush=False):
        with self.faults():
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)
            if flush:  # on disk now, for whoever watches the run (TensorBoard, the tuner's pruner)
                self.writer.flush()

    def episodes(self, global_step, final_info):  # every episode that ended on this step, in any sub-env
        for i in np.flatnonzero(final_info.get("_episode", [])):
            self.last_return = float(final_info["episode"]["r"][i])
            self.progress.write(f"global_step={global_step}, episodic_return={self.last_return}")
            self.scalars(global_step, {"charts/episodic_return": self.last_return,
                                       "charts/episodic_length": int(final_info["episode"]["l"][i])})

    def iteration(self, global_step, learning_rate, stats, action_std):
        sps = int((global_step - self.start_step) / (time.time() - self.start_time))
        losses = {f"losses/{name}": value for name, value in stats.items()}  # all `update` returns: a new one is logged
        self.scalars(global_step, {"charts/learning_rate": learning_rate, **losses, "charts/action_std": action_std,
                                   "charts/SPS": sps}, flush=True)
        if self.progress.disable:
            print("SPS:", sps)
        self.progress.update(global_step - self.progress.n)
        self.progress.set_postfix(episodic_return=self.last_return, refresh=False)

    def close(self):
        self.progress.close()
        with self.faults():
            self.writer.close()
        threading.excepthook = self.excepthook
        if self.args.track:
            self.wandb.finish()

    @contextmanager
    def faults(self):
        try:
            yield
        except OSError as e:
            raise UserError(f"cannot write the run's logs to {e.filename or self.log_dir}: {e.strerror or e}") from None

    def quiet_writer_thread(self, e):
        # TensorBoard's writer thread keeps its error for our next call to raise (`faults`): no traceback of it here
        if not (issubclass(e.exc_type, OSError) and type(e.thread).__module__.startswith("tensorboard")):
            self.excepthook(e)


class StopRequest:
    """SIGINT/SIGTERM (Ctrl-C, or Slurm before a pre-emption) end the run cleanly at the next step; a second Ctrl-C
    stops it at once."""

    def __enter__(self):
        self.signum, self.previous = None, {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# Checkpoints: everything to act (weights, normalizer) and to continue, as tensors and Python values (weights_only)
CHECKPOINT_FORMAT = "rpo_continuous_action/3"


def resume_point(envs, next_obs, global_step, iteration, rollout_rng):
    """All that changes from one iteration to the next besides the weights and the optimizer, as plain values."""
    np_state = np.random.get_state()
    rng = {"python": random.getstate(), "torch": torch.get_rng_state(), "rollout": rollout_rng.bit_generator.state,
           "numpy": (np_state[0], torch.as_tensor(np_state[1].astype(np.int64)), *np_state[2:]),
           "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    return {"global_step": global_step, "iteration": iteration, "rng": rng, "next_obs": torch.tensor(next_obs),
            "obs_rms": _rms_state(envs.obs_rms), "return_rms": _rms_state(envs.return_rms),
            "discounted_reward": torch.tensor(envs.discounted_reward), "envs": list(map(take_env_state, envs.env.envs))}


def _rms_state(rms):
    return {"mean": torch.tensor(rms.mean), "var": torch.tensor(rms.var), "count": float(rms.count)}


def _load_rms(rms, state):
    rms.mean, rms.var, rms.count = state["mean"].numpy().copy(), state["var"].numpy().copy(), state["count"]


def save_checkpoint(path, args, run_name, agent, optimizer, envs, point):
    space = envs.single_action_space
    checkpoint = {"format": CHECKPOINT_FORMAT, "args": asdict(args), "run_name": run_name,
                  "obs_shape": list(envs.single_observation_space.shape), "action_shape": list(space.shape),
                  "action_low": torch.as_tensor(space.low), "action_high": torch.as_tensor(space.high),
                  "agent": agent.state_dict(), "optimizer": optimizer.state_dict(), **point}
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)  # in memory first: a failed write is then the OS's error, not torch's
    # Write aside, then rename: a kill or a full disk during the write leaves the previous checkpoint whole.
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with suppress(OSError):
            os.remove(tmp)
        raise UserError(f"cannot write the checkpoint {path}: {e.strerror or e}; the run stops here "
                        f"(the previous checkpoint, if any, is whole)") from None


def load_checkpoint(path):
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint file at {path}")
    try:
        with warnings.catch_warnings():  # a pickle that is not a checkpoint makes torch warn before refusing it
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused something that could run code
        raise UserError(f"{path} is not a readable checkpoint (it holds Python objects, not just tensors; "
                        "refusing to open it)") from None
    except Exception as e:  # truncated or corrupt archive
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is not a readable checkpoint (truncated or corrupt: {reason[:120]})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a checkpoint of rpo_continuous_action.py (format {CHECKPOINT_FORMAT})")
    return checkpoint


def restore(checkpoint, args, envs, agent, optimizer, rollout_rng):
    """Puts a saved run back (weights, optimizer, normalizers, RNGs, envs); returns global_step, iteration, next_obs."""
    agent_from_checkpoint(checkpoint, envs.single_observation_space.shape, envs.single_action_space.shape, args.env_id,
                          agent)
    base_lrs = [group["lr"] for group in optimizer.param_groups]  # the rates of this run's args
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (ValueError, KeyError) as e:
        raise UserError(f"the checkpoint's optimizer state does not fit this optimizer ({e})") from None
    for group, lr in zip(optimizer.param_groups, base_lrs):  # the saved rate is the annealed one; the loop sets it
        group["lr"] = lr
    _load_rms(envs.obs_rms, checkpoint["obs_rms"])
    _load_rms(envs.return_rms, checkpoint["return_rms"])
    envs.discounted_reward = checkpoint["discounted_reward"].numpy().copy()
    rng = checkpoint["rng"]
    random.setstate(rng["python"])
    np.random.set_state((rng["numpy"][0], rng["numpy"][1].numpy().astype(np.uint32), *rng["numpy"][2:]))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    rollout_rng.bit_generator.state = rng["rollout"]
    global_step = checkpoint["global_step"]
    print(f"resuming {checkpoint['run_name']} at global_step={global_step}")
    saved = checkpoint["envs"]
    why = (f"the run was on {checkpoint['args']['env_id']}" if args.env_id != checkpoint["args"]["env_id"] else
           f"this script cannot take the state of {args.env_id}'s envs" if None in saved else None)
    if why:
        print(f"note: the episodes in flight restart from a reset ({why})", file=sys.stderr)
        return global_step, checkpoint["iteration"] + 1, envs.reset(seed=args.seed + global_step)[0]
    for env, state in zip(envs.env.envs, saved):
        put_env_state(env, state)
    return global_step, checkpoint["iteration"] + 1, checkpoint["next_obs"].numpy().copy()


# Exact resume needs what each sub-env's next steps depend on beyond its last observation: its simulator, random
# generator and counters. Three families give it whole: gymnasium's MuJoCo envs, dm_control's suite (through shimmy)
# and classic control. Any other env (Box2D, your own) restarts its episodes from a reset on --resume.
def _env_parts(env):
    """([(object, attribute)], MuJoCo's (model, data) or None) of one sub-env; None if its state is out of reach."""
    layers = [env]
    while isinstance(layers[-1], gym.Wrapper):
        layers.append(layers[-1].env)
    u = layers[-1]
    attributes = [(w, name) for name in ("_elapsed_steps", "episode_returns", "episode_lengths") for w in layers
                  if name in vars(w)]
    family = type(u).__module__
    if family.startswith("gymnasium.envs.classic_control"):
        return attributes + [(u, "state")], None
    if family.startswith("gymnasium.envs.mujoco"):
        return attributes, (u.model, u.data)
    if family.startswith("shimmy.dm_control") and type(u._env).__module__ == "dm_control.rl.control":
        physics = u._env.physics  # dm_control counts the steps of its own time limit
        attributes += [(u._env, "_step_count"), (u._env, "_reset_next_step")]
        return attributes, (physics.model.ptr, physics.data.ptr)
    return None


# What dm_control's tasks draw in the model each episode: targets, point_mass's actuation, quadruped's terrain
EPISODE_MODEL = ("body_pos", "body_quat", "geom_pos", "site_pos", "wrap_prm", "hfield_data")


def take_env_state(env):
    if (parts := _env_parts(env)) is None:
        return None
    attributes, sim = parts
    rng = env.unwrapped.np_random  # a Generator; dm_control's task keeps a RandomState
    state = {"rng": rng.bit_generator.state if isinstance(rng, np.random.Generator) else rng.get_state(legacy=False),
             "attributes": [getattr(obj, name) for obj, name in attributes]}
    if sim:
        import mujoco
        (model, data), integration = sim, np.empty(mujoco.mj_stateSize(sim[0], mujoco.mjtState.mjSTATE_INTEGRATION))
        mujoco.mj_getState(model, data, integration, mujoco.mjtState.mjSTATE_INTEGRATION)
        state["mujoco"] = [integration, data.xpos, data.xipos] + [getattr(model, name) for name in EPISODE_MODEL]
    return _map(state, lambda x: torch.tensor(x) if isinstance(x, np.ndarray) else
                x.item() if isinstance(x, np.generic) else x)


def put_env_state(env, state):
    (attributes, sim), rng = _env_parts(env), env.unwrapped.np_random
    state = _map(state, lambda x: x.numpy().copy() if isinstance(x, torch.Tensor) else x)
    if isinstance(rng, np.random.Generator):
        rng.bit_generator.state = state["rng"]
    else:
        rng.set_state(state["rng"])
    for (obj, name), value in zip(attributes, state["attributes"]):
        setattr(obj, name, value)
    if sim:
        import mujoco
        (model, data), (integration, xpos, xipos, *episode_model) = sim, state["mujoco"]
        for name, value in zip(EPISODE_MODEL, episode_model):
            setattr(model, name, value)
        mujoco.mj_setState(model, data, integration, mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(model, data)  # dm_control's step starts from the quantities derived from the state
        # mj_step leaves the body positions of its last substep's start, which Ant, Humanoid, Reacher and Pusher read
        data.xpos, data.xipos = xpos, xipos


def _map(x, leaf):
    if isinstance(x, dict):
        return {k: _map(v, leaf) for k, v in x.items()}
    return [_map(v, leaf) for v in x] if isinstance(x, (list, tuple)) else leaf(x)


def agent_from_checkpoint(checkpoint, obs_shape=None, action_shape=None, env_id=None, agent=None):
    """The checkpoint's weights in `agent` (a new Agent by default), refused if made for other shapes than env_id's."""
    saved = tuple(checkpoint["obs_shape"]), tuple(checkpoint["action_shape"])
    if obs_shape is not None and saved != (tuple(obs_shape), tuple(action_shape)):
        raise UserError(f"the checkpoint was made for observations {saved[0]} and actions {saved[1]}, but {env_id} "
                        f"has {tuple(obs_shape)} and {tuple(action_shape)}")
    if agent is None:
        agent = Agent(int(np.prod(saved[0])), int(np.prod(saved[1])), checkpoint["args"]["rpo_alpha"])
    try:
        agent.load_state_dict(checkpoint["agent"])
    except RuntimeError as e:  # the Agent was edited since the checkpoint was saved
        raise UserError(f"the checkpoint's weights do not fit this Agent: {str(e).splitlines()[1].strip()}") from None
    return agent


def policy(agent, obs_rms):
    """The deterministic policy on raw observations, one or a batch (n, obs_dim): normalized with the frozen statistics
    obs_rms["mean"] and obs_rms["var"], the Agent's mean action."""
    device, mean, var = next(agent.parameters()).device, np.asarray(obs_rms["mean"]), np.asarray(obs_rms["var"])

    @torch.no_grad()
    def act(obs):
        obs = np.asarray(obs)
        if obs.shape[-1:] != mean.shape or obs.ndim > 2:
            raise ValueError(f"expected an observation of shape {mean.shape} or a batch (n, {mean.size}), got "
                             f"{obs.shape}")
        action, _ = agent.get_mean_and_logstd(torch.as_tensor(normalize_obs(obs.reshape(-1, mean.size), mean, var),
                                                               device=device))
        return action.cpu().numpy()[0 if obs.ndim == 1 else slice(None)]

    return act


def load_policy(path):
    """One call to act with a saved policy in your own code: `policy = load_policy(path); a = policy(obs)`. It takes
    raw observations (one, or a batch), normalizes them with the statistics saved at training time, and returns the
    deterministic (mean) action, clipped to the action space."""
    checkpoint = load_checkpoint(path)
    act = policy(agent_from_checkpoint(checkpoint), checkpoint["obs_rms"])
    return lambda obs: np.clip(act(obs), checkpoint["action_low"].numpy(), checkpoint["action_high"].numpy())


def evaluate(agent, obs_rms, args, run_name, episodes, seed, checkpoint=None):
    """Returns of `episodes` episodes of `agent`'s (or the checkpoint's) mean action, with obs_rms frozen."""
    env = make_env(args.env_id, 0, args.capture_video, f"{run_name}-eval", video_trigger=lambda _: True)()
    if checkpoint is not None:
        agent = agent_from_checkpoint(checkpoint, env.observation_space.shape, env.action_space.shape, args.env_id)
    act, returns = policy(agent, obs_rms), []
    obs, _ = env.reset(seed=seed)
    while len(returns) < episodes:
        obs, _, terminated, truncated, info = env.step(act(obs))
        if terminated or truncated:
            returns.append(float(info["episode"]["r"]))
            print(f"eval episode={len(returns) - 1}, episodic_return={returns[-1]}")
            if len(returns) < episodes:  # a reset would start one more video
                obs, _ = env.reset()
    env.close()
    print(f"eval: episodic_return={np.mean(returns):.2f} ± {np.std(returns):.2f} over {len(returns)} episodes")
    return returns


def parse_args(argv=None):
    """Args from the command line; with --resume or --eval-checkpoint, the saved run's args are the defaults."""
    args = tyro.cli(Args, args=argv)
    computed = ("batch_size", "minibatch_size", "num_iterations")  # the Args "to be filled in runtime"
    if args.resume and args.eval_checkpoint:
        raise UserError("give --resume or --eval-checkpoint, not both")
    checkpoint = None
    if args.resume or args.eval_checkpoint:
        checkpoint = load_checkpoint(args.resume or args.eval_checkpoint)
        saved = {f.name: checkpoint["args"][f.name] for f in fields(Args)
                 if f.name in checkpoint["args"] and f.name not in computed}
        saved.update(resume=args.resume, eval_checkpoint=args.eval_checkpoint)
        if args.eval_checkpoint:  # how the run was trained, yes; how it was watched, no
            saved.update(eval_episodes=Args.eval_episodes, capture_video=False, track=False)
        args = tyro.cli(Args, args=argv, default=Args(**saved))
        for name in ("num_envs", "num_steps"):  # the step count and the normalizer's state depend on them
            if args.resume and getattr(args, name) != saved[name]:
                raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)} differs from the saved run's "
                                f"{saved[name]}; a run resumes with the batch shape it started with")

    for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs", "checkpoint_interval", "torch_threads"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    given = [getattr(args, name) for name in computed]  # the reference overwrites them without a word
    args.batch_size = int(args.num_envs * args.num_steps)
    if args.batch_size % args.num_minibatches:
        raise UserError(f"--num-minibatches {args.num_minibatches} does not divide the batch of {args.batch_size} "
                        "steps (num_envs x num_steps)")
    args.minibatch_size = int(args.batch_size // args.num_minibatches)
    if args.total_timesteps < args.batch_size and not args.eval_checkpoint:
        raise UserError(f"--total-timesteps {args.total_timesteps} is less than one batch of {args.batch_size} "
                        "steps (num_envs x num_steps)")
    args.num_iterations = args.total_timesteps // args.batch_size
    for name, value, source in zip(computed, given, ("--num-envs x --num-steps", "the batch / --num-minibatches",
                                                     "--total-timesteps / the batch")):
        if value not in (0, getattr(args, name)):
            raise UserError(f"--{name.replace('_', '-')} {value} cannot be set: it is {source}, "
                            f"{getattr(args, name)} here")
    for name, value, open_low in (("rpo-alpha", args.rpo_alpha, False), ("clip-coef", args.clip_coef, False),
                                  ("vf-coef", args.vf_coef, False), ("learning-rate", args.learning_rate, True),
                                  ("max-grad-norm", args.max_grad_norm, True), ("target-kl", args.target_kl, True)):
        if value is not None and (value < 0 or (open_low and value == 0) or not math.isfinite(value)):
            raise UserError(f"--{name} must be {'>' if open_low else '>='} 0, got {value}")
    least = 1 if args.eval_checkpoint else 0
    if args.eval_episodes < least:
        raise UserError(f"--eval-episodes must be at least {least}, got {args.eval_episodes}")
    if args.norm_adv and args.minibatch_size < 2:
        raise UserError("minibatches of one sample cannot normalize advantages: use fewer --num-minibatches")
    if not 0 < args.gamma <= 1 or not 0 <= args.gae_lambda <= 1:
        raise UserError(f"--gamma must be in (0, 1] and --gae-lambda in [0, 1], got {args.gamma} and "
                        f"{args.gae_lambda}")
    return args, checkpoint


def main(argv=None):
    try:
        args, checkpoint = parse_args(argv)
        torch.set_num_threads(args.torch_threads)
        if args.capture_video:
            use_headless_rendering()
        if args.resume and checkpoint["iteration"] >= args.num_iterations:  # nothing to add: not logged again
            print(f"{checkpoint['run_name']} has trained its {checkpoint['global_step']} steps; give a larger "
                  "--total-timesteps to train it further")
            return 0
        if not args.eval_checkpoint:
            return train(args, checkpoint if args.resume else None)
        evaluate(None, checkpoint["obs_rms"], args, checkpoint["run_name"], args.eval_episodes, args.seed, checkpoint)
        return 0
    except (UserError, OSError) as e:  # OSError: a file the run needs (a video folder, ...) that the machine refused
        message = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename else e
        print(f"{os.path.basename(sys.argv[0] or 'rpo_continuous_action.py')}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
