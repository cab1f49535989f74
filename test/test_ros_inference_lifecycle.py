"""The inference node's lifecycle with a real tiny checkpoint: configure / activate / deactivate /
cleanup leave no dangling publishers, timers, subscriptions or threads; a bad checkpoint fails
the configure transition instead of the process."""
from __future__ import annotations

import threading
import time

import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from ros_graph_fixtures import fast_policy_loader, runtime_config, save_tiny_checkpoint
from vla3d_ros.ros import topics
from vla3d_ros.ros.camera_sync_node import CameraSyncNode
from vla3d_ros.ros.inference_node import InferenceNode


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny"))


@pytest.fixture
def nodes(ros_context, checkpoint):
    config = runtime_config(checkpoint=checkpoint)
    sync = CameraSyncNode(config, context=ros_context)
    inference = InferenceNode(config, sync, policy_loader=fast_policy_loader(), context=ros_context)
    yield sync, inference
    inference.destroy_node()
    sync.destroy_node()


def entities(node) -> dict[str, set]:
    return {"publishers": {p.topic_name for p in node.publishers},
            "timers": {id(t) for t in node.timers},
            "subscriptions": {s.topic_name for s in node.subscriptions}}


def test_transitions_leave_nothing_dangling(nodes):
    sync, node = nodes
    before, threads_before = entities(node), {t.ident for t in threading.enumerate()}
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    configured = entities(node)
    assert {topics.ACTION_CHUNK, topics.INSTANCES, topics.COMPLETED_POINTS, topics.INFERENCE_TIMING,
            topics.DIAGNOSTICS} <= configured["publishers"]
    assert "/vla3d/instruction" in configured["subscriptions"]
    assert node.runner is not None and node.device == "cpu"

    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    active = entities(node)
    assert len(active["timers"]) == len(configured["timers"]) + 1     # the inference timer
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert entities(node) == configured
    # Deactivated lifecycle publishers exist but are disabled.
    assert not any(p.is_activated for p in node._outputs.values())

    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert entities(node) == before
    assert node.runner is None
    assert {t.ident for t in threading.enumerate()} <= threads_before

    # The cycle can be repeated: configure again after cleanup.
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert entities(node) == before


def test_observation_trigger_registers_and_removes_its_listener(ros_context, checkpoint):
    config = runtime_config(checkpoint=checkpoint)
    sync = CameraSyncNode(config, context=ros_context)
    node = InferenceNode(config, sync, trigger="observation", policy_loader=fast_policy_loader(),
                         context=ros_context)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert sync._listeners == [node._on_new_set]
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert sync._listeners == []
    finally:
        node.destroy_node()
        sync.destroy_node()


@pytest.mark.parametrize("make_bad", ["missing", "tampered", "pickle"])
def test_bad_checkpoint_fails_configure_and_says_why(ros_context, tmp_path, checkpoint, make_bad):
    import shutil
    path = tmp_path / "ckpt"
    if make_bad == "missing":
        expected = "not a directory"
    elif make_bad == "tampered":
        shutil.copytree(checkpoint, path)
        weights = path / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-8])
        expected = "truncated or was modified"
    else:
        path = tmp_path / "policy.pt"
        path.write_bytes(b"\x80\x04K\x01.")
        expected = "pickle"
    config = runtime_config(checkpoint=str(path))
    sync = CameraSyncNode(config, context=ros_context)
    node = InferenceNode(config, sync, policy_loader=fast_policy_loader(), context=ros_context)
    try:
        before = entities(node)
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert expected in node.status.message
        assert entities(node) == before
    finally:
        node.destroy_node()
        sync.destroy_node()


def test_configure_applies_torch_threads_and_the_forward_pass_has_its_own_callback_group(ros_context, checkpoint):
    import dataclasses

    import torch
    from rclpy.parameter import Parameter

    config = dataclasses.replace(runtime_config(checkpoint=checkpoint), torch_threads=1)
    sync = CameraSyncNode(config, context=ros_context)
    node = InferenceNode(config, sync, policy_loader=fast_policy_loader(), context=ros_context)
    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert torch.get_num_threads() == 1          # the config's value, whatever it was before
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        run_timer = node._run_timer
        others = [t for t in node.timers if t is not run_timer] + list(node.subscriptions)
        assert others and all(entity.callback_group is not run_timer.callback_group for entity in others)
        # Camera streams and proprioception share a group that is not the node's default one.
        assert {s.callback_group for s in sync.subscriptions} == {sync.sensor_group}
        assert sync.sensor_group is not sync.default_callback_group
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        # A bad value is refused when set (its declared range), saying why; the node keeps the old one.
        result = node.set_parameters([Parameter("torch_threads", value=0)])[0]
        assert not result.successful and "range" in result.reason, result
        assert node.get_parameter("torch_threads").value == 1
    finally:
        torch.set_num_threads(threads_before)
        node.destroy_node()
        sync.destroy_node()


@pytest.mark.parametrize("inference_hz, level", [(5.0, "OK"), (2.0, "WARN")])
def test_configure_says_whether_the_chunk_outlasts_the_replanning_period(ros_context, checkpoint, inference_hz, level):
    """The tiny chunk covers 4 x 0.1 s: enough at 5 Hz (0.2 s period), not at 2 Hz (0.5 s)."""
    config = runtime_config(checkpoint=checkpoint, rates={"inference_hz": inference_hz, "control_hz": 10.0,
                                                          "diagnostics_hz": 1.0})
    sync = CameraSyncNode(config, context=ros_context)
    node = InferenceNode(config, sync, policy_loader=fast_policy_loader(), context=ros_context)
    try:
        assert node.horizon_status.level.name == "STALE"
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        status = next(s for s in node.statuses() if s.name == "chunk horizon")
        assert status.level.name == level and "4 x 0.1 s" in status.message, status
        assert ("will hold" in status.message) == (level == "WARN")
    finally:
        node.destroy_node()
        sync.destroy_node()


def test_the_horizon_check_ignores_the_first_passes_one_time_costs(ros_context, checkpoint):
    """A first inference that loads things (here: 1 s) must not make the 5 Hz horizon check warn."""
    loader = fast_policy_loader()

    def slow_first_call_loader(path, device, precision):
        loaded = loader(path, device, precision)
        infer, calls = loaded.policy.infer, []

        def infer_with_one_time_cost(obs):
            calls.append(obs)
            if len(calls) == 1:
                time.sleep(1.0)   # stands in for the sentence encoder loading on first use
            return infer(obs)

        loaded.policy.infer = infer_with_one_time_cost
        return loaded

    config = runtime_config(checkpoint=checkpoint, rates={"inference_hz": 5.0, "control_hz": 10.0,
                                                          "diagnostics_hz": 1.0})
    sync = CameraSyncNode(config, context=ros_context)
    node = InferenceNode(config, sync, policy_loader=slow_first_call_loader, context=ros_context)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        status = next(s for s in node.statuses() if s.name == "chunk horizon")
        assert status.level.name == "OK", status
    finally:
        node.destroy_node()
        sync.destroy_node()


def test_precision_is_resolved_on_this_machine_for_the_loader_and_a_bad_one_fails_configure(ros_context, checkpoint):
    from vla3d_ros.model.precision import has_native_bf16

    loader, asked = fast_policy_loader(), []

    def recording_loader(path, device, precision):
        asked.append(precision)
        return loader(path, device, precision)

    for precision, expected in (("auto", "bf16" if has_native_bf16("cpu") else "fp32"), ("fp32", "fp32")):
        config = runtime_config(checkpoint=checkpoint, precision=precision)
        sync = CameraSyncNode(config, context=ros_context)
        node = InferenceNode(config, sync, policy_loader=recording_loader, context=ros_context)
        try:
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            assert asked[-1] == expected and node.runner.policy.precision == expected
        finally:
            node.destroy_node()
            sync.destroy_node()
    config = runtime_config(checkpoint=checkpoint)
    sync = CameraSyncNode(config, context=ros_context)
    node = InferenceNode(config, sync, policy_loader=recording_loader, context=ros_context)
    try:
        node.set_parameters([Parameter("precision", value="fp16")])
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert "precision must be one of ['auto', 'fp32', 'bf16'], got 'fp16'" in node.status.message
        assert len(asked) == 2                       # refused before loading anything
    finally:
        node.destroy_node()
        sync.destroy_node()


def test_the_instruction_status_names_the_trained_instruction_retrieval_acts_on(ros_context, tmp_path):
    import functools
    import json

    from language_fixtures import BagOfWordsEncoder
    from vla3d_ros.model.checkpoint import CONFIG_FILE
    from vla3d_ros.model.instruction_retrieval import TRAINING_INSTRUCTIONS_KEY
    from vla3d_ros.runtime.policy_source import load_checkpoint_policy

    directory = save_tiny_checkpoint(tmp_path / "tiny")
    meta = json.loads((directory / CONFIG_FILE).read_text())
    meta["extra"][TRAINING_INSTRUCTIONS_KEY] = ["pick up the red cube", "pick up the blue cube"]
    (directory / CONFIG_FILE).write_text(json.dumps(meta))
    config = runtime_config(checkpoint=str(directory), instruction="please grab the blue cube")
    for retrieval, expected in ((True, "acted on as the trained 'pick up the blue cube' (cosine 0."), (False, None)):
        loader = functools.partial(load_checkpoint_policy, instruction_encoder=BagOfWordsEncoder(dim=384),
                                   instruction_retrieval=retrieval)
        sync = CameraSyncNode(config, context=ros_context)
        node = InferenceNode(config, sync, policy_loader=loader, context=ros_context)
        try:
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            message = node.instruction_status.message
            assert message.startswith("using 'please grab the blue cube'")
            assert (expected in message) if expected else ("acted on" not in message)
            node._set_instruction("pick up the red cube")        # a trained one: nothing to add
            assert node.instruction_status.message == "using 'pick up the red cube'"
        finally:
            node.destroy_node()
            sync.destroy_node()
