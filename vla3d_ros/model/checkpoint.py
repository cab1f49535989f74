"""Policy checkpoints: a directory with `model.safetensors` (weights) and `config.json`.

config.json holds the format version, the policy config, the normalisation statistics, the
action names, the step period between chunk rows, the training stage, the SHA-256 of the
weights file and free-form `extra` metadata. Loading never unpickles: pickle-based files
(.pt/.pth/.ckpt/.pkl, or anything starting with pickle or torch-zip magic bytes) are refused,
the weights are read with `safetensors` only, and a weights file that was truncated or changed
after saving is reported by its size/hash, not by a crash deep inside torch.
Writes are atomic (temporary directory, then rename), so a reader never sees half a checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vla3d_ros.model.config import ConfigError, PolicyConfig
from vla3d_ros.model.normalization import NormalizationStats
from vla3d_ros.model.policy import VLA3DPolicy

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")
# pickle protocol 2-5 starts with 0x80 <protocol>; torch.save's zip format starts with "PK".
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded; the message says which file and why."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(directory: str | Path, policy: VLA3DPolicy, *, step_period: float,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write `directory` (replacing an existing checkpoint there) and return it."""
    directory = Path(directory)
    if not step_period > 0:
        raise ValueError(f"step_period must be > 0 s, got {step_period!r}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in policy.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format_version": str(FORMAT_VERSION)})
        meta = {
            "format_version": FORMAT_VERSION,
            "config": policy.config.to_dict(),
            "normalization": policy.normalizer.stats.to_dict(),
            "action_names": list(policy.config.action_names),
            "step_period": float(step_period),
            "stage": policy.stage,
            "weights_sha256": _sha256(tmp / WEIGHTS_FILE),
            "extra": extra or {},
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path} looks like a pickle-based torch checkpoint ({path.suffix}); "
                              "refusing to load it (pickle can run arbitrary code). Checkpoints are a "
                              f"directory with {WEIGHTS_FILE} + {CONFIG_FILE}.")
    if path.is_file():
        with path.open("rb") as handle:
            head = handle.read(4)
        if any(head.startswith(magic) for magic in _PICKLE_MAGIC):
            raise CheckpointError(f"{path} starts with pickle/torch-zip magic bytes {head!r}; refusing to "
                                  "load it (pickle can run arbitrary code)")


def read_checkpoint_meta(directory: str | Path) -> dict[str, Any]:
    """The validated config.json of a checkpoint directory (no weights read)."""
    directory = Path(directory)
    _refuse_pickle(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint {directory} is not a directory with {WEIGHTS_FILE} + {CONFIG_FILE}")
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"checkpoint {directory} has no {CONFIG_FILE}")
    try:
        meta = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        found = meta.get("format_version") if isinstance(meta, dict) else meta
        raise CheckpointError(f"{config_path}: format_version {found!r} is not supported (expected {FORMAT_VERSION})")
    for key in ("config", "normalization", "action_names", "step_period", "stage", "weights_sha256"):
        if key not in meta:
            raise CheckpointError(f"{config_path} lacks {key!r}")
    return meta


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> tuple[VLA3DPolicy, dict[str, Any]]:
    """-> (policy in eval mode on `device`, its config.json contents)."""
    directory = Path(directory)
    meta = read_checkpoint_meta(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint {directory} has no {WEIGHTS_FILE}")
    _refuse_pickle(weights_path)
    actual = _sha256(weights_path)
    if actual != meta["weights_sha256"]:
        raise CheckpointError(f"{weights_path} is truncated or was modified after saving: sha256 {actual} "
                              f"!= {meta['weights_sha256']} recorded in {CONFIG_FILE}")
    try:
        config = PolicyConfig.from_dict(meta["config"])
        stats = NormalizationStats.from_dict(meta["normalization"])
    except (ConfigError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {exc}") from None
    if list(config.action_names) != list(meta["action_names"]):
        raise CheckpointError(f"{CONFIG_FILE}: action_names {meta['action_names']!r} disagree with the "
                              f"config's {list(config.action_names)!r}")
    try:
        tensors = load_file(str(weights_path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file: {exc}") from None
    policy = VLA3DPolicy(config, stats).to(device)
    try:
        policy.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights_path} does not match its config: {exc}") from None
    policy.set_stage(int(meta["stage"]))
    return policy.eval(), meta
