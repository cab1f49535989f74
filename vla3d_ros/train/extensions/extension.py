"""`Extension`: one experiment addition to the policy (see the package docstring); `switch`, an
addition that is one boolean of a config section; `setting`, one value of a config section;
`rebuilt`, the surgery they share."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vla3d_ros.errors import TrainingError
from vla3d_ros.model.config import PolicyConfig
from vla3d_ros.model.policy import VLA3DPolicy

if TYPE_CHECKING:
    from vla3d_ros.data.dataset import EpisodeDataset
    from vla3d_ros.train.trainer import TrainConfig


def unchanged_config(policy_config: PolicyConfig, config: "TrainConfig") -> PolicyConfig:
    return policy_config


def nothing_to_fit(policy: VLA3DPolicy, dataset: "EpisodeDataset") -> None:
    return None


@dataclass(frozen=True)
class Extension:
    """One addition. `configure(policy_config, config)`: a fresh policy's config with the addition
    when `config` asks for it. `wanted(config, policy)`: a loaded policy lacks what `config` asks
    for. `apply(policy, dataset, config, log)`: that policy with the addition (a new object or
    `policy` itself); `log` takes one line for the user. `fit_fresh(policy, dataset)`: fit a fresh
    policy's addition on the data (in place)."""

    name: str
    wanted: Callable[["TrainConfig", VLA3DPolicy], bool]
    apply: Callable[[VLA3DPolicy, "EpisodeDataset", "TrainConfig", Callable[[str], None]], VLA3DPolicy]
    configure: Callable[[PolicyConfig, "TrainConfig"], PolicyConfig] = unchanged_config
    fit_fresh: Callable[[VLA3DPolicy, "EpisodeDataset"], None] = nothing_to_fit


def rebuilt(policy: VLA3DPolicy, config: PolicyConfig, changed_prefix: str | tuple[str, ...]) -> VLA3DPolicy:
    """A copy of `policy` with `config`; every tensor is kept except those under `changed_prefix`
    (the parts the config change adds or drops; one prefix or a tuple of them)."""
    fresh = VLA3DPolicy(config, policy.normalizer.stats).to(next(policy.parameters()).device)
    missing, unexpected = fresh.load_state_dict(policy.state_dict(), strict=False)
    stray = [k for k in [*missing, *unexpected] if not k.startswith(changed_prefix)]
    if stray:
        raise TrainingError(f"the config change altered more than {changed_prefix}*: {stray[:5]!r}")
    fresh.set_stage(policy.stage)
    return fresh


def with_fields(policy_config: PolicyConfig, section: str, **values) -> PolicyConfig:
    """`policy_config` with `values` set in its `section` (e.g. "trunk") dataclass."""
    return policy_config.replace(**{section: dataclasses.replace(getattr(policy_config, section), **values)})


def switch(name: str, *, section: str, field: str, asked: Callable[["TrainConfig"], bool],
           changed_prefix: str, fit: Callable[[VLA3DPolicy, "EpisodeDataset"], None] | None = None) -> Extension:
    """The addition `policy_config.<section>.<field> = True`, on when `asked(config)`. A loaded policy
    without it is `rebuilt` (only the tensors under `changed_prefix` start fresh); `fit`, if given,
    then fits the new part on the data, on a loaded policy and on a fresh one alike."""

    def configure(policy_config, config):
        return with_fields(policy_config, section, **{field: True}) if asked(config) else policy_config

    def has_it(policy) -> bool:
        return getattr(getattr(policy.config, section), field)

    def wanted(config, policy) -> bool:
        return asked(config) and not has_it(policy)

    def apply(policy, dataset, config, log):
        policy = rebuilt(policy, configure(policy.config, config), changed_prefix)
        fit_fresh(policy, dataset)
        return policy

    def fit_fresh(policy, dataset) -> None:
        if fit is not None and has_it(policy):
            fit(policy, dataset)

    return Extension(name, wanted=wanted, apply=apply, configure=configure, fit_fresh=fit_fresh)


def setting(name: str, *, section: str, field: str, value_of: Callable[["TrainConfig"], object]) -> Extension:
    """The change `policy_config.<section>.<field> = value_of(config)` where that is not None: a
    config change without new parameters (a loaded policy only gets the new config)."""

    def configure(policy_config, config):
        value = value_of(config)
        return policy_config if value is None else with_fields(policy_config, section, **{field: value})

    def wanted(config, policy) -> bool:
        return value_of(config) is not None

    def apply(policy, dataset, config, log):
        policy.config = configure(policy.config, config)
        return policy

    return Extension(name, wanted=wanted, apply=apply, configure=configure)
