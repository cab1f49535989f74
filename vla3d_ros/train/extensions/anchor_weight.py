"""`--anchor-weight`: the reasoning anchor's fact-loss weight (a config change, no new parameters)."""
from __future__ import annotations

from vla3d_ros.train.extensions.extension import setting

EXTENSION = setting("anchor_weight", section="action_head", field="anchor_weight",
                    value_of=lambda config: config.anchor_weight)
