"""PolicyConfig: presets, validation errors quoting the bad value, strict (de)serialisation."""
from __future__ import annotations

import dataclasses
import json

import pytest

from vla3d_ros.model.config import (ActionHeadConfig, CompletionConfig, ConfigError, FusionConfig, PolicyConfig,
                                    VisionConfig, preset)


@pytest.mark.parametrize("name", ["tiny", "cpu", "gpu"])
def test_presets_round_trip_through_json(name):
    config = preset(name)
    assert PolicyConfig.from_json(config.to_json()) == config
    assert PolicyConfig.from_dict(json.loads(config.to_json())).to_dict() == config.to_dict()


def test_presets_grow_in_width_and_all_3d_switches_default_on():
    widths = [preset(name).dim for name in ("tiny", "cpu", "gpu")]
    assert widths == sorted(widths) and len(set(widths)) == 3
    config = preset("cpu")
    assert config.fusion.enabled and config.instances.enabled and config.completion.enabled
    assert config.aggregation.ee_relative_pe and config.aggregation.routing
    assert config.grid_hw == (8, 8)


@pytest.mark.parametrize("change, quoted", [
    ({"dim": 0}, "0"),
    ({"dim": 51}, "51"),                       # not divisible by the heads
    ({"patch_size": 12}, "12"),
    ({"image_size": (100, 128)}, "(100, 128)"),
    ({"horizon": -3}, "-3"),
    ({"action_names": ("dx", "dx")}, "('dx', 'dx')"),
    ({"workspace_low": (0.0, 0.0, 1.0)}, "(0.0, 0.0, 1.0)"),
    ({"vision": VisionConfig(backbone="resnet")}, "'resnet'"),
    ({"action_head": ActionHeadConfig(kind="diffusion")}, "'diffusion'"),
    ({"completion": CompletionConfig(mask_ratio=1.5)}, "1.5"),
    ({"completion": CompletionConfig(ema_momentum_start=0.999, ema_momentum_end=0.99)}, "0.99"),
])
def test_invalid_values_raise_with_the_value_quoted(change, quoted):
    with pytest.raises(ConfigError) as error:
        preset("tiny").replace(**change)
    assert quoted in str(error.value)


def test_switch_dependencies_are_enforced():
    base = preset("tiny").with_3d(False)
    with pytest.raises(ConfigError, match="fusion.enabled=True needs instances"):
        base.replace(fusion=FusionConfig(enabled=True))
    only_instances = base.replace(instances=dataclasses.replace(base.instances, enabled=True))
    assert only_instances.instances.enabled and not only_instances.fusion.enabled   # "w/o Spatial Fusion"
    with pytest.raises(ConfigError, match="completion.enabled=True needs"):
        only_instances.replace(completion=dataclasses.replace(base.completion, enabled=True))
    with pytest.raises(ConfigError, match="routing=True needs completion"):
        only_instances.replace(aggregation=dataclasses.replace(base.aggregation, routing=True))


def test_2d_baseline_has_every_3d_switch_off():
    config = preset("cpu").with_3d(False)
    assert not (config.fusion.enabled or config.instances.enabled or config.completion.enabled
                or config.aggregation.ee_relative_pe or config.aggregation.routing)
    assert config.with_3d(True) == preset("cpu")


def test_unknown_keys_are_rejected_at_every_level():
    data = preset("tiny").to_dict()
    with pytest.raises(ConfigError, match="'hidden_dim'"):
        PolicyConfig.from_dict({**data, "hidden_dim": 3})
    data["fusion"]["layer"] = 2                # typo of "layers"
    with pytest.raises(ConfigError, match=r"\['layer'\] in fusion"):
        PolicyConfig.from_dict(data)
    with pytest.raises(ConfigError, match="not valid JSON"):
        PolicyConfig.from_json("{dim: 3")


def test_unknown_preset_is_named():
    with pytest.raises(ConfigError, match="'huge'"):
        preset("huge")
