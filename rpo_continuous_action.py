"""Robust Policy Optimization (RPO) for continuous actions, in one file.

RPO (Rahman & Xue, 2022, https://arxiv.org/abs/2212.07536) is PPO with one change: when the policy
is updated, the mean of its Gaussian is perturbed by z ~ U(-alpha, alpha), drawn afresh for every
sample, action dimension and update pass. That keeps the policy's entropy from collapsing. Rollouts
still sample from the unperturbed N(mu, sigma). Search for "RPO:" to find every line that differs
from PPO; `--rpo-alpha 0` is PPO.

    python rpo_continuous_action.py --env-id Hopper-v4
    python rpo_continuous_action.py --env-id Hopper-v4 --save-model      # checkpoint + evaluation
    python rpo_continuous_action.py --eval-checkpoint runs/RUN/rpo_continuous_action.cleanrl_model
    python rpo_continuous_action.py --resume runs/RUN/rpo_continuous_action.cleanrl_model

Runs on gymnasium 1.x (MuJoCo, Box2D, classic control, dm_control through shimmy) and torch 2.x.
"""

import ctypes.util
import math
import os
import pickle
import random
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=False`"""
    cuda: bool = True
    """if toggled, cuda will be enabled by default (falls back to the CPU when there is no GPU)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "cleanRL"
    """the wandb's project name"""
    wandb_entity: Optional[str] = None
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """whether to capture videos of the agent performances (check out `videos` folder)"""
    torch_threads: int = 1
    """torch threads; the networks are tiny, so more threads mostly add contention"""

    # Algorithm specific arguments
    env_id: str = "HalfCheetah-v4"
    """the id of the environment"""
    total_timesteps: int = 8000000
    """total timesteps of the experiments"""
    learning_rate: float = 3e-4
    """the learning rate of the optimizer"""
    num_envs: int = 1
    """the number of parallel game environments"""
    num_steps: int = 2048
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = True
    """Toggle learning rate annealing for policy and value networks"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 32
    """the number of mini-batches"""
    update_epochs: int = 10
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """Toggles advantages normalization"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """Toggles whether or not to use a clipped loss for the value function, as per the paper."""
    ent_coef: float = 0.0
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: Optional[float] = None
    """the target KL divergence threshold"""
    rpo_alpha: float = 0.5  # RPO: the one new hyperparameter
    """the alpha parameter for RPO (0 gives PPO)"""
    bootstrap_truncated: bool = False
    """bootstrap from the value of the final observation when the time limit cuts an episode
    (the reference treats a truncation like a termination)"""

    # Keeping the policy
    save_model: bool = False
    """save checkpoints to runs/{run_name}/{exp_name}.cleanrl_model and evaluate at the end"""
    checkpoint_interval: int = 50
    """with --save-model, write a checkpoint every this many iterations"""
    eval_episodes: int = 10
    """episodes of the deterministic policy evaluated after training or with --eval-checkpoint"""
    eval_checkpoint: Optional[str] = None
    """evaluate this checkpoint instead of training"""
    resume: Optional[str] = None
    """continue the run saved in this checkpoint"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""


class UserError(Exception):
    """Bad input: reported as one line on stderr, without a traceback."""


def make_env(env_id, idx, capture_video, run_name, gamma, video_trigger=None):
    def thunk():
        if env_id.startswith("dm_control/"):
            use_headless_rendering(required=False)  # dm_control picks its GL backend on import
            try:
                import shimmy
            except ImportError:
                raise UserError(f"{env_id} needs dm_control: pip install -e '.[dm-control]'") from None
            gym.register_envs(shimmy)
        try:
            env = gym.make(env_id, **({"render_mode": "rgb_array"} if capture_video and idx == 0 else {}))
            if not isinstance(env.action_space, gym.spaces.Box):
                raise UserError(f"{env_id} has a {type(env.action_space).__name__} action space; "
                                "RPO needs continuous (Box) actions")
            if len(env.action_space.shape) != 1:
                raise UserError(f"{env_id} has actions of shape {env.action_space.shape}; this trainer needs a "
                                "vector of actions (a Box of one dimension)")
            if capture_video and idx == 0:
                env = gym.wrappers.RecordVideo(env, f"videos/{run_name}", episode_trigger=video_trigger)
            env = gym.wrappers.FlattenObservation(env)  # deal with dm_control's Dict observation space
            env = gym.wrappers.RecordEpisodeStatistics(env)
            env = gym.wrappers.ClipAction(env)
            env = gym.wrappers.NormalizeObservation(env)
            env = gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10), env.observation_space)
            env = gym.wrappers.NormalizeReward(env, gamma=gamma)
            env = gym.wrappers.TransformReward(env, lambda reward: np.clip(reward, -10, 10))
        except gym.error.Error as e:  # unknown id, missing simulator or video writer, ...
            raise UserError(f"cannot make environment {env_id!r}: {e}") from None
        return env

    return thunk


def make_envs(args, run_name):
    # SAME_STEP autoreset (gymnasium 0.29's behaviour): the step that ends an episode returns the
    # next episode's first observation, so no stored transition spans two episodes.
    # copy=False: the returned observation is the vector env's own buffer, which the next step
    # overwrites; the training loop copies it into the rollout first, so a deepcopy a step is waste.
    return gym.vector.SyncVectorEnv(
        [make_env(args.env_id, i, args.capture_video, run_name, args.gamma) for i in range(args.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        copy=False,
    )


def find_wrapper(env, wrapper_type):
    while isinstance(env, gym.Wrapper):
        if isinstance(env, wrapper_type):
            return env
        env = env.env
    raise ValueError(f"no {wrapper_type.__name__} in the wrapper chain")


def use_headless_rendering(required=True):
    """Pick an offscreen OpenGL backend for MuJoCo and dm_control when there is no display."""
    if os.environ.get("MUJOCO_GL") or os.environ.get("DISPLAY"):
        return
    for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if ctypes.util.find_library(library) and (backend != "egl" or _egl_works()):
            os.environ["MUJOCO_GL"] = backend
            return
    if required:
        raise UserError("--capture-video without a display needs OSMesa or EGL: apt-get install libosmesa6")


def _egl_works():
    # libEGL is often installed without a GPU driver behind it; only trust it if a display opens.
    try:
        egl = ctypes.CDLL(ctypes.util.find_library("EGL"))
        egl.eglGetDisplay.restype = ctypes.c_void_p
        display = egl.eglGetDisplay(ctypes.c_void_p(0))
        return bool(display) and bool(egl.eglInitialize(ctypes.c_void_p(display), None, None))
    except (OSError, AttributeError):
        return False


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

    def get_action_and_value(self, x, action=None):
        action_mean = self.actor_mean(x)
        action_logstd = self.actor_logstd.expand_as(action_mean)
        action_std = torch.exp(action_logstd)
        if action is None:  # the rollout samples from PPO's unperturbed policy
            action = torch.normal(action_mean.detach(), action_std.detach())
        else:
            # RPO: re-score the stored action under N(mu + z, sigma), z ~ U(-alpha, alpha) drawn
            # afresh for every sample and action dimension, on the mean's own device and dtype.
            z = torch.empty_like(action_mean).uniform_(-self.rpo_alpha, self.rpo_alpha)
            action_mean = action_mean + z
        # log N(action; mean, std) and the entropy of N(mean, std), summed over action dimensions
        logprob = (-0.5 * ((action - action_mean) / action_std) ** 2 - action_logstd - 0.5 * math.log(2 * math.pi)).sum(1)
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + action_logstd).sum(1)
        return action, logprob, entropy, self.critic(x)


def flatten_parameters(module):
    """Make every parameter of `module` a view into one flat tensor, and every gradient a view into
    one flat gradient; returns the flat parameter, whose `.grad` is that gradient.

    Adam, gradient clipping and zeroing then run on one tensor instead of one per layer: on a
    CPU that cuts a fifth of the update's time. The arithmetic is the same, element for element.
    Keep the gradient buffer alive: zero it in place (`flat.grad.zero_()`), never set it to None.
    """
    params = list(module.parameters())
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat.data[offset : offset + n].view_as(p)
        p.grad = flat.grad[offset : offset + n].view_as(p)
        offset += n
    return flat


class Adam:
    """torch.optim.Adam (no weight decay, no amsgrad) for the one flat parameter, written out.

    Creating any torch.optim optimizer imports torch._dynamo, about 70 MiB of resident memory in a
    run that otherwise needs under 300. These are the same operations as torch.optim.Adam's
    single-tensor path (tested against it), and state_dict() has its layout.
    """

    def __init__(self, param, lr, eps, betas=(0.9, 0.999)):
        self.param, self.lr, self.eps, self.betas = param, lr, eps, betas
        self.steps = 0
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(param), torch.zeros_like(param)

    @torch.no_grad()
    def step(self):
        beta1, beta2 = self.betas
        grad = self.param.grad
        self.steps += 1
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1, bias_correction2 = 1 - beta1**self.steps, 1 - beta2**self.steps
        denom = (self.exp_avg_sq.sqrt() / bias_correction2**0.5).add_(self.eps)
        self.param.addcdiv_(self.exp_avg, denom, value=-self.lr / bias_correction1)

    def state_dict(self):
        state = {0: {"step": torch.tensor(float(self.steps)), "exp_avg": self.exp_avg.clone(),
                     "exp_avg_sq": self.exp_avg_sq.clone()}} if self.steps else {}
        group = {"lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": 0, "amsgrad": False, "params": [0]}
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict):
        groups, state = state_dict["param_groups"], state_dict["state"].get(0)
        if len(groups) != 1 or groups[0]["params"] != [0] or (state and state["exp_avg"].shape != self.param.shape):
            raise UserError("the checkpoint's optimizer state does not fit this trainer's flat parameter")
        self.lr = groups[0]["lr"]
        if state:
            self.steps = int(state["step"])
            self.exp_avg.copy_(state["exp_avg"])
            self.exp_avg_sq.copy_(state["exp_avg_sq"])


class RolloutPolicy:
    """A numpy copy of the agent, used to act during one rollout, while its weights are frozen.

    For one observation a torch call costs more than the arithmetic; in numpy the forward pass
    and the sample take a quarter of the time. It samples from the unperturbed N(mu, sigma):
    RPO's noise belongs to the update only.
    """

    def __init__(self, agent):
        def layers(net):
            return [(m.weight.detach().cpu().numpy().T.copy(), m.bias.detach().cpu().numpy().copy())
                    for m in net if isinstance(m, nn.Linear)]

        self.actor, self.critic = layers(agent.actor_mean), layers(agent.critic)
        self.logstd = agent.actor_logstd.detach().cpu().numpy()[0].copy()
        self.std = np.exp(self.logstd)

    @staticmethod
    def _mlp(layers, x):
        for w, b in layers[:-1]:
            x = np.tanh(x @ w + b)
        w, b = layers[-1]
        return x @ w + b

    def mean(self, obs):
        return self._mlp(self.actor, obs)

    def value(self, obs):
        return self._mlp(self.critic, obs)[..., 0]

    def act(self, obs, noise):
        """The action mu(obs) + sigma * noise, given standard normal noise."""
        return self.mean(obs) + self.std * noise

    def logprob(self, noise):
        """log N(a; mu, sigma) of the actions drawn with `noise`: (a - mu) / sigma == noise."""
        return (-0.5 * noise * noise - self.logstd - 0.5 * math.log(2 * math.pi)).sum(-1)


def compute_gae(rewards, values, dones, next_value, gamma, gae_lambda):
    """Generalized advantage estimation over a (num_steps, num_envs) rollout.

    dones[t] is 1 where the episode ended at step t, so obs[t + 1] starts a new one and
    nothing is bootstrapped across it; next_value is the value of the observation after the last step.
    """
    next_values = np.concatenate([values[1:], next_value[None]], axis=0)
    next_nonterminal = 1.0 - dones
    deltas = rewards + gamma * next_values * next_nonterminal - values
    advantages = np.zeros_like(rewards)
    lastgaelam = np.zeros_like(next_value)
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


def update(agent, optimizer, batch, args):
    """PPO's update on one rollout: `update_epochs` passes of shuffled minibatches. Returns the losses
    of the last minibatch and the mean clip fraction, as floats."""
    M, B = args.num_minibatches, args.minibatch_size
    ratios = []
    grad = optimizer.param.grad  # the flat gradient, see flatten_parameters
    for epoch in range(args.update_epochs):
        # Shuffle once per epoch and gather every tensor in one go; the minibatches are then views.
        perm = torch.randperm(args.batch_size, device=batch["obs"].device)
        obs, actions, logprobs, returns, values = (batch[k][perm] for k in ("obs", "actions", "logprobs", "returns", "values"))
        advantages = batch["advantages"][perm].view(M, B)
        if args.norm_adv:  # per minibatch, as PPO does, all minibatches at once
            advantages = (advantages - advantages.mean(1, keepdim=True)) / (advantages.std(1, keepdim=True) + 1e-8)
        for i in range(M):
            mb = slice(i * B, (i + 1) * B)
            _, newlogprob, entropy, newvalue = agent.get_action_and_value(obs[mb], actions[mb])  # RPO noise inside
            logratio = newlogprob - logprobs[mb]
            ratio = logratio.exp()

            pg_loss = policy_loss(advantages[i], ratio, args.clip_coef)
            v_loss = value_loss(newvalue.view(-1), returns[mb], values[mb], args.clip_coef, args.clip_vloss)
            entropy_loss = entropy.mean()
            loss = pg_loss + v_loss * args.vf_coef
            if args.ent_coef:  # at 0 (the default) the term adds nothing: leave it out of the backward pass
                loss = loss - args.ent_coef * entropy_loss

            grad.zero_()
            loss.backward()
            # nn.utils.clip_grad_norm_'s formula, applied to the one flat gradient without its per-call overhead
            grad.mul_(torch.clamp(args.max_grad_norm / (torch.linalg.vector_norm(grad) + 1e-6), max=1.0))
            optimizer.step()
            ratios.append(ratio.detach())  # for the clip fraction, computed once at the end

        with torch.no_grad():
            # calculate approx_kl http://joschu.net/blog/kl-approx.html (last minibatch, as PPO logs it)
            old_approx_kl = (-logratio).mean()
            approx_kl = ((ratio - 1) - logratio).mean()
        if args.target_kl is not None and approx_kl > args.target_kl:
            break
    return {"loss": loss.item(), "value_loss": v_loss.item(), "policy_loss": pg_loss.item(),
            "entropy": entropy_loss.item(), "old_approx_kl": old_approx_kl.item(), "approx_kl": approx_kl.item(),
            "clipfrac": ((torch.stack(ratios) - 1.0).abs() > args.clip_coef).float().mean().item()}


# ---------------------------------------------------------------------------------------------
# Checkpoints: everything needed to act (weights + observation normalizer) and to continue.
# Plain tensors and Python values only, so torch.load(..., weights_only=True) opens them.
# ---------------------------------------------------------------------------------------------
CHECKPOINT_FORMAT = "rpo_continuous_action/1"


def _rms_state(rms):
    return {"mean": torch.as_tensor(rms.mean), "var": torch.as_tensor(rms.var), "count": float(rms.count)}


def _load_rms(rms, state):
    rms.mean = state["mean"].numpy().astype(rms.mean.dtype)
    rms.var = state["var"].numpy().astype(rms.var.dtype)
    rms.count = state["count"]


def save_checkpoint(path, args, run_name, agent, optimizer, envs, global_step, iteration, rollout_rng):
    normalizers = [find_wrapper(e, gym.wrappers.NormalizeObservation) for e in envs.envs]
    reward_normalizers = [find_wrapper(e, gym.wrappers.NormalizeReward) for e in envs.envs]
    np_state = np.random.get_state()
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "args": asdict(args),
        "run_name": run_name,
        "global_step": global_step,
        "iteration": iteration,
        "obs_shape": list(envs.single_observation_space.shape),
        "action_shape": list(envs.single_action_space.shape),
        "action_low": torch.as_tensor(envs.single_action_space.low),
        "action_high": torch.as_tensor(envs.single_action_space.high),
        "agent": agent.state_dict(),
        "optimizer": optimizer.state_dict(),
        "obs_rms": [_rms_state(n.obs_rms) for n in normalizers],
        "return_rms": [_rms_state(n.return_rms) for n in reward_normalizers],
        "discounted_reward": [torch.as_tensor(n.discounted_reward) for n in reward_normalizers],
        "rng": {
            "python": random.getstate(),
            "numpy": (np_state[0], torch.as_tensor(np_state[1].astype(np.int64)), *np_state[2:]),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "rollout": rollout_rng.bit_generator.state,
        },
    }
    # Write aside, then rename: a kill during the write leaves the previous checkpoint intact.
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path):
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint file at {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused something that could run code
        raise UserError(f"{path} is not a readable checkpoint (it holds Python objects, not just tensors; "
                        "refusing to open it)") from None
    except Exception as e:  # truncated or corrupt archive
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is not a readable checkpoint (truncated or corrupt: {reason[:120]})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a checkpoint of rpo_continuous_action.py")
    return checkpoint


def check_shapes(checkpoint, envs_or_env, env_id):
    obs_shape = list(getattr(envs_or_env, "single_observation_space", envs_or_env.observation_space).shape)
    action_shape = list(getattr(envs_or_env, "single_action_space", envs_or_env.action_space).shape)
    if obs_shape != checkpoint["obs_shape"] or action_shape != checkpoint["action_shape"]:
        raise UserError(
            f"the checkpoint was made for observations {tuple(checkpoint['obs_shape'])} and actions "
            f"{tuple(checkpoint['action_shape'])}, but {env_id} has {tuple(obs_shape)} and {tuple(action_shape)}"
        )


def agent_from_checkpoint(checkpoint):
    agent = Agent(int(np.prod(checkpoint["obs_shape"])), int(np.prod(checkpoint["action_shape"])),
                  checkpoint["args"]["rpo_alpha"])
    agent.load_state_dict(checkpoint["agent"])
    return agent


def load_policy(path):
    """One call to act with a saved policy in your own code: `policy = load_policy(path); a = policy(obs)`.

    The returned function takes raw observations (one, or a batch), normalizes and clips them with
    the statistics saved at training time, and returns the deterministic (mean) action, clipped to
    the action space.
    """
    checkpoint = load_checkpoint(path)
    policy = RolloutPolicy(agent_from_checkpoint(checkpoint))
    rms = checkpoint["obs_rms"][0]
    mean, std = rms["mean"].numpy(), np.sqrt(rms["var"].numpy() + 1e-8)
    low, high = checkpoint["action_low"].numpy(), checkpoint["action_high"].numpy()

    def act(obs):
        obs = np.asarray(obs, dtype=np.float64)
        if obs.shape[-1:] != mean.shape or obs.ndim > 2:
            raise ValueError(f"expected an observation of shape {mean.shape} or a batch (n, {mean.size}), got {obs.shape}")
        batch = obs.reshape(-1, mean.size)
        action = np.clip(policy.mean(np.clip((batch - mean) / std, -10, 10).astype(np.float32)), low, high)
        return action if obs.ndim == 2 else action[0]

    return act


def evaluate(policy, obs_rms_state, args, run_name, episodes, seed, checkpoint=None):
    """Returns of `episodes` episodes of the mean action, with the observation normalizer frozen."""
    env = make_env(args.env_id, 0, args.capture_video, f"{run_name}-eval", args.gamma, video_trigger=lambda _: True)()
    if checkpoint is not None:
        check_shapes(checkpoint, env, args.env_id)
    normalizer = find_wrapper(env, gym.wrappers.NormalizeObservation)
    if obs_rms_state is not None:
        _load_rms(normalizer.obs_rms, obs_rms_state)
    normalizer.update_running_mean = False
    returns = []
    obs, _ = env.reset(seed=seed)
    while len(returns) < episodes:
        action = policy.mean(np.asarray(obs, dtype=np.float32)[None])[0]
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            returns.append(float(info["episode"]["r"]))
            if len(returns) < episodes:  # a reset would start one more video
                obs, _ = env.reset()
    env.close()
    return returns


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
class StopRequest:
    """SIGINT/SIGTERM (Ctrl-C, or Slurm before a pre-emption) end the run cleanly at the next step."""

    def __init__(self):
        self.signum = None
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def train(args, checkpoint=None):
    torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    run_name = checkpoint["run_name"] if checkpoint else f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    model_path = f"runs/{run_name}/{args.exp_name}.cleanrl_model"

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    rollout_rng = np.random.default_rng(args.seed)

    if args.capture_video:
        use_headless_rendering()
    envs = make_envs(args, run_name)
    obs_shape, act_shape = envs.single_observation_space.shape, envs.single_action_space.shape
    agent = Agent(int(np.prod(obs_shape)), int(np.prod(act_shape)), args.rpo_alpha).to(device)
    flat_params = flatten_parameters(agent)
    optimizer = Adam(flat_params, lr=args.learning_rate, eps=1e-5)

    global_step, start_iteration = 0, 1
    if checkpoint:
        check_shapes(checkpoint, envs, args.env_id)
        agent.load_state_dict(checkpoint["agent"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        optimizer.lr = args.learning_rate  # the saved lr is the annealed one; the loop sets it
        for env, obs_rms, return_rms, discounted in zip(
            envs.envs, checkpoint["obs_rms"], checkpoint["return_rms"], checkpoint["discounted_reward"]
        ):
            _load_rms(find_wrapper(env, gym.wrappers.NormalizeObservation).obs_rms, obs_rms)
            reward_normalizer = find_wrapper(env, gym.wrappers.NormalizeReward)
            _load_rms(reward_normalizer.return_rms, return_rms)
            reward_normalizer.discounted_reward = discounted.numpy().copy()
        rng = checkpoint["rng"]
        random.setstate(rng["python"])
        np.random.set_state((rng["numpy"][0], rng["numpy"][1].numpy().astype(np.uint32), *rng["numpy"][2:]))
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        rollout_rng.bit_generator.state = rng["rollout"]
        global_step, start_iteration = checkpoint["global_step"], checkpoint["iteration"] + 1
        print(f"resuming {run_name} at global_step={global_step}")

    if args.track:
        try:
            import wandb
        except ImportError:
            raise UserError("--track needs Weights & Biases: pip install -e '.[wandb]'") from None

        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config=vars(args),
            name=run_name,
            id=run_name.replace("/", "-"),
            resume="allow",
            save_code=True,
        )
    # On resume, purge_step makes TensorBoard drop what the interrupted run logged after its checkpoint.
    # max_queue: with the default of 10, each add_scalar waits on the writer thread (~50 us instead of ~6 us)
    writer = SummaryWriter(f"runs/{run_name}", purge_step=global_step + 1 if checkpoint else None, max_queue=1000)
    if not checkpoint:
        writer.add_text(
            "hyperparameters",
            "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])),
        )

    # Storage for one rollout. numpy on the CPU, where the envs live; it moves to `device` once per update.
    T, N = args.num_steps, args.num_envs
    obs = np.zeros((T, N) + obs_shape, dtype=np.float32)
    actions = np.zeros((T, N) + act_shape, dtype=np.float32)
    rewards = np.zeros((T, N), dtype=np.float32)
    dones = np.zeros((T, N), dtype=np.float32)

    next_obs, _ = envs.reset(seed=args.seed + global_step)
    start_time, start_step = time.time(), global_step
    last_return = None
    progress = tqdm(total=args.num_iterations * args.batch_size, initial=global_step, unit="step",
                    unit_scale=True, dynamic_ncols=True, disable=not sys.stderr.isatty())
    completed = start_iteration - 1
    try:
        with StopRequest() as stop:
            for iteration in range(start_iteration, args.num_iterations + 1):
                # Annealing the rate if instructed to do so.
                if args.anneal_lr:
                    frac = 1.0 - (iteration - 1.0) / args.num_iterations
                    optimizer.lr = frac * args.learning_rate

                iteration_start_step = global_step
                policy = RolloutPolicy(agent)
                noise = rollout_rng.standard_normal((T, N) + act_shape, dtype=np.float32)
                for step in range(T):
                    if stop.signum is not None:
                        break
                    global_step += N
                    obs[step] = next_obs
                    actions[step] = action = policy.act(obs[step], noise[step])

                    next_obs, reward, terminations, truncations, infos = envs.step(action)
                    rewards[step] = reward
                    dones[step] = np.logical_or(terminations, truncations)

                    if "final_obs" in infos:
                        if args.bootstrap_truncated:
                            # a time limit is not a failure: credit the value of where the agent got to
                            for i in np.flatnonzero(truncations & ~terminations):
                                final = np.asarray(infos["final_obs"][i], dtype=np.float32)
                                rewards[step, i] += args.gamma * policy.value(final)
                        episode = infos["final_info"].get("episode")
                        for i in np.flatnonzero(infos["final_info"].get("_episode", [])):
                            last_return = float(episode["r"][i])
                            progress.write(f"global_step={global_step}, episodic_return={last_return}")
                            writer.add_scalar("charts/episodic_return", last_return, global_step)
                            writer.add_scalar("charts/episodic_length", int(episode["l"][i]), global_step)
                if stop.signum is not None:
                    # the partial rollout is not trained on (the normalizers keep what they saw of it)
                    global_step = iteration_start_step
                    break

                # The weights did not change during the rollout: evaluate the critic and the log-density
                # for all its steps in one batched call each, instead of one call per step.
                values = policy.value(obs.reshape(T * N, -1)).reshape(T, N)
                logprobs = policy.logprob(noise)
                # bootstrap value if not done
                advantages, returns = compute_gae(rewards, values, dones, policy.value(next_obs.astype(np.float32)),
                                                  args.gamma, args.gae_lambda)

                # flatten the batch
                batch = {name: torch.from_numpy(array.reshape((args.batch_size,) + array.shape[2:])).to(device)
                         for name, array in (("obs", obs), ("actions", actions), ("logprobs", logprobs),
                                             ("advantages", advantages), ("returns", returns), ("values", values))}
                stats = update(agent, optimizer, batch, args)
                if not math.isfinite(stats["loss"]):
                    raise UserError(f"the loss became {stats['loss']} at iteration {iteration} (global_step="
                                    f"{global_step}); stopping rather than training on garbage")

                var_y = np.var(returns)
                explained_var = np.nan if var_y == 0 else 1 - np.var(returns - values) / var_y

                # TRY NOT TO MODIFY: record rewards for plotting purposes
                sps = int((global_step - start_step) / (time.time() - start_time))
                writer.add_scalar("charts/learning_rate", optimizer.lr, global_step)
                for name in ("value_loss", "policy_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac"):
                    writer.add_scalar(f"losses/{name}", stats[name], global_step)
                writer.add_scalar("losses/explained_variance", explained_var, global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
                if progress.disable:
                    print("SPS:", sps)
                progress.update(global_step - progress.n)
                progress.set_postfix(episodic_return=last_return, refresh=False)

                completed = iteration
                if args.save_model and iteration % args.checkpoint_interval == 0 and iteration < args.num_iterations:
                    save_checkpoint(model_path, args, run_name, agent, optimizer, envs, global_step, completed, rollout_rng)
                if stop.signum is not None:  # arrived during the update: this iteration is complete
                    break

        progress.close()
        if args.save_model:  # the last iteration, or the last one finished before a signal
            save_checkpoint(model_path, args, run_name, agent, optimizer, envs, global_step, completed, rollout_rng)
            print(f"model saved to {model_path}")
        if stop.signum is not None:
            hint = f"; continue with --resume {model_path}" if args.save_model else ""
            print(f"{signal.Signals(stop.signum).name}: stopped at global_step={global_step}{hint}", file=sys.stderr)
            return 128 + stop.signum
        if args.save_model and args.eval_episodes > 0:
            obs_rms = _rms_state(find_wrapper(envs.envs[0], gym.wrappers.NormalizeObservation).obs_rms)
            returns = evaluate(RolloutPolicy(agent), obs_rms, args, run_name, args.eval_episodes, args.seed)
            for i, episodic_return in enumerate(returns):
                writer.add_scalar("eval/episodic_return", episodic_return, i)
            print(f"eval: episodic_return={np.mean(returns):.2f} ± {np.std(returns):.2f} over {len(returns)} episodes")
        return 0
    finally:
        progress.close()
        writer.close()
        envs.close()
        if args.track:
            wandb.finish()


def parse_args(argv=None):
    """Args from the command line; with --resume or --eval-checkpoint, the saved run's args are the defaults."""
    args = tyro.cli(Args, args=argv)
    if args.resume and args.eval_checkpoint:
        raise UserError("give --resume or --eval-checkpoint, not both")
    checkpoint = None
    if args.resume or args.eval_checkpoint:
        checkpoint = load_checkpoint(args.resume or args.eval_checkpoint)
        saved = {f.name: checkpoint["args"][f.name] for f in fields(Args) if f.name in checkpoint["args"]}
        saved.update(resume=args.resume, eval_checkpoint=args.eval_checkpoint)
        if args.eval_checkpoint:  # how the run was trained, yes; how it was watched, no
            saved.update(eval_episodes=Args.eval_episodes, capture_video=False, track=False)
        args = tyro.cli(Args, args=argv, default=Args(**saved))
        for name in ("num_envs", "num_steps"):  # the step count and the per-env normalizers depend on them
            if args.resume and getattr(args, name) != saved[name]:
                raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)} differs from the saved run's "
                                f"{saved[name]}; a run resumes with the batch shape it started with")

    positive = ("num_envs", "num_steps", "num_minibatches", "update_epochs", "checkpoint_interval", "torch_threads")
    for name in positive:
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    args.batch_size = int(args.num_envs * args.num_steps)
    if args.batch_size % args.num_minibatches:
        raise UserError(f"--num-minibatches {args.num_minibatches} does not divide the batch of {args.batch_size} "
                        "steps (num_envs x num_steps)")
    args.minibatch_size = int(args.batch_size // args.num_minibatches)
    if args.total_timesteps < args.batch_size and not args.eval_checkpoint:
        raise UserError(f"--total-timesteps {args.total_timesteps} is less than one batch of {args.batch_size} "
                        "steps (num_envs x num_steps)")
    args.num_iterations = args.total_timesteps // args.batch_size
    if args.rpo_alpha < 0:
        raise UserError(f"--rpo-alpha must be >= 0 (0 is PPO), got {args.rpo_alpha}")
    if args.eval_episodes < (1 if args.eval_checkpoint else 0):
        raise UserError(f"--eval-episodes must be at least {1 if args.eval_checkpoint else 0}, got {args.eval_episodes}")
    if args.norm_adv and args.minibatch_size < 2:
        raise UserError("minibatches of one sample cannot normalize advantages: use fewer --num-minibatches")
    if not 0 < args.gamma <= 1 or not 0 <= args.gae_lambda <= 1:
        raise UserError(f"--gamma must be in (0, 1] and --gae-lambda in [0, 1], got {args.gamma} and {args.gae_lambda}")
    if args.learning_rate <= 0:
        raise UserError(f"--learning-rate must be > 0, got {args.learning_rate}")
    return args, checkpoint


def evaluate_checkpoint(args, checkpoint):
    torch.set_num_threads(args.torch_threads)
    if args.capture_video:
        use_headless_rendering()
    policy = RolloutPolicy(agent_from_checkpoint(checkpoint))
    returns = evaluate(policy, checkpoint["obs_rms"][0], args, checkpoint["run_name"], args.eval_episodes, args.seed,
                       checkpoint=checkpoint)
    for i, episodic_return in enumerate(returns):
        print(f"eval episode={i}, episodic_return={episodic_return}")
    print(f"eval: episodic_return={np.mean(returns):.2f} ± {np.std(returns):.2f} over {len(returns)} episodes")
    return 0


def main(argv=None):
    try:
        args, checkpoint = parse_args(argv)
        if args.eval_checkpoint:
            return evaluate_checkpoint(args, checkpoint)
        return train(args, checkpoint if args.resume else None)
    except UserError as e:
        print(f"{os.path.basename(sys.argv[0] or 'rpo_continuous_action.py')}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
