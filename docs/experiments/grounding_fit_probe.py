"""Can a bilinear grounding find the named object in a checkpoint's frozen tokens? (a diagnostic, not a result)

Session 6: trained jointly inside stage 1, the reasoning anchor's grounding (`ObjectGrounding`)
stopped at "one of the two cans". This separates "the information is not in the tokens" from
"it is there but slow to learn": for frames t = 0, 8, 16 of N random episodes it caches the
checkpoint's trunk visual tokens, every token's patch colours (`VisionEncoder.token_colours`),
the whitened instruction and the grounding target (the instructed object's mask share per
token), then fits a fresh ObjectGrounding on 3/4 of the frames (Adam, lr 1e-3, batch 64, 1,500
steps) on (a) the trunk tokens, (b) the patch colours, (c) both, and scores the held-out quarter:
cross-entropy and how often the top-scored token holds more of the instructed object's mask than
of any other object's (overall and on first frames, where the tool is near neither can). A
checkpoint that has its own grounding is scored as it is, too.

Usage: python docs/experiments/grounding_fit_probe.py DATA CHECKPOINT [--episodes N]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vla3d_ros import types
from vla3d_ros.data.dataset import LABEL_CACHE_DIR, LabelCache
from vla3d_ros.data.episodes import EpisodeReader, list_episodes
from vla3d_ros.model.checkpoint import load_checkpoint
from vla3d_ros.model.policy import NumpyPolicy
from vla3d_ros.model.reasoning_anchor import ObjectGrounding, grounding_loss, grounding_target, instructed_object_row

FRAMES = (0, 8, 16)


def cached_frames(policy, data: Path, episodes: int) -> dict[str, torch.Tensor]:
    runner = NumpyPolicy(policy)
    paths = list_episodes(data)
    chosen = np.random.default_rng(0).choice(len(paths), min(episodes, len(paths)), replace=False)
    rows: dict[str, list] = {"tokens": [], "colours": [], "instruction": [], "target": [], "other": [], "first": []}
    for index in chosen:
        reader = EpisodeReader(paths[index])
        labels = LabelCache(paths[index] / LABEL_CACHE_DIR)
        row = instructed_object_row(reader.meta["instruction"], reader.meta["object_ids"])
        for t in FRAMES:
            step = labels.targets(t, 16)
            masks = torch.as_tensor(step[types.TARGET_MASKS])[None]                  # (1, T, V, Hm, Wm)
            target, known = grounding_target(masks, torch.tensor([row]), policy.config.grid_hw)
            others = [grounding_target(masks, torch.tensor([i]), policy.config.grid_hw)[0][0]
                      for i in range(int(step[types.TARGET_VALID].sum())) if i != row]
            if not known[0] or not others:
                continue
            batch = runner.batch_from_observation(reader.observation(t))
            with torch.inference_mode():
                features = policy.vision(batch[types.RGB], policy.dtype)
                tokens, _ = policy.trunk(features, batch[types.INSTRUCTION_EMBEDDING].to(policy.dtype))
                rows["colours"].append(policy.vision.token_colours(batch[types.RGB], policy.dtype)[0])
                rows["instruction"].append(policy._action_instruction(batch)[0])
            rows["tokens"].append(tokens[0, 1:])
            rows["target"].append(target[0])
            rows["other"].append(torch.stack(others).max(dim=0).values)             # best other object per token
            rows["first"].append(torch.tensor(t == 0))
    return {name: torch.stack(values) for name, values in rows.items()}


def score(grounding: ObjectGrounding, frames: dict[str, torch.Tensor], inputs: torch.Tensor, colours: torch.Tensor,
          held_out: slice) -> str:
    with torch.no_grad():
        logits = grounding(frames["instruction"][held_out], inputs[held_out], colours[held_out])[0]
    target, other, first = frames["target"][held_out], frames["other"][held_out], frames["first"][held_out]
    top = logits.argmax(dim=1)
    rows = torch.arange(len(top))
    hit = (target[rows, top] > other[rows, top]).float()
    cross_entropy = grounding_loss(logits, target, torch.ones(len(top), dtype=torch.bool)).item()
    return f"{cross_entropy:.2f} | {hit.mean().item():.2f} | {hit[first].mean().item():.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--episodes", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(2)
    policy, _ = load_checkpoint(args.checkpoint)
    policy.eval()
    frames = cached_frames(policy, args.data, args.episodes)
    split = int(0.75 * len(frames["tokens"]))
    fit, held_out = slice(0, split), slice(split, None)
    print(f"{len(frames['tokens'])} frames (t = {FRAMES}) of {args.episodes} episodes; fit on {split}, "
          f"scored on {len(frames['tokens']) - split} ({int(frames['first'][held_out].sum())} first frames)")
    print("| grounding | held-out cross-entropy | top token on the named object | on first frames |")
    print("|---|---|---|---|")
    anchor = policy.action_head.reasoning_anchor
    if anchor is not None and anchor.grounding is not None:
        print(f"| the checkpoint's own | {score(anchor.grounding, frames, frames['tokens'], frames['colours'], held_out)} |")
    nothing = {"tokens": torch.zeros_like(frames["tokens"]), "colours": torch.zeros_like(frames["colours"])}
    variants = {"fitted on the trunk tokens": (frames["tokens"], nothing["colours"]),
                "fitted on the patch colours": (nothing["tokens"], frames["colours"]),
                "fitted on both": (frames["tokens"], frames["colours"])}
    for name, (inputs, colours) in variants.items():
        torch.manual_seed(0)
        grounding = ObjectGrounding(inputs.shape[-1], frames["instruction"].shape[-1], colours.shape[-1])
        optimizer = torch.optim.Adam(grounding.parameters(), lr=1e-3)
        everything = torch.ones(64, dtype=torch.bool)
        for _ in range(1500):
            pick = torch.randint(0, split, (64,))
            loss = grounding_loss(grounding(frames["instruction"][pick], inputs[pick], colours[pick])[0],
                                  frames["target"][pick], everything)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"| {name} | {score(grounding, frames, inputs, colours, held_out)} |")


if __name__ == "__main__":
    main()
