"""`--instruction-film`: the trunk FiLMs the visual tokens with the instruction (`base.ContextTrunk`),
identity at first."""
from __future__ import annotations

from vla3d_ros.train.extensions.extension import switch

EXTENSION = switch("instruction_film", section="trunk", field="instruction_film",
                   asked=lambda config: config.instruction_film, changed_prefix="trunk.instruction_film.")
