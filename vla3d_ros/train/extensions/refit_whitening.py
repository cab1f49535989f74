"""`--refit-whitening`: a continued policy's instruction whitening is fitted again on this run's data
(every instruction variant it pairs steps with), instead of keeping the init's.

Why: the whitening (`base.InstructionWhitening`) scales each direction the fitted instructions vary
along to unit variance and every other direction by (WHITENING_EPS)^-1/2, ~6x more than the main
ones. Fitted on 11 wordings per request, a held-out paraphrase's difference from them lies mostly in
the unfitted directions and reaches the policy amplified. A linear probe of the side word on the
frozen embeddings reads 98 / 83 / 95 % of the language suite's levels 1-3 from 11 training wordings
and 100 / 100 / 100 % from 31 (`docs/results.md`, session 9): with more wordings the whitening must
be fitted on them, or they too reach the policy through the amplified directions."""
from __future__ import annotations

from vla3d_ros.errors import TrainingError
from vla3d_ros.train.extensions.extension import Extension
from vla3d_ros.train.extensions.instruction_whitening import fit_instruction_whitening


def wanted(config, policy) -> bool:
    return config.refit_whitening


def apply(policy, dataset, config, log):
    if not policy.config.trunk.instruction_whitening:
        raise TrainingError(f"--refit-whitening: the init checkpoint {config.init} has no instruction whitening "
                            "(add it with --whiten-instructions)")
    fit_instruction_whitening(policy, dataset)
    log(f"instruction whitening refitted on {sum(len(texts) for texts in dataset.instructions)} instructions")
    return policy


EXTENSION = Extension("refit_whitening", wanted=wanted, apply=apply)
