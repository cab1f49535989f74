"""`--anchor-weight`: the reasoning anchor's fact-loss weight (a config change, no new parameters)."""
from __future__ import annotations

from vla3d_ros.train.extensions.extension import Extension, with_fields


def configure(policy_config, config):
    return policy_config if config.anchor_weight is None else with_fields(
        policy_config, "action_head", anchor_weight=config.anchor_weight)


def wanted(config, policy) -> bool:
    return config.anchor_weight is not None


def apply(policy, dataset, config, log):
    policy.config = configure(policy.config, config)
    return policy


EXTENSION = Extension("anchor_weight", wanted=wanted, apply=apply, configure=configure)
