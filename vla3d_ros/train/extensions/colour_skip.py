"""`--colour-skip`: the vision encoder adds the patch colours to its features (`base.VisionEncoder`),
identity at first."""
from __future__ import annotations

from vla3d_ros.train.extensions.extension import switch

EXTENSION = switch("colour_skip", section="vision", field="colour_skip",
                   asked=lambda config: config.colour_skip, changed_prefix="vision.colour_skip.")
