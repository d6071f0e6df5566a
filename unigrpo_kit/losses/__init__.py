"""Policy-gradient losses: the PPO-clip core, GRPO over tokens, Flow-GRPO over denoising steps."""

from .flow_grpo import FlowGRPOLoss
from .grpo import GRPOLoss
from .ppo import LossOutput, PPOClipLoss

__all__ = ["FlowGRPOLoss", "GRPOLoss", "LossOutput", "PPOClipLoss"]
