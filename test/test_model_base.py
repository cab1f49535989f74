"""Base VLA parts (METHOD §5): backbones, trunk, action heads and their interface."""
from __future__ import annotations

import sys

import pytest
import torch

from model_batches import tiny
from vla3d_ros.model.base import (ContextTrunk, ConvBackbone, FlowMatchingActionHead, L1ActionHead, TimmBackbone,
                                  ViTBackbone, VisionEncoder, sinusoidal_embedding)
from vla3d_ros.model.config import VisionConfig
from vla3d_ros.model.losses import action_l1


@pytest.mark.parametrize("backbone", ["cnn", "vit"])
def test_backbones_map_images_to_the_patch_grid(backbone):
    config = tiny(vision=VisionConfig(backbone=backbone, vit_layers=1, vit_heads=2))
    encoder = VisionEncoder(config)
    rgb = torch.randint(0, 256, (2, config.num_views, 3, *config.image_size), dtype=torch.uint8)
    features = encoder(rgb, torch.float32)
    assert features.shape == (2, config.num_views, config.dim, *config.grid_hw)
    # uint8 and [0, 1] floats are the same image
    assert torch.allclose(encoder(rgb.float() / 255.0, torch.float32), features, atol=1e-5)
    # views are encoded independently by one shared backbone
    swapped = encoder(rgb.flip(1), torch.float32)
    assert torch.allclose(swapped.flip(1), features, atol=1e-5)


def test_conv_backbone_stride_equals_patch_size():
    for patch in (4, 8, 16):
        out = ConvBackbone(32, patch)(torch.zeros(1, 3, 64, 32))
        assert out.shape == (1, 32, 64 // patch, 32 // patch)


def test_vision_encoder_rejects_wrong_image_size_with_the_shape():
    encoder = VisionEncoder(tiny())
    with pytest.raises(ValueError, match=r"\(1, 2, 3, 16, 16\)"):
        encoder(torch.zeros(1, 2, 3, 16, 16), torch.float32)
    with pytest.raises(ValueError, match="patch grid"):
        ViTBackbone(16, 8, (32, 32), 1, 2)(torch.zeros(1, 3, 64, 64))


def test_timm_hook_explains_a_missing_timm(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)          # import timm -> ImportError
    with pytest.raises(ImportError, match="needs the timm package"):
        TimmBackbone("resnet18", 32, (4, 4), pretrained=False)


def test_trunk_orders_instruction_then_views_and_checks_the_view_count():
    config = tiny()
    trunk = ContextTrunk(config)
    features = torch.randn(2, config.num_views, config.dim, *config.grid_hw)
    tokens, hidden = trunk(features, torch.randn(2, config.instruction_dim))
    n = config.num_views * config.grid_hw[0] * config.grid_hw[1]
    assert tokens.shape == (2, 1 + n, config.dim) and len(hidden) == config.trunk.layers
    assert hidden[0].shape == (2, n, config.dim)
    with pytest.raises(ValueError, match="built for 2 views, got 3"):
        trunk(torch.randn(2, 3, config.dim, *config.grid_hw), torch.randn(2, config.instruction_dim))


def test_l1_loss_ignores_padded_steps():
    prediction, target = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    is_pad = torch.tensor([[False, False, True, True], [False] * 4])
    changed = target.clone()
    changed[0, 2:] += 100.0
    assert float(action_l1(prediction, changed, is_pad)) == float(action_l1(prediction, target, is_pad))
    assert float(action_l1(target, target, is_pad)) == 0.0


@pytest.mark.parametrize("head_cls", [L1ActionHead, FlowMatchingActionHead])
def test_action_heads_share_the_interface_and_mask_the_context(head_cls):
    torch.manual_seed(0)
    args = (16, 1, 2, 5, 7) + ((3,) if head_cls is FlowMatchingActionHead else ())
    head = head_cls(*args)
    context = torch.randn(2, 6, 16)
    pad = torch.tensor([[False] * 4 + [True] * 2] * 2)
    chunk = head.predict(context, pad, torch.Generator().manual_seed(1))
    assert chunk.shape == (2, 5, 7) and bool(torch.isfinite(chunk).all())
    # padded context tokens are invisible to the action expert
    scrambled = context.clone()
    scrambled[:, 4:] = torch.randn(2, 2, 16) * 10
    assert torch.allclose(head.predict(scrambled, pad, torch.Generator().manual_seed(1)), chunk, atol=1e-5)
    loss = head.loss(context, pad, torch.randn(2, 5, 7), torch.zeros(2, 5, dtype=torch.bool))
    loss.backward()
    assert loss.ndim == 0 and all(p.grad is not None for p in head.parameters())


def test_flow_matching_fits_a_fixed_chunk_through_euler_integration():
    """Training the velocity field makes the integrated samples land on the data."""
    head = FlowMatchingActionHead(16, 1, 2, 4, 3, steps=8)
    context, pad = torch.randn(1, 3, 16), torch.zeros(1, 3, dtype=torch.bool)
    target = torch.randn(1, 4, 3)
    with torch.no_grad():
        before = float((head.predict(context, pad, torch.Generator().manual_seed(0)) - target).abs().mean())
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(150):
        loss = head.loss(context.expand(16, -1, -1), pad.expand(16, -1), target.expand(16, -1, -1),
                         torch.zeros(16, 4, dtype=torch.bool))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        after = float((head.predict(context, pad, torch.Generator().manual_seed(0)) - target).abs().mean())
    assert after < 0.3 * before, (before, after)


def test_time_embedding_separates_times():
    embedding = sinusoidal_embedding(torch.tensor([0.0, 0.5, 1.0]), 16)
    assert embedding.shape == (3, 16)
    assert torch.cdist(embedding, embedding).fill_diagonal_(1.0).min() > 0.5
