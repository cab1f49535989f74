"""Optimiser and random-number-generator state as safetensors + JSON (no pickle anywhere).

`torch.save(optimizer.state_dict())` would pickle; instead every tensor of the state goes to a
safetensors file under a flat key, and everything else (hyper-parameters, step counters, the
Python/numpy generator states) goes to JSON. Together with the model checkpoint this is what
`vla3d train --resume` needs to continue bit-exactly: parameters, AdamW moments and step counts,
and the global torch / numpy / Python RNG states that dropout, masking and sampling draw from.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

TRAINING_STATE_TENSORS = "training_state.safetensors"
TRAINING_STATE_JSON = "training_state.json"
_OPT = "optimizer"
_RNG = "rng"
_GEN = "generator"


def optimizer_state_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split `optimizer.state_dict()` into flat tensors and a JSON-able description."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for param_id, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                # clone: safetensors refuses tensors that share storage with parameters.
                tensors[f"{_OPT}.{param_id}.{name}"] = value.detach().clone().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    groups = [{key: (list(value) if isinstance(value, tuple) else value) for key, value in group.items()}
              for group in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_state_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Inverse of `optimizer_state_to_flat`: a dict for `optimizer.load_state_dict`."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(f"{_OPT}."):
            _, param_id, name = key.split(".", 2)
            state.setdefault(int(param_id), {})[name] = value
    for param_id, values in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    # JSON turned tuples (AdamW betas) into lists; restore them so the groups compare equal.
    groups = [{key: (tuple(value) if isinstance(value, list) and key != "params" else value)
               for key, value in group.items()} for group in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_state_to_flat() -> tuple[dict[str, torch.Tensor], dict]:
    """Global torch (CPU and CUDA), numpy and Python RNG states."""
    tensors = {f"{_RNG}.torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{_RNG}.torch_cuda_{index}"] = cuda_state
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    tensors[f"{_RNG}.numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    version, python_state, gauss_next = random.getstate()
    meta = {
        "numpy": {"kind": kind, "position": int(position), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
    }
    return tensors, meta


def restore_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors[f"{_RNG}.torch_cpu"])
    cuda_keys = sorted(key for key in tensors if key.startswith(f"{_RNG}.torch_cuda_"))
    if cuda_keys and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[key] for key in cuda_keys])
    numpy_meta = meta["numpy"]
    np.random.set_state((numpy_meta["kind"], tensors[f"{_RNG}.numpy_keys"].numpy().astype(np.uint32),
                         numpy_meta["position"], numpy_meta["has_gauss"], numpy_meta["cached_gaussian"]))
    python_meta = meta["python"]
    random.setstate((python_meta["version"], tuple(python_meta["state"]), python_meta["gauss_next"]))


def training_state_paths(directory: Path, rank: int = 0) -> tuple[Path, Path]:
    """(tensors, json) files of one rank's state; each DDP rank has its own RNG streams."""
    suffix = "" if rank == 0 else f".rank{rank}"
    directory = Path(directory)
    return (directory / TRAINING_STATE_TENSORS.replace(".safetensors", f"{suffix}.safetensors"),
            directory / TRAINING_STATE_JSON.replace(".json", f"{suffix}.json"))


def save_training_state(directory: Path, optimizer: torch.optim.Optimizer, progress: dict, *,
                        generators: dict[str, torch.Generator] | None = None, rank: int = 0) -> None:
    """Write optimiser, global RNG and named generator states and the JSON `progress`.

    The JSON is written last, so its presence marks a complete state.
    """
    tensors_path, json_path = training_state_paths(directory, rank)
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    optimizer_tensors, optimizer_meta = optimizer_state_to_flat(optimizer)
    rng_tensors, rng_meta = rng_state_to_flat()
    generator_tensors = {f"{_GEN}.{name}": generator.get_state()
                         for name, generator in (generators or {}).items()}
    save_file({**optimizer_tensors, **rng_tensors, **generator_tensors}, str(tensors_path))
    document = {"progress": progress, "optimizer": optimizer_meta, "rng": rng_meta}
    json_path.write_text(json.dumps(document, indent=1))


def has_training_state(directory: Path, rank: int = 0) -> bool:
    return all(path.is_file() for path in training_state_paths(directory, rank))


def load_training_state(directory: Path, optimizer: torch.optim.Optimizer, *,
                        generators: dict[str, torch.Generator] | None = None, rank: int = 0,
                        restore_rng: bool = True) -> dict:
    """Load what `save_training_state` wrote into `optimizer`, the RNGs and `generators`.

    Returns the saved `progress` dict.
    """
    tensors_path, json_path = training_state_paths(directory, rank)
    for path in (tensors_path, json_path):
        if not path.is_file():
            raise FileNotFoundError(f"training state incomplete: {path} is missing")
    document = json.loads(json_path.read_text())
    tensors = load_file(str(tensors_path))
    optimizer.load_state_dict(optimizer_state_from_flat(tensors, document["optimizer"]))
    for name, generator in (generators or {}).items():
        key = f"{_GEN}.{name}"
        if key not in tensors:
            raise KeyError(f"{tensors_path} holds no state for generator {name!r}")
        generator.set_state(tensors[key])
    if restore_rng:
        restore_rng_state(tensors, document["rng"])
    return document["progress"]
