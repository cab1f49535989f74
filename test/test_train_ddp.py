"""Two-process DDP (gloo, file:// rendezvous) keeps the replicas' parameters identical."""
from __future__ import annotations

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from train_fixtures import fake_embed, write_synthetic_episodes
from vla3d_ros.train import distributed
from vla3d_ros.train.trainer import TrainConfig, Trainer

WORLD_SIZE = 2


def _replica(rank: int, data: str, out: str, rendezvous: str) -> None:
    context = distributed.init_distributed(rank=rank, world_size=WORLD_SIZE, init_method=rendezvous, device="cpu")
    try:
        config = TrainConfig(data=data, out=out, preset="tiny", stage="1", steps=2, batch_size=2,
                             checkpoint_every=2, log_every=1, num_workers=0, threads=1, progress_bar=False)
        trainer = Trainer(config, embed=fake_embed, encoder_name="fake", context=context)
        trainer.fit()
        params = {name: p.detach().clone() for name, p in trainer.policy.named_parameters()}
        save_file(params, f"{out}/params_rank{rank}.safetensors")
    finally:
        distributed.shutdown(context)


def test_two_replicas_stay_identical(tmp_path):
    data = tmp_path / "data"
    write_synthetic_episodes(data, num_episodes=2, num_steps=5)
    out = tmp_path / "run"
    out.mkdir()
    # spawn, not fork: by now this pytest process has run rclpy/DDS threads, and a forked child
    # of a multi-threaded process can crash (seen: SIGSEGV while garbage-collecting in the child).
    mp.start_processes(_replica, args=(str(data), str(out), f"file://{tmp_path / 'rendezvous'}"),
                       nprocs=WORLD_SIZE, join=True, start_method="spawn")
    replicas = [load_file(str(out / f"params_rank{rank}.safetensors")) for rank in range(WORLD_SIZE)]
    initial = load_file(str(out / "stage1" / "checkpoints" / "step_000002" / "model.safetensors"))
    assert replicas[0].keys() == replicas[1].keys()
    for name in replicas[0]:
        assert torch.equal(replicas[0][name], replicas[1][name]), name
        assert torch.equal(replicas[0][name], initial[name]), name      # rank 0's checkpoint = the replicas
    # each rank wrote its own RNG state; the model was trained (not a no-op)
    assert (out / "stage1" / "checkpoints" / "step_000002" / "training_state.rank1.json").is_file()
    metrics = (out / "stage1" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 3 and float(metrics[1].split(",")[metrics[0].split(",").index("grad_norm")]) > 0
