"""`--reasoning-anchor`: the action head's reasoning anchor (`model.reasoning_anchor.ReasoningAnchor`),
its query offset zero at first. `--grounding-weight` > 0 implies it."""
from __future__ import annotations

from vla3d_ros.train.extensions.extension import switch


def anchored(config) -> bool:
    """`config` asks for the anchor, directly or through its grounding."""
    return config.reasoning_anchor or bool(config.grounding_weight)


EXTENSION = switch("reasoning_anchor", section="action_head", field="reasoning_anchor", asked=anchored,
                   changed_prefix="action_head.reasoning_anchor.")
