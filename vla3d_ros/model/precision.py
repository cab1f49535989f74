"""Numeric precision of the policy's forward pass, chosen by the hardware at run time.

`auto` runs the forward (and so the backward) under bf16 autocast where the device has native
bf16 arithmetic (CUDA devices that report it; CPUs whose oneDNN has bf16 kernels, i.e.
avx512_bf16 / AMX), and in fp32 elsewhere: on a CPU without bf16 units bf16 is emulated and
several times slower than fp32, so it is never assumed. Parameters, optimiser state and
checkpoints stay fp32 (autocast casts per op); camera geometry, RoPE angles and the losses keep
fp32 inside autocast (`geometry_ops.full_precision_geometry`, `fusion`, `matching`).
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("auto", "fp32", "bf16")


def has_native_bf16(device: torch.device | str) -> bool:
    """True iff `device` computes bf16 natively (checked on the running machine, never assumed)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """"auto" -> "bf16" where native, else "fp32"; "fp32"/"bf16" are taken as asked."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if has_native_bf16(device) else "fp32"
    return precision


def autocast(precision: str, device: torch.device | str):
    """Context manager of the forward pass for a resolved precision ("fp32" or "bf16")."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"autocast needs a resolved precision (fp32 or bf16), got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
