"""An environment whose rewards turn NaN after a few steps, to check that the trainer stops."""
import gymnasium as gym
import numpy as np


class NanRewardEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        reward = float("nan") if self.t > 5 else 0.0
        return self.observation_space.sample(), reward, False, self.t >= 50, {}


gym.register("NanReward-v0", entry_point=NanRewardEnv)
