"""Fault injection on the policy side: the real graph with a tiny checkpoint whose policy is wrapped
(through build_graph's `policy_loader`, the inference node's public seam) to raise, stall, return
NaN / inf or actions far outside the workspace; and refused instructions. See fault_rig.py."""
from __future__ import annotations

import numpy as np
import pytest
from std_msgs.msg import String

from fault_rig import FaultRig, checkpoint, conclude, fault_config  # noqa: F401 (fixture)
from vla3d_ros.runtime.diagnostics import Level

@pytest.fixture
def make_rig(ros_context, tmp_path, checkpoint, monkeypatch, capfd):
    rigs = []

    def make(**config_overrides) -> FaultRig:
        rigs.append(FaultRig(ros_context, tmp_path, checkpoint, monkeypatch, console=capfd,
                             config=fault_config(**config_overrides)))
        return rigs[-1]
    yield make
    for rig in rigs:
        rig.destroy()


# mode -> (diagnostic text, log text, chunks from the faulty period allowed)
POLICY_FAULTS = {
    "raise": ("policy raised RuntimeError: injected fault", "policy raised RuntimeError", False),
    "slow": ("inference took", "inference took", True),
    "nonfinite": ("policy returned 2 non-finite action values", "non-finite action values", False),
}
CASE_NAMES = {"raise": "inference raises", "slow": "inference slower than its period (0.8 s at 10 Hz)",
              "nonfinite": "NaN / inf actions"}


def slow_status(rig, delay: float):
    """The first overrun status since the mark reporting an inference of at least `delay` s."""
    for status in rig.diagnostics[rig.marks["diagnostics"]:]:
        if status.message.startswith("inference took ") and float(status.message.split()[2]) >= delay:
            return status
    return None


@pytest.mark.parametrize("mode", list(POLICY_FAULTS))
def test_policy_fault_holds_says_why_and_recovers(make_rig, mode):
    text, log_text, stale_chunks_allowed = POLICY_FAULTS[mode]
    rig = make_rig()
    rig.start_running()
    rig.inject(None)
    rig.policy.mode = mode
    assert rig.wait_for(lambda: rig.diagnostic(text, "vla3d_inference") and rig.held()
                        and rig.pre_fault_chunks_expired(), timeout=6.0), \
        f"{mode}: no hold / no {text!r}; last: {[s.message for s in rig.diagnostics[-4:]]}"
    status = rig.diagnostic(text, "vla3d_inference")
    if mode == "slow":   # the injected overrun, not one of the load's own
        assert rig.wait_for(lambda: slow_status(rig, rig.policy.delay))
        status = slow_status(rig, rig.policy.delay)
    time_to_hold = rig.time_to_hold()
    commands, moving = rig.held_throughout(0.8 if mode == "slow" else 0.4)
    assert commands >= 5 and moving == 0, f"{mode}: {moving}/{commands} commands moved"
    if not stale_chunks_allowed:
        assert not rig.chunks_after_fault()
    hold_reason = rig.graph["action"].controller.last_decision.reason
    # Overruns are logged by the status transition, once per diagnostics period at most. On a
    # loaded machine the overrun status can already be WARN from the load's own overruns before
    # the injection: then its one transition line predates the mark, and no new line is due.
    def overrun_logged():
        return rig.log(log_text, "vla3d_inference") or (mode == "slow" and rig.log_since_start(log_text, "vla3d_inference"))
    assert rig.wait_for(overrun_logged, timeout=2.0), \
        f"{mode}: not logged; recent: {[e.msg for e in rig.logs[-4:]]}"
    log = overrun_logged()
    rig.policy.mode = None
    assert rig.wait_recovered(), f"{mode}: no recovery"
    conclude(rig, CASE_NAMES[mode], diagnostic=status, log=log,
             command=f"zero twist within {time_to_hold:.2f} s ({hold_reason})", recovered=True)


def test_action_far_outside_the_workspace_is_rejected_in_reject_mode(make_rig):
    rig = make_rig(safety={"workspace": {"mode": "reject"}})
    rig.start_running()
    rig.inject(None)
    rig.policy.mode = "far"
    assert rig.wait_for(lambda: rig.diagnostic("outside workspace", "vla3d_action") and rig.held()
                        and rig.pre_fault_chunks_expired())
    status = rig.diagnostic("outside workspace", "vla3d_action")
    commands, moving = rig.held_throughout(0.4)
    assert commands >= 5 and moving == 0
    # Hold reasons are logged at most every 2 s per call site: the start-up hold may delay this line.
    assert rig.wait_for(lambda: rig.log("outside workspace", "vla3d_action"), timeout=4.0)
    log = rig.log("outside workspace", "vla3d_action")
    rig.policy.mode = None
    assert rig.wait_recovered()
    conclude(rig, "action 10 m outside the workspace (workspace.mode: reject)", diagnostic=status, log=log,
             command="zero twist", recovered=True)


def test_action_far_outside_the_workspace_is_clipped_and_speed_limited_in_clip_mode(make_rig):
    rig = make_rig()
    limit = rig.config.safety.max_linear_speed
    rig.start_running()
    rig.inject(None)
    rig.policy.mode = "far"
    assert rig.wait_for(lambda: rig.diagnostic("target clipped to workspace", "vla3d_action", Level.OK))
    status = rig.diagnostic("target clipped to workspace", "vla3d_action", Level.OK)
    start = len(rig.twists)
    assert rig.wait_for(lambda: len(rig.twists) >= start + 8)
    linear = np.array([(t.twist.linear.x, t.twist.linear.y, t.twist.linear.z) for t in rig.twists[start:]])
    assert np.all(np.isfinite(linear))
    speeds = np.linalg.norm(linear, axis=1)
    assert np.all(speeds <= limit * (1 + 1e-6)), f"speeds {speeds.max()} above the {limit} m/s limit"
    rig.policy.mode = None
    conclude(rig, "action 10 m outside the workspace (workspace.mode: clip, the default)", diagnostic=status,
             log=rig.log("clipped"), command=f"moves toward the workspace boundary at <= {limit} m/s "
                                             f"(max observed {speeds.max():.3f})")


INSTRUCTIONS = {"empty instruction": ("", "instruction refused: instruction is empty"),
                "100 KB instruction": ("x" * 102_400, "instruction refused: instruction has 102400 characters")}


@pytest.mark.parametrize("case", list(INSTRUCTIONS))
def test_refused_instruction_keeps_the_previous_one(make_rig, case):
    text, refusal = INSTRUCTIONS[case]
    rig = make_rig()
    rig.start_running()
    rig.inject(None)
    rig.instruction.publish(String(data=text))
    assert rig.wait_for(lambda: rig.log(refusal, "vla3d_inference") and len(rig.chunks_after_fault()) >= 2)
    inference = rig.graph["inference"]
    assert inference.instruction == "pick up the red cube"
    still_using = "still using 'pick up the red cube'"
    assert rig.wait_for(lambda: rig.diagnostic(still_using, "vla3d_inference")), "the refusal is not on /diagnostics"
    status = rig.diagnostic(still_using, "vla3d_inference")
    assert status.name.endswith(": instruction") and status.message.startswith("refused: ")
    assert len(status.message) < 300   # a 100 KB instruction is quoted, not copied
    log = rig.log(refusal)
    # An accepted instruction clears the warning.
    rig.mark()
    rig.instruction.publish(String(data="push the blue block"))
    assert rig.wait_for(lambda: rig.diagnostic("using 'push the blue block'", "vla3d_inference", Level.OK))
    conclude(rig, case, diagnostic=status, log=log,
             command="keeps executing the previous instruction ('pick up the red cube'); WARN on /diagnostics "
                     "until an instruction is accepted")
