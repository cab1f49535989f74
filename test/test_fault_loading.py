"""Faults in what the graph loads: truncated, tampered and pickle-based checkpoints (the inference node
refuses them at configure, keeps running unconfigured, holds the arm, and configures once given a
good checkpoint); runtime configs with unknown keys, wrong types or unsafe YAML (refused before any
node exists, the message quoting the key); a parameter of the wrong type (refused, node running)."""
from __future__ import annotations

import json
import pickle
import shutil

import pytest
import yaml
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from fault_rig import FaultRig, checkpoint, conclude, fault_config, report  # noqa: F401 (fixture)
from vla3d_ros import cli
from vla3d_ros.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, _sha256
from vla3d_ros.runtime.diagnostics import Level


class Exploit:
    """Unpickling this would run a shell command: a loader that unpickles is code execution."""

    def __reduce__(self):
        return (print, ("PICKLE EXECUTED",))


def bad_checkpoint(kind: str, good, tmp_path):
    path = tmp_path / "bad"
    if kind == "pickle .pt file":
        path = tmp_path / "policy.pt"
        path.write_bytes(pickle.dumps(Exploit()))
        return path, "pickle-based torch checkpoint"
    shutil.copytree(good, path)
    weights, config = path / WEIGHTS_FILE, path / CONFIG_FILE
    meta = json.loads(config.read_text())
    if kind == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return path, "truncated or was modified"
    if kind == "tampered weights (one byte)":
        data = bytearray(weights.read_bytes())
        data[-100] ^= 0xFF
        weights.write_bytes(bytes(data))
        return path, "truncated or was modified"
    if kind == "pickle inside model.safetensors (hash updated)":
        weights.write_bytes(pickle.dumps(Exploit(), protocol=4))
        meta["weights_sha256"] = _sha256(weights)
        config.write_text(json.dumps(meta))
        return path, "pickle/torch-zip magic bytes"
    if kind == "config.json with an unknown key":
        meta["config"]["dropout_rate_typo"] = 0.1
        config.write_text(json.dumps(meta))
        return path, "dropout_rate_typo"
    raise AssertionError(kind)


CHECKPOINTS = ["truncated weights", "tampered weights (one byte)", "pickle .pt file",
               "pickle inside model.safetensors (hash updated)", "config.json with an unknown key"]


@pytest.mark.parametrize("kind", CHECKPOINTS)
def test_bad_checkpoint_is_refused_node_keeps_running_arm_held(ros_context, tmp_path, checkpoint, monkeypatch,
                                                                capfd, kind):
    path, reason = bad_checkpoint(kind, checkpoint, tmp_path)
    rig = FaultRig(ros_context, tmp_path, path, monkeypatch, console=capfd, start_graph=False)
    try:
        inference = rig.graph["inference"]
        rig.start_recording()
        rig.arm()
        rig.inject(None)
        assert inference.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert reason in inference.status.message, inference.status.message
        rig.log("")   # reads the console
        assert "PICKLE EXECUTED" not in rig.console_out
        assert rig.wait_for(lambda: rig.log(reason, "vla3d_inference") and rig.held(5)), "not logged / not held"
        log = rig.log(reason, "vla3d_inference")
        assert rig.wait_for(lambda: rig.diagnostic(reason, "vla3d_inference", Level.ERROR)), \
            "the failed configure is not on /diagnostics"
        status = rig.diagnostic(reason, "vla3d_inference", Level.ERROR)
        assert not rig.chunks
        hold_reason = rig.graph["action"].controller.last_decision.reason
        # Still alive: the same node configures from a good checkpoint and the arm moves.
        inference.set_parameters([Parameter("checkpoint", value=str(checkpoint))])
        assert inference.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert inference.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert rig.wait_recovered(), "no motion after configuring a good checkpoint"
        conclude(rig, f"checkpoint: {kind}", diagnostic=status, log=log,
                 command=f"zero twist ({hold_reason})", recovered=True)
    finally:
        rig.destroy()


def write_config(tmp_path, change) -> str:
    data = fault_config().to_dict()
    change(data)
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data) if isinstance(data, dict) else data)
    return str(path)


CONFIGS = {
    "config: unknown key": (lambda d: d["safety"].update(max_linear_sped=0.1),
                            "safety.max_linear_sped: unknown key (value 0.1)"),
    "config: wrong type": (lambda d: d["rates"].update(control_hz="fast"),
                           "rates.control_hz: expected a finite number, got 'fast'"),
    "config: out of range": (lambda d: d["safety"].update(max_linear_speed=-1.0),
                             "safety.max_linear_speed: expected a number > 0, got -1.0"),
    "config: camera without topics": (lambda d: d["cameras"][0].pop("topics"),
                                      "cameras[0].topics: required key is missing"),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_bad_config_is_refused_before_any_node_starts(tmp_path, capsys, case):
    change, message = CONFIGS[case]
    path = write_config(tmp_path, change)
    assert cli.main(["bringup", "--config", path, "--duration", "1"]) == 1
    err = capsys.readouterr().err
    assert message in err, err
    report(case, diagnostic="(no node started)", log=err.strip(), command="nothing published: bringup exits 1",
           published=0, recorded=0, gap="")


def test_unsafe_yaml_tag_is_refused_without_running_it(tmp_path, capsys):
    path = tmp_path / "robot.yaml"
    path.write_text("base_frame: !!python/object/apply:os.system ['echo YAML EXECUTED']\ncameras: []\n")
    assert cli.main(["bringup", "--config", str(path), "--duration", "1"]) == 1
    captured = capsys.readouterr()
    assert "cannot read YAML" in captured.err and "YAML EXECUTED" not in captured.out
    report("config: python object tag in YAML", diagnostic="(no node started)", log=captured.err.strip(),
           command="nothing published: bringup exits 1", published=0, recorded=0, gap="")


def test_parameter_of_the_wrong_type_is_refused_and_the_node_keeps_running(ros_context, tmp_path, checkpoint,
                                                                            monkeypatch, capfd):
    rig = FaultRig(ros_context, tmp_path, checkpoint, monkeypatch, console=capfd)
    try:
        rig.start_running()
        inference = rig.graph["inference"]
        results = inference.set_parameters([Parameter("instruction", Parameter.Type.INTEGER, 5),
                                            Parameter("instruction", value="")])
        assert [r.successful for r in results] == [False, True]
        assert "type" in results[0].reason.lower()
        assert inference.instruction == "pick up the red cube"
        rig.inject(None)
        assert rig.wait_for(lambda: len(rig.chunks_after_fault()) >= 2)
        conclude(rig, "parameter of the wrong type (instruction := 5)", diagnostic=None, log=None,
                 command="keeps running with the previous instruction",
                 detail=f"set_parameters refused: {results[0].reason}")
    finally:
        rig.destroy()
