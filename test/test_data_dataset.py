"""Episodes -> samples: exact action chunks and padding, cached labels = direct labels,
normalisation round trip, instruction cache, and the resumable/sharded batch sampler."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from train_fixtures import INSTRUCTIONS, fake_embed, known_action, write_synthetic_episodes
from vla3d_ros import types
from vla3d_ros.data import dataset as dataset_module
from vla3d_ros.data.completion_targets import completion_targets
from vla3d_ros.data.dataset import (
    INSTRUCTION_CACHE,
    LABEL_CACHE_DIR,
    ChunkSampler,
    DatasetConfig,
    EpisodeDataset,
    action_chunk,
    make_loader,
)
from vla3d_ros.data.episodes import EpisodeReader
from vla3d_ros.data.labels import SegmentationLabeler
from vla3d_ros.model.normalization import Normalizer

NUM_STEPS = 6
HORIZON = 4


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("episodes")
    write_synthetic_episodes(root, num_episodes=2, num_steps=NUM_STEPS)
    return root


@pytest.fixture(scope="module")
def dataset(data_root):
    config = DatasetConfig(horizon=HORIZON, image_size=(32, 32), num_views=2, max_targets=3,
                           completion_instances=2, completion_points_per_instance=3)
    return EpisodeDataset(data_root, config, embed=fake_embed, encoder_name="fake")


def test_sample_shapes_and_dtypes(dataset):
    assert len(dataset) == 2 * NUM_STEPS
    sample = dataset[0]
    expected = {
        types.RGB: ((2, 3, 32, 32), np.uint8), types.DEPTH: ((2, 32, 32), np.float32),
        types.INTRINSICS: ((2, 3, 3), np.float32), types.T_BASE_CAM: ((2, 4, 4), np.float32),
        types.STATE: ((15,), np.float32), types.EE_POSITION: ((3,), np.float32),
        types.INSTRUCTION_EMBEDDING: ((384,), np.float32), types.ACTION: ((HORIZON, 7), np.float32),
        types.ACTION_IS_PAD: ((HORIZON,), np.bool_), types.TARGET_BOXES: ((3, 2, 4), np.float32),
        types.TARGET_BOX_VALID: ((3, 2), np.bool_), types.TARGET_MASKS: ((3, 2, 32, 32), np.bool_),
        types.TARGET_CENTROIDS: ((3, 3), np.float32), types.TARGET_VALID: ((3,), np.bool_),
        types.COMPLETION_POINTS: ((6, 3), np.float32), types.COMPLETION_VALID: ((6,), np.bool_),
        types.INSTRUCTED_OBJECT_ROW: ((), np.int64),
    }
    assert set(sample) == set(expected)
    assert sample[types.INSTRUCTED_OBJECT_ROW] == 0          # "... the red box ...", the fixtures' only object
    for key, (shape, dtype) in expected.items():
        assert sample[key].shape == shape and sample[key].dtype == dtype, key


def test_chunk_is_the_recorded_next_actions_and_pads_at_the_end(dataset):
    for index in range(len(dataset)):
        episode, t = (int(v) for v in dataset.index[index])
        sample = dataset[index]
        for h in range(HORIZON):
            if t + h < NUM_STEPS:
                np.testing.assert_array_equal(sample[types.ACTION][h], known_action(episode, t + h, NUM_STEPS))
                assert not sample[types.ACTION_IS_PAD][h]
            else:   # past the end: flagged, and the last recorded action repeated
                assert sample[types.ACTION_IS_PAD][h]
                np.testing.assert_array_equal(sample[types.ACTION][h], known_action(episode, NUM_STEPS - 1, NUM_STEPS))
    # the last step of an episode has exactly H-1 padded rows
    last = dataset[NUM_STEPS - 1]
    assert last[types.ACTION_IS_PAD].tolist() == [False] + [True] * (HORIZON - 1)


def test_action_chunk_rejects_steps_outside_the_episode():
    with pytest.raises(IndexError, match="step 5 outside an episode of 5 steps"):
        action_chunk(np.zeros((5, 7)), 5, 3)


def test_observation_arrays_match_the_episode(dataset, data_root):
    reader = EpisodeReader(dataset.episode_dirs[1])
    sample = dataset[NUM_STEPS + 2]                     # episode 1, step 2
    obs = reader.observation(2)
    np.testing.assert_array_equal(sample[types.RGB], obs.rgb.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(sample[types.STATE], obs.state)
    np.testing.assert_array_equal(sample[types.EE_POSITION], obs.ee_pose[:3])
    np.testing.assert_array_equal(sample[types.INSTRUCTION_EMBEDDING], fake_embed(INSTRUCTIONS[1]))


def test_cached_targets_equal_direct_labels(dataset):
    """The on-disk cache returns exactly what the labeller + completion give for that step."""
    reader = EpisodeReader(dataset.episode_dirs[0])
    labeler = SegmentationLabeler(object_ids=[1])
    for t in (0, 3, NUM_STEPS - 1):
        obs = reader.observation(t)
        labels = labeler.label(obs, reader.segmentation(t))
        points, valid = completion_targets(obs, labels, 2, 3)
        sample = dataset[t]
        assert labels.num_instances == 1 and sample[types.TARGET_VALID].tolist() == [True, False, False]
        np.testing.assert_array_equal(sample[types.TARGET_MASKS][:1], labels.masks)
        np.testing.assert_array_equal(sample[types.TARGET_BOXES][:1], labels.boxes)
        np.testing.assert_array_equal(sample[types.TARGET_BOX_VALID][:1], labels.box_valid)
        np.testing.assert_array_equal(sample[types.TARGET_CENTROIDS][:1], labels.centroids)
        assert not sample[types.TARGET_MASKS][1:].any() and not sample[types.TARGET_BOX_VALID][1:].any()
        np.testing.assert_array_equal(sample[types.COMPLETION_POINTS], points)
        np.testing.assert_array_equal(sample[types.COMPLETION_VALID], valid)
        # the box top is 0.1 m high; its centroid lies on it
        assert sample[types.TARGET_CENTROIDS][0, 2] == pytest.approx(0.1, abs=2e-3)


def test_label_cache_is_reused_and_rebuilt_when_parameters_change(dataset, data_root):
    meta_path = dataset.episode_dirs[0] / LABEL_CACHE_DIR / "meta.json"
    stamp = meta_path.stat().st_mtime_ns
    EpisodeDataset(data_root, dataset.config, embed=fake_embed, encoder_name="fake")
    assert meta_path.stat().st_mtime_ns == stamp                 # same key: not recomputed
    changed = DatasetConfig(**{**dataset.config.__dict__, "completion_points_per_instance": 2})
    other = EpisodeDataset(data_root, changed, embed=fake_embed, encoder_name="fake")
    assert json.loads(meta_path.read_text())["completion_points_per_instance"] == 2
    assert other[0][types.COMPLETION_POINTS].shape == (4, 3)
    EpisodeDataset(data_root, dataset.config, embed=fake_embed, encoder_name="fake")   # restore for other tests


def test_instruction_embeddings_are_computed_once(data_root):
    calls = []

    def counting_embed(text):
        calls.append(text)
        return fake_embed(text)

    (data_root / INSTRUCTION_CACHE).unlink(missing_ok=True)
    config = DatasetConfig(horizon=2, image_size=(32, 32), num_views=2, with_targets=False)
    EpisodeDataset(data_root, config, embed=counting_embed, encoder_name="count")
    assert sorted(calls) == sorted(INSTRUCTIONS)
    EpisodeDataset(data_root, config, embed=counting_embed, encoder_name="count")
    assert len(calls) == 2                                       # served from the npz cache
    EpisodeDataset(data_root, config, embed=counting_embed, encoder_name="another encoder")
    assert len(calls) == 4                                       # a different encoder is not reused


def test_normalisation_statistics_and_round_trip(dataset):
    stats = dataset.normalization_stats()
    actions = np.stack([known_action(e, t, NUM_STEPS) for e in range(2) for t in range(NUM_STEPS)])
    np.testing.assert_allclose(stats.action_mean, actions.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats.action_std, actions.std(0), rtol=1e-6, atol=1e-7)
    normalizer = Normalizer(stats).double()
    chunk = torch.as_tensor(dataset[3][types.ACTION], dtype=torch.float64)[None]
    normalised = normalizer.normalize_action(chunk)
    torch.testing.assert_close(normalizer.unnormalize_action(normalised), chunk, rtol=0, atol=1e-12)
    # non-constant dimensions are standardised over the dataset
    all_norm = normalizer.normalize_action(torch.as_tensor(actions, dtype=torch.float64)[None])[0]
    varying = actions.std(0) > 1e-6
    torch.testing.assert_close(all_norm.mean(0)[varying], torch.zeros(int(varying.sum()), dtype=torch.float64),
                               atol=1e-5, rtol=0)


def test_mismatched_image_size_is_refused(data_root):
    config = DatasetConfig(horizon=2, image_size=(64, 64), num_views=2, with_targets=False)
    with pytest.raises(ValueError, match=r"images \(32, 32\).*\(64, 64\)"):
        EpisodeDataset(data_root, config, embed=fake_embed, encoder_name="fake")


def test_sampler_is_a_pure_function_of_the_batch_index():
    sampler = ChunkSampler(10, 4, seed=3)
    stream = iter(sampler)
    first = [next(stream) for _ in range(6)]
    resumed = iter(ChunkSampler(10, 4, seed=3, start_batch=2))
    assert [next(resumed) for _ in range(4)] == first[2:]
    # every epoch is a permutation: 24 draws of 10 samples cover epochs 0, 1 completely
    flat = [i for batch in first for i in batch]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))


def test_sampler_shards_ranks_disjointly_and_covers_the_single_process_batch():
    single = ChunkSampler(50, 6, seed=1)
    ranks = [ChunkSampler(50, 3, seed=1, rank=r, world_size=2) for r in range(2)]
    for b in range(5):
        rank_batches = [s.batch(b) for s in ranks]
        assert not set(rank_batches[0]) & set(rank_batches[1])
        assert rank_batches[0] + rank_batches[1] == single.batch(b)


def test_loader_with_a_persistent_worker_matches_direct_indexing(dataset):
    sampler = ChunkSampler(len(dataset), 3, seed=0)
    loader = make_loader(dataset, sampler, num_workers=1)
    iterator = iter(loader)
    for b in range(2):
        batch = next(iterator)
        expected = [dataset[i] for i in sampler.batch(b)]
        for key in (types.ACTION, types.RGB, types.TARGET_MASKS):
            torch.testing.assert_close(batch[key], torch.as_tensor(np.stack([e[key] for e in expected])))


def test_open_episodes_are_bounded_and_reopened_identically(dataset, monkeypatch):
    """Only OPEN_EPISODES episodes stay open per process (file descriptors); an evicted one reads back the same."""
    monkeypatch.setattr(dataset_module, "OPEN_EPISODES", 1)
    fresh = EpisodeDataset(dataset.root, dataset.config, embed=fake_embed, encoder_name="fake")
    first_of_each = [0, NUM_STEPS, 0]                     # episode 0, 1, then 0 again after its eviction
    samples = [fresh[index] for index in first_of_each]
    assert len(fresh._readers) == 1 and len(fresh._caches) == 1
    assert list(fresh._readers) == [0]
    for key, value in samples[0].items():
        np.testing.assert_array_equal(samples[2][key], value)
    assert not np.array_equal(samples[0][types.ACTION], samples[1][types.ACTION])   # really another episode


def test_building_a_dataset_does_not_hold_its_episodes_open(tmp_path):
    """Indexing many episodes opens them one at a time (each holds ~12 file descriptors): the
    descriptors held afterwards do not grow with the number of episodes."""
    import os

    write_synthetic_episodes(tmp_path, num_episodes=12, num_steps=3)
    config = DatasetConfig(horizon=HORIZON, image_size=(32, 32), num_views=2, max_targets=3,
                           completion_instances=2, completion_points_per_instance=3)
    before = len(os.listdir("/proc/self/fd"))
    built = EpisodeDataset(tmp_path, config, embed=fake_embed, encoder_name="fake")
    assert len(built.actions) == 12 and len(built._readers) == 0
    assert len(os.listdir("/proc/self/fd")) - before < 12      # fewer than one open episode's worth


def test_the_instructed_row_is_unknown_when_an_object_has_no_label(tmp_path):
    """A missing object drops its pseudo-label row and shifts the others: the fact must not be guessed."""
    write_synthetic_episodes(tmp_path, num_episodes=1, num_steps=3)
    meta_path = next(tmp_path.glob("episode_*")) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["object_ids"] = {"blue box": 7, **meta["object_ids"]}     # id 7 never appears in the segmentation
    meta_path.write_text(json.dumps(meta))
    config = DatasetConfig(horizon=HORIZON, image_size=(32, 32), num_views=2, max_targets=3,
                           completion_instances=2, completion_points_per_instance=3)
    partial = EpisodeDataset(tmp_path, config, embed=fake_embed, encoder_name="fake")
    assert partial.instructed_rows == [[0]] and partial.object_counts == [2]
    assert all(partial[i][types.INSTRUCTED_OBJECT_ROW] == -1 for i in range(len(partial)))


def test_instruction_variants_cycle_over_an_episodes_steps_only_when_asked(tmp_path):
    write_synthetic_episodes(tmp_path, num_episodes=1, num_steps=5)
    meta_path = next(tmp_path.glob("episode_*")) / "meta.json"
    meta = json.loads(meta_path.read_text())
    variants = ["lift the red box", "the red box, up it goes"]
    meta_path.write_text(json.dumps({**meta, "instruction_variants": variants}))
    base = DatasetConfig(horizon=HORIZON, image_size=(32, 32), num_views=2, max_targets=3,
                         completion_instances=2, completion_points_per_instance=3)
    plain = EpisodeDataset(tmp_path, base, embed=fake_embed, encoder_name="fake")
    varied = EpisodeDataset(tmp_path, dataclasses.replace(base, instruction_variants=True),
                            embed=fake_embed, encoder_name="fake")
    recorded = meta["instruction"]
    texts = [recorded, *variants]
    for t in range(5):
        np.testing.assert_array_equal(plain[t][types.INSTRUCTION_EMBEDDING], fake_embed(recorded))
        np.testing.assert_array_equal(varied[t][types.INSTRUCTION_EMBEDDING], fake_embed(texts[t % 3]))
        # every wording names the same object: the anchor's fact does not change
        assert varied[t][types.INSTRUCTED_OBJECT_ROW] == plain[t][types.INSTRUCTED_OBJECT_ROW] == 0
    meta_path.write_text(json.dumps({**meta, "instruction_variants": ["ok", ""]}))
    with pytest.raises(ValueError, match="instruction_variants must be a list of non-empty strings"):
        EpisodeDataset(tmp_path, dataclasses.replace(base, instruction_variants=True),
                       embed=fake_embed, encoder_name="fake")


def test_pseudo_labels_are_loaded_for_the_instances_or_the_reasoning_anchor():
    from vla3d_ros.model.config import preset
    full = preset("cpu")
    no_instances = full.replace(  # what needs the instances goes too (model/config.py)
        instances=dataclasses.replace(full.instances, enabled=False),
        fusion=dataclasses.replace(full.fusion, enabled=False),
        completion=dataclasses.replace(full.completion, enabled=False),
        aggregation=dataclasses.replace(full.aggregation, ee_relative_pe=False, routing=False))
    anchor_only = no_instances.replace(action_head=dataclasses.replace(
        full.action_head, reasoning_anchor=True, instruction_conditioning=True))
    flat = no_instances.replace(action_head=dataclasses.replace(full.action_head, reasoning_anchor=False))
    assert DatasetConfig.from_policy_config(full).with_targets
    assert DatasetConfig.from_policy_config(anchor_only).with_targets
    assert not DatasetConfig.from_policy_config(flat).with_targets
