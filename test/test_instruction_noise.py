"""`--instruction-noise` (train/instruction_noise.py): the noise has the asked length, touches only the
instruction embedding, is reproducible from the generator, and reaches training."""
from __future__ import annotations

import math

import pytest
import torch

from train_fixtures import train_tiny_stage1, write_synthetic_episodes
from vla3d_ros.cli import main
from vla3d_ros.train.instruction_noise import with_instruction_noise
from vla3d_ros.train.trainer import TrainConfig
from vla3d_ros.types import INSTRUCTION_EMBEDDING, STATE


def _batch(rows: int = 256, dim: int = 384) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    embedding = torch.nn.functional.normalize(torch.randn(rows, dim, generator=generator), dim=1)
    return {INSTRUCTION_EMBEDDING: embedding, STATE: torch.randn(rows, 7, generator=generator)}


def test_noise_has_the_asked_length_and_leaves_everything_else_alone():
    batch = _batch()
    noisy = with_instruction_noise(batch, 0.27, torch.Generator().manual_seed(0))
    lengths = (noisy[INSTRUCTION_EMBEDDING] - batch[INSTRUCTION_EMBEDDING]).norm(dim=1)
    assert abs(float(lengths.mean()) - 0.27) < 0.27 * 0.02
    assert float((lengths - 0.27).abs().max()) < 0.27 * 0.15
    assert noisy[STATE] is batch[STATE]
    assert torch.equal(batch[INSTRUCTION_EMBEDDING], _batch()[INSTRUCTION_EMBEDDING])   # input not modified
    # isotropic: no direction is preferred, so the mean noise vector is near zero
    mean_noise = (noisy[INSTRUCTION_EMBEDDING] - batch[INSTRUCTION_EMBEDDING]).mean(0)
    assert float(mean_noise.norm()) < 0.27 / math.sqrt(256) * 1.5


def test_noise_is_reproducible_from_the_generator_and_off_at_zero():
    batch = _batch(rows=8)
    first = with_instruction_noise(batch, 0.3, torch.Generator().manual_seed(5))[INSTRUCTION_EMBEDDING]
    again = with_instruction_noise(batch, 0.3, torch.Generator().manual_seed(5))[INSTRUCTION_EMBEDDING]
    other = with_instruction_noise(batch, 0.3, torch.Generator().manual_seed(6))[INSTRUCTION_EMBEDDING]
    assert torch.equal(first, again) and not torch.allclose(first, other)
    assert not torch.allclose(first[0] - batch[INSTRUCTION_EMBEDDING][0], first[1] - batch[INSTRUCTION_EMBEDDING][1])
    assert with_instruction_noise(batch, 0.0, torch.Generator()) is batch


def test_training_with_noise_is_deterministic_and_differs_from_training_without(tmp_path):
    write_synthetic_episodes(tmp_path / "data", num_episodes=2, num_steps=5)
    options = dict(steps=2, whiten_instructions=True, instruction_to_actions=True, precision="fp32")
    noisy, _ = train_tiny_stage1(tmp_path / "data", tmp_path / "noisy", instruction_noise=0.3, **options)
    again, _ = train_tiny_stage1(tmp_path / "data", tmp_path / "again", instruction_noise=0.3, **options)
    clean, _ = train_tiny_stage1(tmp_path / "data", tmp_path / "clean", **options)
    weights = {name: policy.state_dict() for name, policy in (("noisy", noisy), ("again", again), ("clean", clean))}
    assert all(torch.equal(weights["noisy"][k], weights["again"][k]) for k in weights["noisy"])
    assert any(not torch.equal(weights["noisy"][k], weights["clean"][k]) for k in weights["noisy"])


@pytest.mark.parametrize("norm", [-0.1, float("nan"), float("inf")])
def test_a_bad_noise_norm_is_refused_in_one_line(capsys, tmp_path, norm):
    with pytest.raises(ValueError, match=f"instruction_noise must be a finite norm >= 0, got {norm!r}"):
        TrainConfig(data="d", out="o", instruction_noise=norm)
    write_synthetic_episodes(tmp_path / "data", num_episodes=1, num_steps=3)
    code = main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--preset", "tiny",
                 "--instruction-noise", str(norm), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "instruction_noise must be a finite norm" in err and len(err.splitlines()) == 1
