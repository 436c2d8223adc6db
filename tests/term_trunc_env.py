"""A deterministic environment that both terminates and is cut by a time limit, to pin what --bootstrap-truncated does.

Episodes cycle through three endings (where in the cycle a sub-env starts is drawn from its seed, so sub-envs differ):
  0: terminates at step 3 (a failure: nothing to bootstrap);
  1: runs into the time limit of 6 steps (truncated: the value of the final observation is bootstrapped);
  2: terminates on the very step the time limit cuts it (both flags set: a termination, nothing to bootstrap).
The observation is [steps so far / 2, ending - 1, a number drawn at reset], so a final observation is far from the next
episode's first one; the reward is 1 - |action|.
"""
import gymnasium as gym
import numpy as np

LIMIT = 6


class TermTruncEnv(gym.Env):
    observation_space = gym.spaces.Box(-10.0, 10.0, (3,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None or not hasattr(self, "ending"):
            self.ending = int(self.np_random.integers(3)) - 1  # the first episode's ending is then the next one
        self.ending, self.t, self.drawn = (self.ending + 1) % 3, 0, float(self.np_random.uniform(-1, 1))
        return self._obs(), {}

    def _obs(self):
        return np.array([self.t / 2, self.ending - 1, self.drawn], dtype=np.float32)

    def step(self, action):
        self.t += 1
        terminated = (self.ending == 0 and self.t == 3) or (self.ending == 2 and self.t == LIMIT)
        return self._obs(), 1.0 - float(np.abs(action).sum()), terminated, False, {}


gym.register("TermTrunc-v0", entry_point=TermTruncEnv, max_episode_steps=LIMIT)
