"""Episodes -> training samples and batches (the trainer's and the offline evaluator's input).

One sample is one control step t of one episode, as the policy's `forward(batch)` takes it
(batch-key constants of `vla3d_ros.types`):

    RGB (V, 3, H, W) uint8        DEPTH (V, H, W) float32, NaN = invalid
    INTRINSICS (V, 3, 3) float32  T_BASE_CAM (V, 4, 4) float32
    STATE (S,) float32            EE_POSITION (3,) float32
    INSTRUCTION_EMBEDDING (E,)    ACTION (H, A) float32 = recorded actions t .. t+H-1
    ACTION_IS_PAD (H,) bool       True for rows past the episode's last step
    TARGET_* (Tm, V, ...)         pseudo-labels (METHOD §2.8), instance axis padded to Tm
    COMPLETION_POINTS (P, 3), COMPLETION_VALID (P,)   P_comp (METHOD §3.2)

Padding past the episode end repeats the last recorded action (LeRobot's convention); the
action loss ignores those rows through ACTION_IS_PAD, so the value only has to be finite.

Expensive per-step targets are computed ONCE per episode and cached next to it, in
`<episode>/labels/` as one plain .npy per array plus `meta.json` (no pickle; arrays are
memory-mapped, so workers share the page cache instead of each holding every episode's masks).
The cache is keyed by the labeller and completion parameters and recomputed when they change.
Masks are bit-packed along the width (8x smaller). Policies without the instance module (the 2D
baseline) need no targets, and no cache is built for them.

Instruction embeddings are computed once per distinct instruction with the frozen sentence
encoder and cached in `<data root>/instruction_embeddings.npz` (unicode + float arrays).

`ChunkSampler` is the batch sampler: an endless stream of per-epoch permutations, a pure
function of (seed, batch index), sharded across DDP ranks. That is what makes `--resume`
bit-exact: the resumed run asks for batch k and gets the same indices the straight run got.
"""
from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vla3d_ros.data.completion_targets import CompletionTargetConfig
from vla3d_ros.data.completion_targets import completion_targets
from vla3d_ros.data.episodes import EpisodeReader, list_episodes
from vla3d_ros.data.labels import DepthClusterLabeler, InstanceLabels, SegmentationLabeler
from vla3d_ros.model.normalization import NormalizationStats
from vla3d_ros.model.reasoning_anchor import instructed_object_row
from vla3d_ros.types import (
    ACTION,
    ACTION_IS_PAD,
    COMPLETION_POINTS,
    COMPLETION_VALID,
    DEPTH,
    EE_POSITION,
    INSTRUCTED_OBJECT_ROW,
    INSTRUCTION_EMBEDDING,
    INTRINSICS,
    RGB,
    STATE,
    T_BASE_CAM,
    TARGET_BOX_VALID,
    TARGET_BOXES,
    TARGET_CENTROIDS,
    TARGET_MASKS,
    TARGET_VALID,
    Observation,
)

LABEL_CACHE_DIR = "labels"
LABEL_CACHE_VERSION = 1
INSTRUCTION_CACHE = "instruction_embeddings.npz"
LABELERS = ("auto", "segmentation", "depth")
_CACHE_ARRAYS = ("boxes", "box_valid", "masks_packed", "centroids", "target_valid",
                 "completion_points", "completion_valid")


@dataclass(frozen=True)
class DatasetConfig:
    """What a sample looks like; the trainer derives it from the policy config."""

    horizon: int
    image_size: tuple[int, int]
    num_views: int
    max_targets: int = 16                  # pseudo-label instance axis Tm (instance module's cap)
    completion_instances: int = 6          # METHOD §3.2: <= 6 instances x 5 points
    completion_points_per_instance: int = 5
    labeler: str = "auto"                  # "auto" = sim segmentation when recorded, else depth
    with_targets: bool = True              # False: the 2D baseline needs no pseudo-labels
    # True: step t of an episode is paired with its meta's `instruction_variants`[t mod n] (other
    # wordings of the same request; the recorded instruction when it lists none), so the policy
    # meets many phrasings of every goal instead of three templates' embeddings.
    instruction_variants: bool = False

    def __post_init__(self) -> None:
        for name in ("horizon", "num_views", "max_targets", "completion_instances",
                     "completion_points_per_instance"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if len(self.image_size) != 2 or any(int(s) < 1 for s in self.image_size):
            raise ValueError(f"image_size must be (H, W) positive, got {self.image_size!r}")
        if self.labeler not in LABELERS:
            raise ValueError(f"labeler must be one of {LABELERS}, got {self.labeler!r}")

    @classmethod
    def from_policy_config(cls, config, **overrides) -> "DatasetConfig":
        """Sizes from a `vla3d_ros.model.config.PolicyConfig`. Pseudo-labels are loaded when the
        instance module trains on them or the reasoning anchor does (its fact is the instructed
        object's centroid, its grounding target that object's mask), so a policy without
        instances (issue 16's ablation) keeps its anchor."""
        values = dict(horizon=config.horizon, image_size=tuple(config.image_size),
                      num_views=config.num_views, max_targets=config.instances.max_instances,
                      completion_instances=config.completion.max_instances,
                      completion_points_per_instance=config.completion.points_per_instance,
                      with_targets=config.instances.enabled or config.action_head.reasoning_anchor)
        values.update(overrides)
        return cls(**values)


# ---- per-episode label cache ------------------------------------------------------------------

def _make_labeler(kind: str, reader: EpisodeReader):
    if kind == "segmentation":
        object_ids = reader.meta.get("object_ids") or {}
        ids = sorted(int(i) for i in object_ids.values()) or None
        return SegmentationLabeler(object_ids=ids)
    return DepthClusterLabeler()


def _resolve_labeler(kind: str, reader: EpisodeReader, episode_dir: Path) -> str:
    has_segmentation = bool(reader.meta.get("has_segmentation"))
    if kind == "auto":
        return "segmentation" if has_segmentation else "depth"
    if kind == "segmentation" and not has_segmentation:
        raise ValueError(f"labeler 'segmentation' asked for, but episode {episode_dir} "
                         "recorded no segmentation (use --labeler depth)")
    return kind


def _cache_key(config: DatasetConfig, labeler: str) -> dict:
    # JSON round trip so the key compares equal to the one read back (tuples become lists).
    return json.loads(json.dumps(_raw_cache_key(config, labeler)))


def _raw_cache_key(config: DatasetConfig, labeler: str) -> dict:
    return {"version": LABEL_CACHE_VERSION, "labeler": labeler,
            "completion_instances": config.completion_instances,
            "completion_points_per_instance": config.completion_points_per_instance,
            "completion_config": asdict(CompletionTargetConfig()),
            "depth_config": asdict(DepthClusterLabeler().config) if labeler == "depth" else None}


def _pad_instances(labels: InstanceLabels, width: int) -> dict[str, np.ndarray]:
    """The instance axis of one step's labels, truncated/padded to `width` rows."""
    count = min(labels.num_instances, width)
    num_views, height, image_width = labels.masks.shape[1:]
    out = {
        "boxes": np.zeros((width, num_views, 4), np.float32),
        "box_valid": np.zeros((width, num_views), bool),
        "masks_packed": np.zeros((width, num_views, height, (image_width + 7) // 8), np.uint8),
        "centroids": np.zeros((width, 3), np.float32),
        "target_valid": np.zeros(width, bool),
    }
    out["boxes"][:count] = labels.boxes[:count]
    out["box_valid"][:count] = labels.box_valid[:count]
    out["masks_packed"][:count] = np.packbits(labels.masks[:count], axis=-1)
    out["centroids"][:count] = labels.centroids[:count]
    out["target_valid"][:count] = True
    return out


def build_label_cache(episode_dir: Path, config: DatasetConfig, *, force: bool = False) -> Path:
    """Compute pseudo-labels and completion targets for every step of one episode.

    Idempotent: returns at once when a cache with the same key exists. Writes into a temporary
    directory renamed into place, so a killed run never leaves a half-written cache.
    """
    episode_dir = Path(episode_dir)
    cache_dir = episode_dir / LABEL_CACHE_DIR
    reader = EpisodeReader(episode_dir)
    labeler_kind = _resolve_labeler(config.labeler, reader, episode_dir)
    key = _cache_key(config, labeler_kind)
    if not force and _cache_matches(cache_dir, key):
        return cache_dir
    labeler = _make_labeler(labeler_kind, reader)
    steps = []
    for t in range(len(reader)):
        obs = reader.observation(t)
        labels = labeler.label(obs, reader.segmentation(t) if labeler_kind == "segmentation" else None)
        points, valid = completion_targets(obs, labels, config.completion_instances,
                                           config.completion_points_per_instance)
        steps.append({"labels": labels, "completion_points": points, "completion_valid": valid})
    width = max([1] + [step["labels"].num_instances for step in steps])
    arrays: dict[str, list[np.ndarray]] = {name: [] for name in _CACHE_ARRAYS}
    for step in steps:
        for name, value in _pad_instances(step["labels"], width).items():
            arrays[name].append(value)
        for name in ("completion_points", "completion_valid"):
            arrays[name].append(step[name])
    tmp_dir = episode_dir / f".{LABEL_CACHE_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir()
    for name, values in arrays.items():
        np.save(tmp_dir / f"{name}.npy", np.stack(values), allow_pickle=False)
    (tmp_dir / "meta.json").write_text(json.dumps({**key, "num_steps": len(reader),
                                                   "image_width": int(reader.meta["image_size"][1])}, indent=1))
    shutil.rmtree(cache_dir, ignore_errors=True)
    try:
        os.replace(tmp_dir, cache_dir)
    except OSError:
        # Another run labelling the same data published first; its cache is as good as ours.
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if not _cache_matches(cache_dir, key):
            raise
    return cache_dir


def _cache_matches(cache_dir: Path, key: dict) -> bool:
    meta_path = cache_dir / "meta.json"
    if not meta_path.is_file():
        return False
    meta = json.loads(meta_path.read_text())
    return all(meta.get(name) == value for name, value in key.items()) and all(
        (cache_dir / f"{name}.npy").is_file() for name in _CACHE_ARRAYS)


class LabelCache:
    """Memory-mapped view of one episode's cached targets."""

    def __init__(self, cache_dir: Path) -> None:
        self.meta = json.loads((Path(cache_dir) / "meta.json").read_text())
        self.arrays = {name: np.load(Path(cache_dir) / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                       for name in _CACHE_ARRAYS}

    def __len__(self) -> int:
        return int(self.meta["num_steps"])

    def targets(self, t: int, width: int) -> dict[str, np.ndarray]:
        """Step t's targets with the instance axis padded/truncated to `width`."""
        rows = self.arrays["target_valid"].shape[1]
        keep = min(rows, width)

        def padded(name: str, dtype) -> np.ndarray:
            value = np.asarray(self.arrays[name][t, :keep])
            out = np.zeros((width, *value.shape[1:]), dtype)
            out[:keep] = value
            return out

        masks = np.unpackbits(padded("masks_packed", np.uint8), axis=-1,
                              count=int(self.meta["image_width"])).astype(bool)
        return {
            TARGET_BOXES: padded("boxes", np.float32),
            TARGET_BOX_VALID: padded("box_valid", bool),
            TARGET_MASKS: masks,
            TARGET_CENTROIDS: padded("centroids", np.float32),
            TARGET_VALID: padded("target_valid", bool),
            COMPLETION_POINTS: np.array(self.arrays["completion_points"][t], np.float32),
            COMPLETION_VALID: np.array(self.arrays["completion_valid"][t], bool),
        }


# ---- instruction embeddings -------------------------------------------------------------------

def cached_instruction_embeddings(root: Path, instructions: Sequence[str],
                                  embed: Callable[[str], np.ndarray], encoder_name: str) -> dict[str, np.ndarray]:
    """Embedding (E,) of every distinct instruction, computed once and kept in `root`."""
    path = Path(root) / INSTRUCTION_CACHE
    known: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path, allow_pickle=False) as cache:
            if str(cache["encoder"]) == encoder_name:
                known = dict(zip(cache["texts"].tolist(), cache["embeddings"]))
    missing = sorted(set(instructions) - set(known))
    for text in missing:
        known[text] = np.asarray(embed(text), np.float32)
    if missing:
        texts = sorted(known)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
        np.savez(tmp, texts=np.asarray(texts, dtype=str), embeddings=np.stack([known[t] for t in texts]),
                 encoder=np.asarray(encoder_name))
        os.replace(tmp, path)
    return {text: known[text] for text in instructions}


# ---- the dataset --------------------------------------------------------------------------------

def observation_arrays(obs: Observation) -> dict[str, np.ndarray]:
    """The per-step model inputs of one observation, unbatched (shared with offline eval)."""
    depth = obs.depth if obs.depth is not None else np.full(obs.rgb.shape[:3], np.nan, np.float32)
    return {
        RGB: np.ascontiguousarray(obs.rgb.transpose(0, 3, 1, 2)),          # (V, 3, H, W)
        DEPTH: np.asarray(depth, np.float32),                               # (V, H, W)
        INTRINSICS: np.asarray(obs.intrinsics, np.float32),                 # (V, 3, 3)
        T_BASE_CAM: np.asarray(obs.T_base_cam, np.float32),                 # (V, 4, 4)
        STATE: obs.state,                                                   # (S,)
        EE_POSITION: np.asarray(obs.ee_pose[:3], np.float32),               # (3,)
    }


def action_chunk(actions: np.ndarray, t: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows t .. t+H-1 of (T, A) recorded actions and the (H,) padding flags past the end."""
    num_steps = len(actions)
    if not 0 <= t < num_steps:
        raise IndexError(f"step {t} outside an episode of {num_steps} steps")
    rows = np.arange(t, t + horizon)
    is_pad = rows >= num_steps
    return np.asarray(actions[np.minimum(rows, num_steps - 1)], np.float32), is_pad


# Every open episode holds ~13 memory maps (reader) + 7 (label cache), each a file descriptor; keeping
# all of them open exhausted a 20,000-descriptor limit at 1,600 episodes ("Too many open files" in
# the DataLoader worker). 32 keeps a process under ~700 descriptors, within the common 1,024 default;
# reopening an evicted episode costs a few ms, next to ~300 ms of CPU per training step.
OPEN_EPISODES = 32


def _recently_used(opened: OrderedDict, key: int, open_new: Callable[[], object]):
    """`opened[key]`, opening it if needed and closing (dropping) the least recently used beyond OPEN_EPISODES."""
    if key in opened:
        opened.move_to_end(key)
        return opened[key]
    value = opened[key] = open_new()
    while len(opened) > OPEN_EPISODES:
        opened.popitem(last=False)
    return value


def episode_instructions(meta: dict, variants: bool) -> list[str]:
    """The instructions an episode's steps are paired with: the recorded one, or its variants."""
    recorded = str(meta["instruction"])
    listed = meta.get("instruction_variants") if variants else None
    if not listed:
        return [recorded]
    if not isinstance(listed, list) or not all(isinstance(text, str) and text.strip() for text in listed):
        raise ValueError(f"instruction_variants must be a list of non-empty strings, got {listed!r}")
    return list(dict.fromkeys([recorded, *listed]))


class EpisodeDataset(Dataset):
    """All steps of all episodes under `root` (or the given episode dirs) as training samples."""

    def __init__(self, root: Path, config: DatasetConfig, *, embed: Callable[[str], np.ndarray],
                 encoder_name: str, episodes: Sequence[Path] | None = None,
                 progress: Callable[[Iterator], Iterator] | None = None) -> None:
        self.root = Path(root)
        self.config = config
        self.episode_dirs = [Path(p) for p in (episodes if episodes is not None else list_episodes(self.root))]
        if not self.episode_dirs:
            raise ValueError(f"no episodes found under {self.root}")
        self.actions: list[np.ndarray] = []        # (T, A) each
        self.states: list[np.ndarray] = []         # (T, S) each
        self.instructions: list[list[str]] = []
        object_ids: list[dict] = []
        first_meta = None
        for path in self.episode_dirs:
            # One reader at a time, its arrays copied out: a reader holds ~12 memory maps, each a file
            # descriptor, and all of 2,160 episodes open at once exceeded a 20,000-descriptor limit.
            reader = EpisodeReader(path)
            self._check_episode(reader, path)
            first_meta = first_meta or reader.meta
            self._check_same_layout(reader.meta, path, first_meta, self.episode_dirs[0])
            self.actions.append(np.asarray(reader.actions(), np.float32))
            self.states.append(reader.states())
            self.instructions.append(episode_instructions(reader.meta, config.instruction_variants))
            object_ids.append(reader.meta.get("object_ids") or {})
        # the reasoning anchor's fact: which pseudo-label row is the object the instruction names
        self.instructed_rows = [[instructed_object_row(text, ids) for text in texts]
                                for texts, ids in zip(self.instructions, object_ids)]
        self.object_counts = [len(ids) for ids in object_ids]
        self.embeddings = cached_instruction_embeddings(
            self.root, [text for texts in self.instructions for text in texts], embed, encoder_name)
        dirs = progress(self.episode_dirs) if progress is not None else self.episode_dirs
        self.cache_dirs = [build_label_cache(path, config) for path in dirs] if config.with_targets else []
        lengths = [len(actions) for actions in self.actions]
        self.index = np.array([(e, t) for e, n in enumerate(lengths) for t in range(n)], np.int64)
        self._readers: OrderedDict[int, EpisodeReader] = OrderedDict()
        self._caches: OrderedDict[int, LabelCache] = OrderedDict()

    def _check_episode(self, reader: EpisodeReader, path: Path) -> None:
        meta = reader.meta
        views = len(meta["camera_names"])
        if views != self.config.num_views:
            raise ValueError(f"episode {path} has {views} cameras {meta['camera_names']!r}, "
                             f"the policy takes {self.config.num_views}")
        image_size = tuple(int(s) for s in meta["image_size"])
        if image_size != tuple(self.config.image_size):
            raise ValueError(f"episode {path} has images {image_size!r}, the policy takes "
                             f"{tuple(self.config.image_size)!r}: record (or convert) at that size")
        if len(reader) == 0:
            raise ValueError(f"episode {path} has no steps")

    @staticmethod
    def _check_same_layout(meta: dict, path: Path, first_meta: dict, first_path: Path) -> None:
        # One policy reads view v as the same camera, action column a as the same command and a
        # chunk row as the same time step in every sample: data from several directories (tasks,
        # sessions) must agree on all three.
        for key in ("camera_names", "action_names", "step_period"):
            if meta.get(key) != first_meta.get(key):
                raise ValueError(f"episode {path} has {key} {meta.get(key)!r}, episode {first_path} "
                                 f"{first_meta.get(key)!r}: one policy trains on one layout")

    def __len__(self) -> int:
        return len(self.index)

    def _reader(self, episode: int) -> EpisodeReader:
        # Opened lazily per process: DataLoader workers each get their own file handles.
        return _recently_used(self._readers, episode, lambda: EpisodeReader(self.episode_dirs[episode]))

    def label_cache(self, episode: int) -> LabelCache:
        return _recently_used(self._caches, episode, lambda: LabelCache(self.cache_dirs[episode]))

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        episode, t = (int(v) for v in self.index[index])
        sample = observation_arrays(self._reader(episode).observation(t))
        sample[ACTION], sample[ACTION_IS_PAD] = action_chunk(self.actions[episode], t, self.config.horizon)
        variant = t % len(self.instructions[episode])
        sample[INSTRUCTION_EMBEDDING] = self.embeddings[self.instructions[episode][variant]]
        if self.config.with_targets:
            sample.update(self.label_cache(episode).targets(t, self.config.max_targets))
            # Rows follow ascending object id only while every object is labelled: a step where one
            # has no depth anywhere drops its row and shifts the rest, so the fact is unknown there.
            row = self.instructed_rows[episode][variant]
            complete = int(sample[TARGET_VALID].sum()) == self.object_counts[episode]
            sample[INSTRUCTED_OBJECT_ROW] = np.int64(row if complete and row < self.config.max_targets else -1)
        return sample

    def normalization_stats(self) -> NormalizationStats:
        """State and action statistics over every step of every episode."""
        return NormalizationStats.from_data(np.concatenate(self.states), np.concatenate(self.actions))


# ---- sampling and loading ----------------------------------------------------------------------

class ChunkSampler(torch.utils.data.Sampler):
    """Endless batches of indices; batch b is a pure function of (seed, b, rank).

    The global stream is the concatenation of per-epoch permutations (epoch e drawn from
    numpy's PCG64 seeded with (seed, e)); global batch b is the stream's slice
    [b*B*W, (b+1)*B*W) and rank r takes its r-th block of B, so ranks never share a sample
    within a step and the union over ranks is what a single process with batch B*W would see.
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int, rank: int = 0,
                 world_size: int = 1, start_batch: int = 0) -> None:
        if num_samples < 1 or batch_size < 1:
            raise ValueError(f"need num_samples >= 1 and batch_size >= 1, got {num_samples}, {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.start_batch = start_batch
        self._epoch_cache: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._epoch_cache:
            self._epoch_cache = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)}
        return self._epoch_cache[epoch]

    def batch(self, batch_index: int) -> list[int]:
        start = (batch_index * self.world_size + self.rank) * self.batch_size
        positions = np.arange(start, start + self.batch_size)
        epochs, offsets = np.divmod(positions, self.num_samples)
        return [int(self._permutation(int(e))[o]) for e, o in zip(epochs, offsets)]

    def __iter__(self) -> Iterator[list[int]]:
        batch_index = self.start_batch
        while True:
            yield self.batch(batch_index)
            batch_index += 1

    def __len__(self) -> int:
        # A DataLoader asks for a length; the stream is endless and the trainer counts steps.
        return 2**62


def _single_threaded_worker(_: int) -> None:
    # The main process owns the cores for the model; a worker only decodes and copies arrays.
    torch.set_num_threads(1)


def make_loader(dataset: Dataset, sampler: ChunkSampler, *, num_workers: int = 1,
                pin_memory: bool = False) -> DataLoader:
    """A DataLoader over `sampler` whose workers persist across the whole run."""
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                      persistent_workers=num_workers > 0, pin_memory=pin_memory,
                      prefetch_factor=4 if num_workers > 0 else None,
                      worker_init_fn=_single_threaded_worker if num_workers > 0 else None,
                      generator=torch.Generator().manual_seed(sampler.seed))
