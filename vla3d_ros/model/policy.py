"""The 3D-aware policy: base VLA (METHOD §5) + the four 3D components (§1-§4) + Spatial Forcing (§7).

Shapes: B batch, V views, h x w patch grid, N = V*h*w, C width, K selected instances,
P completion points, H horizon, A action dims, S state dims.

`VLA3DPolicy.forward(batch)` returns a dict of losses for the active training stage
(METHOD §6, 3DVLA App. A.2):
- stage 1: vision backbone + trunk + fusion + instance module + action expert are trained;
  losses = action + instance (§2.10) + alpha * align (§7, when enabled). The stage-2 modules
  (completion predictor, aggregation) are not run, so the context holds raw instance tokens.
- stage 2: the stage-1 modules are frozen (`set_stage(2)`); the predictor, the aggregation and
  the action expert (with its proprio encoder) are trained; losses = action + predictor (§3.6).
Inference always runs the modules of the stage the checkpoint was trained to.

The 3D modules plug in only by appending tokens to the action expert's context (§4.4):
context = [instruction + N visual tokens (trunk), proprio, K instance tokens, P completion tokens].
With every 3D switch off this class is the 2D baseline.

`NumpyPolicy.infer(obs)` is the numpy-in / numpy-out entry point used by evaluation and the
ROS inference node (openpi style); action-chunk execution lives elsewhere (runtime/).
"""
from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vla3d_ros import types
from vla3d_ros.model.aggregation import GeometryAggregation
from vla3d_ros.model.base import (ContextTrunk, InstructionEncoder, ProprioEncoder, VisionEncoder,
                                  build_action_head)
from vla3d_ros.model.completion import CompletionPredictor, ema_momentum, propose_completion_points
from vla3d_ros.model.config import PolicyConfig
from vla3d_ros.model.fusion import MultiViewSpatialFusion
from vla3d_ros.model.geometry_ops import patch_points
from vla3d_ros.model import matching
from vla3d_ros.model.instances import InstanceModule
from vla3d_ros.model.losses import predictor_loss
from vla3d_ros.model.normalization import NormalizationStats, Normalizer
from vla3d_ros.model.precision import autocast, resolve_precision
from vla3d_ros.model.reasoning_anchor import GroundingInputs, anchor_fact_loss, grounding_loss, grounding_target
from vla3d_ros.model.spatial_forcing import DepthGeometryTeacher, SpatialForcingAligner

STAGES = (1, 2)
# Parameter groups as `inspect` reports them; "spatial_forcing" is training-only.
COMPONENTS = ("base", "fusion", "instances", "completion", "aggregation", "spatial_forcing")
_TARGET_KEYS = (types.TARGET_BOXES, types.TARGET_BOX_VALID, types.TARGET_MASKS, types.TARGET_CENTROIDS,
                types.TARGET_VALID)


@dataclass
class PolicyOutput:
    """What one inference step produced (tensors, batch-first)."""

    actions: Tensor                       # (B, H, A) unnormalised
    instance_ids: Tensor | None = None    # (B, K) probe index
    instance_scores: Tensor | None = None  # (B, K) sigma(objectness)
    instance_refs: Tensor | None = None   # (B, K, 3)
    instance_valid: Tensor | None = None  # (B, K) bool
    completion_points: Tensor | None = None    # (B, P, 3)
    completion_valid: Tensor | None = None     # (B, P) bool
    completion_instance: Tensor | None = None  # (B, P) probe index, -1 when not proposed per instance
    token_points: Tensor | None = None    # (B, N, 3) fusion token points
    token_valid: Tensor | None = None     # (B, N) bool, measured depth


class _Timer:
    """Per-module wall-clock milliseconds (synchronising CUDA so the numbers are real)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.ms: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str, reference: Tensor):
        if not self.enabled:
            yield
            return
        synchronise = torch.cuda.synchronize if reference.is_cuda else (lambda: None)
        synchronise()
        start = time.perf_counter()
        yield
        synchronise()
        self.ms[name] = self.ms.get(name, 0.0) + 1000.0 * (time.perf_counter() - start)


class VLA3DPolicy(nn.Module):
    def __init__(self, config: PolicyConfig, stats: NormalizationStats | None = None) -> None:
        super().__init__()
        self.config = config
        stats = stats or NormalizationStats.identity(config.state_dim, config.action_dim)
        if len(stats.state_mean) != config.state_dim or len(stats.action_mean) != config.action_dim:
            raise ValueError(f"normalisation stats are for S={len(stats.state_mean)}, A={len(stats.action_mean)}; "
                             f"config has S={config.state_dim}, A={config.action_dim}")
        self.normalizer = Normalizer(stats)
        dim = config.dim
        # base policy
        self.vision = VisionEncoder(config)
        self.trunk = ContextTrunk(config)
        self.proprio = ProprioEncoder(config.state_dim, dim)
        self.action_head = build_action_head(config)
        # 3D components
        low, high = config.workspace_low, config.workspace_high
        self.fusion = MultiViewSpatialFusion(
            dim, config.fusion.layers, config.fusion.num_heads, low, high, config.fusion.depth_bins,
            rope_scale=config.fusion.rope_scale, rope_base=config.fusion.rope_base,
        ) if config.fusion.enabled else None
        inst = config.instances
        self.instances = InstanceModule(
            dim, inst.num_probes, inst.layers, inst.num_heads, inst.num_levels, inst.num_points, inst.max_step,
            low, high, inst.max_instances, patch_size=config.patch_size,
            rope_scale=config.fusion.rope_scale, rope_base=config.fusion.rope_base,
        ) if inst.enabled else None
        comp = config.completion
        self.completion = CompletionPredictor(
            dim, comp.layers, comp.num_heads, config.num_views, self.fusion,
            fourier_frequencies=comp.fourier_frequencies, mask_ratio=comp.mask_ratio, mask_block=comp.mask_block,
            rope_scale=config.fusion.rope_scale, rope_base=config.fusion.rope_base,
        ) if comp.enabled else None
        agg = config.aggregation
        self.aggregation = GeometryAggregation(
            dim, ee_relative_pe=agg.ee_relative_pe, routing=agg.routing,
            fourier_frequencies=agg.fourier_frequencies, knn=agg.knn, num_heads=agg.num_heads,
            distance_beta_init=agg.distance_beta_init, gate_bias=agg.gate_bias,
        ) if (agg.ee_relative_pe or agg.routing) else None
        sf = config.spatial_forcing
        self.spatial_teacher = DepthGeometryTeacher(low, high, sf.fourier_frequencies) if sf.weight > 0 else None
        self.spatial_aligner = (SpatialForcingAligner(dim, self.spatial_teacher.feature_dim)
                                if self.spatial_teacher is not None else None)
        self.stage = 2

    # ---- stages ------------------------------------------------------------------------------
    def component_modules(self) -> dict[str, list[nn.Module]]:
        """Modules of each reported component (absent components have none)."""
        present = lambda *modules: [m for m in modules if m is not None]  # noqa: E731
        return {
            "base": present(self.vision, self.trunk, self.proprio, self.action_head),
            "fusion": present(self.fusion),
            "instances": present(self.instances),
            "completion": present(self.completion),
            "aggregation": present(self.aggregation),
            "spatial_forcing": present(self.spatial_aligner),
        }

    def parameter_counts(self) -> dict[str, int]:
        """Trainable-architecture parameters per component (the EMA teacher copy excluded)."""
        counts = {}
        for name, modules in self.component_modules().items():
            params = [p for m in modules for p in
                      (m.predictor_parameters() if isinstance(m, CompletionPredictor) else m.parameters())]
            counts[name] = sum(p.numel() for p in params)
        return counts

    def _stage_one_modules(self) -> list[nn.Module]:
        return [m for m in (self.vision, self.trunk, self.fusion, self.instances, self.spatial_aligner) if m is not None]

    def _stage_two_modules(self) -> list[nn.Module]:
        return [m for m in (self.completion, self.aggregation) if m is not None]

    def set_stage(self, stage: int) -> None:
        """Select the stage's active losses and freeze what it does not train (METHOD §6)."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.stage = stage
        for module in self._stage_one_modules():
            module.requires_grad_(stage == 1)
        for module in self._stage_two_modules():
            module.requires_grad_(stage == 2)
        for module in (self.proprio, self.action_head):
            module.requires_grad_(True)
        if self.completion is not None:
            self.completion.teacher.requires_grad_(False)

    def freeze_stage_one(self) -> None:
        """Freeze the stage-1 parameters (what `set_stage(2)` does to them)."""
        for module in self._stage_one_modules():
            module.requires_grad_(False)

    def start_stage(self, stage: int) -> None:
        """Begin training a stage: `set_stage`, and for stage 2 copy the fusion into the EMA teacher."""
        self.set_stage(stage)
        if stage == 2 and self.completion is not None:
            self.completion.reset_teacher(self.fusion)

    def update_teacher(self, step: int, total_steps: int) -> float:
        """EMA step of the completion teacher after an optimiser step; returns the momentum used."""
        if self.completion is None:
            return 1.0
        comp = self.config.completion
        momentum = ema_momentum(step, total_steps, comp.ema_momentum_start, comp.ema_momentum_end)
        self.completion.update_teacher(self.fusion, momentum)
        return momentum

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # ---- the model ---------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.trunk.patch_position.dtype

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Training losses of the active stage; "loss" is the weighted total to minimise."""
        for key in (types.ACTION, types.ACTION_IS_PAD):
            if key not in batch:
                raise KeyError(f"training batch lacks {key!r}")
        losses: dict[str, Tensor] = {}
        geometry = self._patch_geometry(batch)
        context, context_pad, _ = self._context(batch, geometry=geometry, losses=losses, generator=generator)
        target = self.normalizer.normalize_action(batch[types.ACTION].to(self.dtype))
        instruction, grounding_inputs = self._action_instruction(batch), self.grounding_inputs(batch, geometry)
        losses["action"] = self.action_head.loss(context, context_pad, target, batch[types.ACTION_IS_PAD].bool(),
                                                 instruction=instruction, grounding_inputs=grounding_inputs)
        total = losses["action"]
        anchor = self.action_head.reasoning_anchor
        if anchor is not None and types.INSTRUCTED_OBJECT_ROW in batch:
            anchored = anchor(instruction, context, context_pad, grounding_inputs)
            object_row = batch[types.INSTRUCTED_OBJECT_ROW].long()
            losses["anchor"] = anchor_fact_loss(anchored.fact, batch[types.TARGET_CENTROIDS],
                                                batch[types.TARGET_VALID].bool(), object_row)
            total = total + self.config.action_head.anchor_weight * losses["anchor"]
            if anchored.grounding is not None:
                target, known = grounding_target(batch[types.TARGET_MASKS].bool(), object_row, self.config.grid_hw)
                losses["grounding"] = grounding_loss(anchored.grounding, target, known)
                total = total + self.config.action_head.grounding_weight * losses["grounding"]
        if "instance" in losses:
            total = total + self.config.instances.loss_scale * losses["instance"]
        if "predictor" in losses:
            total = total + losses["predictor"]
        if "align" in losses:
            total = total + self.config.spatial_forcing.weight * losses["align"]
        losses["loss"] = total
        return losses

    def predict(self, batch: dict[str, Tensor], *, timings: dict[str, float] | None = None,
                generator: torch.Generator | None = None) -> PolicyOutput:
        """Unnormalised action chunk and the 3D beliefs for a batch without targets."""
        timer = _Timer(timings is not None)
        # the fusion's input, which the grounding reuses (the 2D baseline's: the grounding's alone)
        with timer("fusion" if self.fusion is not None else "action_head", batch[types.RGB]):
            geometry = self._patch_geometry(batch)
        context, context_pad, output = self._context(batch, geometry=geometry, timer=timer)
        with timer("action_head", context):
            actions = self.action_head.predict(context, context_pad, generator,
                                               instruction=self._action_instruction(batch),
                                               grounding_inputs=self.grounding_inputs(batch, geometry))
        # back to the parameters' dtype first: under bf16 autocast the head's output is bf16, and the
        # unnormalised action (mean + std * x) keeps full precision
        output.actions = self.normalizer.unnormalize_action(actions.to(self.dtype))
        if timings is not None:
            timings.update(timer.ms)
        return output

    def _action_instruction(self, batch: dict[str, Tensor]) -> Tensor | None:
        """(B,E) instruction embedding for the action head's direct path (whitened like the
        trunk's input when the trunk whitens), or None when the head has no such path."""
        if self.action_head.instruction_query is None:
            return None
        instruction = batch[types.INSTRUCTION_EMBEDDING].to(self.dtype)
        whitening = self.trunk.instruction_whitening
        return instruction if whitening is None else whitening(instruction)

    def _patch_geometry(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor] | None:
        """`patch_points` of the batch's depth ((B,V,h,w,3), (B,V,h,w)), None without depth or a
        reader: computed once per forward, shared by the fusion and the anchor's grounding."""
        depth = batch.get(types.DEPTH)
        anchor = self.action_head.reasoning_anchor
        grounding = anchor is not None and anchor.grounding is not None
        if depth is None or not (self.fusion is not None or grounding):
            return None
        dtype = self.dtype
        return patch_points(depth.to(dtype), batch[types.INTRINSICS].to(dtype), batch[types.T_BASE_CAM].to(dtype),
                            self.config.patch_size)

    def grounding_inputs(self, batch: dict[str, Tensor],
                         geometry: tuple[Tensor, Tensor] | None = None) -> GroundingInputs | None:
        """What the anchor's grounding reads besides the context (per visual token: patch colours,
        base-frame point and its validity; the EE position), None without grounding.
        `geometry`: the batch's `_patch_geometry` when the caller has it already."""
        anchor = self.action_head.reasoning_anchor
        if anchor is None or anchor.grounding is None:
            return None
        dtype, rgb = self.dtype, batch[types.RGB]
        geometry = geometry or self._patch_geometry(batch)
        if geometry is None:
            points = torch.zeros(rgb.shape[0], anchor.visual_tokens, 3, dtype=dtype, device=rgb.device)
            point_valid = torch.zeros(rgb.shape[0], anchor.visual_tokens, dtype=torch.bool, device=rgb.device)
        else:
            points, point_valid = geometry[0].flatten(1, 3), geometry[1].flatten(1, 3)  # (B, N, 3), (B, N)
        return GroundingInputs(self.vision.token_colours(rgb, dtype), points, point_valid,
                               batch[types.EE_POSITION].to(dtype))

    def _context(self, batch: dict[str, Tensor], *, geometry: tuple[Tensor, Tensor] | None = None,
                 losses: dict[str, Tensor] | None = None, timer: _Timer | None = None,
                 generator: torch.Generator | None = None):
        """Context tokens (B, M, C), padding (B, M) and a PolicyOutput holding the 3D beliefs;
        `geometry` is the batch's `_patch_geometry` when the caller has it already."""
        config, dtype = self.config, self.dtype
        geometry = geometry or self._patch_geometry(batch)
        timer = timer or _Timer(False)
        training = losses is not None
        rgb = batch[types.RGB]
        with timer("vision", rgb), _without_autograd_if_frozen(self.vision):
            features = self.vision(rgb, dtype)                                       # (B, V, C, h, w)
        batch_size, views = features.shape[:2]
        with timer("trunk", features):
            with _without_autograd_if_frozen(self.vision, self.trunk):
                tokens, hidden = self.trunk(features, batch[types.INSTRUCTION_EMBEDDING].to(dtype))
            state = self.normalizer.normalize_state(batch[types.STATE].to(dtype))
            parts = [tokens, self.proprio(state)]
        pads = [torch.zeros(batch_size, tokens.shape[1] + 1, dtype=torch.bool, device=tokens.device)]
        output = PolicyOutput(actions=torch.empty(0))
        if training and self.stage == 1 and self.spatial_aligner is not None:
            teacher, valid = self.spatial_teacher(batch, config.patch_size)
            losses["align"] = self.spatial_aligner(hidden[config.spatial_forcing.layer - 1], teacher, valid)
        if self.instances is not None:
            instance_tokens, instance_pad, completion = self._three_d(batch, features, geometry, output, losses,
                                                                       timer, generator)
            parts.append(instance_tokens)
            pads.append(instance_pad)
            if completion is not None:
                parts.append(completion[0])
                pads.append(completion[1])
        return torch.cat(parts, 1), torch.cat(pads, 1), output

    def _three_d(self, batch, features, geometry, output: PolicyOutput, losses, timer: _Timer, generator):
        """Fusion -> instances -> (stage 2) completion -> aggregation; fills `output`."""
        config, dtype = self.config, self.dtype
        batch_size, views = features.shape[:2]
        grid_hw, image_hw = config.grid_hw, config.image_size
        K = batch[types.INTRINSICS].to(dtype)
        T = batch[types.T_BASE_CAM].to(dtype)
        fusion_kwargs = {"intrinsics": K, "T_base_cam": T, "image_hw": image_hw}
        stage_two = self.stage == 2
        with timer("fusion", features), _without_autograd_if_frozen(self.vision, self.fusion):
            if self.fusion is not None:
                if geometry is None:
                    points = features.new_zeros(batch_size, views, *grid_hw, 3)
                    point_valid = torch.zeros(batch_size, views, *grid_hw, dtype=torch.bool, device=features.device)
                else:
                    points, point_valid = geometry
                fused = self.fusion(features, points, point_valid, **fusion_kwargs)
                memory = fused.memory                                                  # (B, N, C)
                output.token_points, output.token_valid = fused.points, fused.point_valid
            else:
                memory = features.permute(0, 1, 3, 4, 2).reshape(batch_size, -1, config.dim)
        with timer("instances", memory), _without_autograd_if_frozen(self.vision, self.fusion, self.instances):
            # only the stage-1 instance loss reads the masks and the per-layer (aux) heads
            instance_loss = losses is not None and not stage_two
            raw = self.instances(memory, grid_hw, views, K, T, image_hw, with_masks=instance_loss,
                                 with_aux=instance_loss)
            selected = self.instances.select(raw, config.instances.score_threshold)
        output.instance_ids, output.instance_refs = selected.indices, selected.refs
        output.instance_scores, output.instance_valid = 1.0 - selected.uncertainty, selected.valid
        if instance_loss:
            losses.update(self._instance_losses(raw, batch))
        instance_tokens = selected.tokens
        completion = None
        if stage_two and self.completion is not None:
            with timer("completion", memory):
                if types.COMPLETION_POINTS in batch:
                    comp_points = batch[types.COMPLETION_POINTS].to(dtype)
                    comp_valid = batch.get(types.COMPLETION_VALID, torch.ones(comp_points.shape[:2], dtype=torch.bool,
                                                                               device=comp_points.device)).bool()
                    comp_instance = torch.full(comp_points.shape[:2], -1, dtype=torch.long, device=comp_points.device)
                else:
                    comp = config.completion
                    comp_points, comp_valid, comp_instance = propose_completion_points(
                        selected.refs.detach(), 1.0 - selected.uncertainty.detach(), selected.valid,
                        output.token_points, output.token_valid, comp.max_instances, comp.points_per_instance,
                        comp.proposal_radius)
                comp_tokens = self.completion.complete(memory, output.token_points, grid_hw, views, comp_points,
                                                       comp_valid)
                output.completion_points, output.completion_valid = comp_points, comp_valid
                output.completion_instance = comp_instance
                if losses is not None:
                    prediction, target = self.completion.masked_prediction(
                        self.fusion, features, points, point_valid, generator,
                        unmasked_memory=memory, **fusion_kwargs)
                    comp = config.completion
                    terms = predictor_loss(prediction, target, weight_cos=comp.weight_cos, weight_var=comp.weight_var,
                                           gamma=comp.var_gamma)
                    losses.update({f"predictor/{k}": v for k, v in terms.items() if k != "total"})
                    losses["predictor"] = terms["total"]
            completion = [comp_tokens, ~comp_valid]
        if stage_two and self.aggregation is not None:
            with timer("aggregation", memory):
                ee = batch[types.EE_POSITION].to(dtype)
                instance_tokens, comp_tokens = self.aggregation(
                    instance_tokens, selected.refs, selected.uncertainty, ee,
                    completion[0] if completion else None, output.completion_points, output.completion_valid)
                if completion is not None:
                    completion[0] = comp_tokens
        return instance_tokens, ~selected.valid, completion

    def _instance_losses(self, raw, batch) -> dict[str, Tensor]:
        missing = [key for key in _TARGET_KEYS if key not in batch]
        if missing:
            raise KeyError(f"stage-1 training with instances needs pseudo-label keys {missing!r}")
        targets = {key: batch[key] for key in _TARGET_KEYS}
        weights = matching.InstanceLossWeights(**self.config.instances.loss_weights())
        matches = matching.hungarian_match(raw, targets, weights)
        terms = matching.instance_loss(raw, targets, matches, weights)   # already weighted
        out = {f"instance/{k}": v for k, v in terms.items()}
        out["instance"] = sum(terms.values())
        return out


class NumpyPolicy:
    """numpy in, numpy out: `infer(Observation) -> dict` (openpi style).

    The instruction is embedded once per distinct text and cached (`InstructionEncoder`).
    Images of another size than the policy's are resized (intrinsics scaled to match); an
    RGB-only observation (depth None) uses the fusion's depth-bin fallback.
    `precision` ("auto", "fp32", "bf16"; `model.precision`) is the forward's autocast; the
    preprocessing and the returned arrays are float32 whatever it is.
    """

    def __init__(self, policy: VLA3DPolicy, *, instruction_encoder: InstructionEncoder | None = None,
                 seed: int = 0, precision: str = "fp32") -> None:
        self.policy = policy.eval()
        self.config = policy.config
        self.device = next(policy.parameters()).device
        self.precision = resolve_precision(precision, self.device)
        self.instruction_encoder = instruction_encoder or InstructionEncoder(device=self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def batch_from_observation(self, obs: types.Observation) -> dict[str, Tensor]:
        config = self.config
        if obs.num_views != config.num_views:
            raise ValueError(f"policy expects {config.num_views} cameras, observation has {obs.camera_names!r}")
        state = obs.state
        if state.shape != (config.state_dim,):
            raise ValueError(f"policy expects state of {config.state_dim} dims, observation gives {state.shape[0]}")
        if not np.all(np.isfinite(state)):
            raise ValueError(f"observation state is not finite: {state.tolist()!r}")
        device = self.device
        views, (height, width), (target_h, target_w) = obs.num_views, obs.rgb.shape[1:3], config.image_size
        rgb = torch.from_numpy(np.ascontiguousarray(obs.rgb)).permute(0, 3, 1, 2)   # (V, 3, H, W) uint8 view
        depth = None if obs.depth is None else torch.from_numpy(np.ascontiguousarray(obs.depth, dtype=np.float32))
        K = torch.as_tensor(obs.intrinsics, dtype=torch.float64).clone()
        if (height, width) != (target_h, target_w):
            # Resized where the arrays live (CPU), before the transfer, so only deploy-size pixels move.
            # uint8 in, uint8 out: torch's uint8 antialias kernel is ~10-25x faster than a float round
            # trip and at most 1 grey level from it.
            rgb = F.interpolate(rgb, size=(target_h, target_w), mode="bilinear", antialias=True, align_corners=False)
            if depth is not None:
                # "nearest-exact": each output pixel is the input pixel under its centre, the pixel the
                # rescaled K below maps it to ("nearest" takes the one at its top-left corner, 2 px
                # off at 640 -> 128); one measured depth per pixel, so NaN is never averaged in.
                depth = F.interpolate(depth[:, None], size=(target_h, target_w), mode="nearest-exact")[:, 0]
            scale_x, scale_y = target_w / width, target_h / height
            # pixel centres at integers: u' = (u + 0.5) * s - 0.5
            K[:, 0, :] *= scale_x
            K[:, 1, :] *= scale_y
            K[:, 0, 2] += 0.5 * scale_x - 0.5
            K[:, 1, 2] += 0.5 * scale_y - 0.5
        if depth is None:
            depth = torch.full((views, target_h, target_w), float("nan"), device=device)
        embedding = self.instruction_encoder.embed(obs.instruction)
        return {
            types.RGB: rgb.to(device)[None],
            types.DEPTH: depth.to(device)[None],
            types.INTRINSICS: K.to(device=device, dtype=torch.float32)[None],
            types.T_BASE_CAM: torch.as_tensor(obs.T_base_cam, dtype=torch.float32, device=device)[None],
            types.STATE: torch.as_tensor(state, device=device)[None],
            types.EE_POSITION: torch.as_tensor(obs.ee_pose[:3], dtype=torch.float32, device=device)[None],
            types.INSTRUCTION_EMBEDDING: torch.as_tensor(embedding, device=device)[None],
        }

    def infer(self, obs: types.Observation) -> dict:
        """-> {"actions" (H, A) float32 unnormalised, "instances": Instances,
        "completed_points" (P, 3), "timing_ms": {module: ms, ..., "total": ms}}."""
        start = time.perf_counter()
        timings: dict[str, float] = {}
        with torch.inference_mode():
            prep_start = time.perf_counter()
            batch = self.batch_from_observation(obs)
            timings["preprocess"] = 1000.0 * (time.perf_counter() - prep_start)
            with autocast(self.precision, self.device):
                out = self.policy.predict(batch, timings=timings, generator=self.generator)
        instances = _instances_to_numpy(out)
        timings["total"] = 1000.0 * (time.perf_counter() - start)
        return {"actions": out.actions[0].float().cpu().numpy(), "instances": instances,
                "completed_points": instances.completed_points, "timing_ms": timings}


def _without_autograd_if_frozen(*modules: nn.Module | None):
    """`torch.no_grad()` when no parameter of `modules` (a chain from the raw inputs) is trained.

    Stage 2 freezes the stage-1 chain (vision -> trunk / fusion -> instances): autograd would
    record nothing there anyway; this makes it explicit and skips its bookkeeping.
    """
    trained = any(p.requires_grad for m in modules if m is not None for p in m.parameters())
    return nullcontext() if trained else torch.no_grad()


def _instances_to_numpy(out: PolicyOutput) -> types.Instances:
    """Valid rows of batch element 0 as `types.Instances` (extents from the completed geometry)."""
    if out.instance_ids is None:
        return types.Instances(ids=np.zeros(0, np.int64), scores=np.zeros(0, np.float32),
                               centroids=np.zeros((0, 3), np.float32))
    valid = out.instance_valid[0].cpu().numpy()
    ids = out.instance_ids[0].cpu().numpy()[valid].astype(np.int64)
    centroids = out.instance_refs[0].float().cpu().numpy()[valid]
    scores = out.instance_scores[0].float().cpu().numpy()[valid]
    extents = np.zeros_like(centroids)
    points = np.zeros((0, 3), np.float32)
    owner = np.zeros(0, np.int64)
    if out.completion_points is not None:
        keep = out.completion_valid[0].cpu().numpy()
        points = out.completion_points[0].float().cpu().numpy()[keep]
        owner = out.completion_instance[0].cpu().numpy()[keep].astype(np.int64)
        for row, probe in enumerate(ids):
            mine = points[owner == probe]
            if len(mine):
                # the instance spans its centroid and its completed points, symmetric about the centroid
                extents[row] = 2.0 * np.abs(mine - centroids[row]).max(axis=0)
    return types.Instances(ids=ids, scores=scores.astype(np.float32), centroids=centroids.astype(np.float32),
                           extents=extents.astype(np.float32), completed_points=points.astype(np.float32),
                           completed_instance=owner)
