"""Experiment additions to the policy, one module each, switched on by `TrainConfig` flags.

An addition is an `Extension` (`extension.py`): how a fresh policy's config gains it
(`configure`), whether a continued (`--init`) policy still lacks it (`wanted`), and the model
surgery that adds it to one (`apply`: rebuilt with the new parts at their neutral start, every
other tensor kept, then fitted on the data where the addition needs it). `Trainer._initial_policy`
runs `EXTENSIONS` in this order, which matters: a rebuild keeps the normaliser it finds
(renormalize first), the anchor needs the direct instruction path, the grounding needs the
anchor, and the order fixes which parameters each rebuild initialises from the torch RNG.

A new addition: a module here with its `EXTENSION`, a `TrainConfig` flag, an entry below.
"""
from __future__ import annotations

from vla3d_ros.train.extensions import (anchor_weight, colour_skip, grounding, instruction_conditioned_actions,
                                        instruction_film, instruction_whitening, reasoning_anchor, refit_whitening,
                                        renormalize, spatial_forcing)
from vla3d_ros.train.extensions.extension import Extension

EXTENSIONS: tuple[Extension, ...] = (
    spatial_forcing.EXTENSION,
    renormalize.EXTENSION,
    instruction_whitening.EXTENSION,
    refit_whitening.EXTENSION,
    instruction_conditioned_actions.EXTENSION,
    reasoning_anchor.EXTENSION,
    anchor_weight.EXTENSION,
    grounding.EXTENSION,
    instruction_film.EXTENSION,
    colour_skip.EXTENSION,
)

__all__ = ["EXTENSIONS", "Extension"]
