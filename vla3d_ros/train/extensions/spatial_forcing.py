"""Spatial Forcing (METHOD.md §7) at the requested alpha: its aligner added to, or dropped from, a
continued policy (`--spatial-forcing`)."""
from __future__ import annotations

from vla3d_ros.train.extensions.extension import Extension, rebuilt, with_fields


def configure(policy_config, config):
    if config.spatial_forcing is None:
        return policy_config
    return with_fields(policy_config, "spatial_forcing", weight=config.spatial_forcing)


def wanted(config, policy) -> bool:
    return config.spatial_forcing is not None and config.spatial_forcing != policy.config.spatial_forcing.weight


def apply(policy, dataset, config, log):
    """A copy of `policy` with Spatial Forcing weight alpha (aligner added or dropped, rest kept)."""
    return rebuilt(policy, configure(policy.config, config), "spatial_")


EXTENSION = Extension("spatial_forcing", wanted=wanted, apply=apply, configure=configure)
