"""`--instruction-to-actions`: the action head's direct instruction path (`base.ActionHead`), zero
at first; the reasoning anchor and the grounding need it too."""
from __future__ import annotations

from vla3d_ros.train.extensions.extension import switch
from vla3d_ros.train.extensions.reasoning_anchor import anchored

EXTENSION = switch("instruction_conditioned_actions", section="action_head", field="instruction_conditioning",
                   asked=lambda config: config.instruction_to_actions or anchored(config),
                   changed_prefix="action_head.instruction_query.")
