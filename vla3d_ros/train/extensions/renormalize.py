"""`--renormalize`: a continued policy takes its new data's state/action statistics (a fresh policy
has them already). Needed when the data widens a distribution the init never saw."""
from __future__ import annotations

from vla3d_ros.model.normalization import Normalizer
from vla3d_ros.train.extensions.extension import Extension


def wanted(config, policy) -> bool:
    return config.renormalize


def apply(policy, dataset, config, log):
    policy.normalizer = Normalizer(dataset.normalization_stats()).to(next(policy.parameters()).device)
    return policy


EXTENSION = Extension("renormalize", wanted=wanted, apply=apply)
