"""`--whiten-instructions`: the trunk whitens the instruction embedding (`base.InstructionWhitening`),
fitted on the training episodes' instructions; identity until fitted."""
from __future__ import annotations

import numpy as np
import torch

from vla3d_ros.train.extensions.extension import switch


def fit_instruction_whitening(policy, dataset) -> None:
    """Fit the trunk's instruction whitening on the training episodes' instruction embeddings
    (every variant of each episode's request when the dataset pairs steps with variants)."""
    embeddings = np.stack([dataset.embeddings[text]                          # (episode variants, E)
                           for texts in dataset.instructions for text in texts])
    policy.trunk.instruction_whitening.fit(torch.as_tensor(embeddings, dtype=torch.float32))


EXTENSION = switch("instruction_whitening", section="trunk", field="instruction_whitening",
                   asked=lambda config: config.whiten_instructions, changed_prefix="trunk.instruction_whitening.",
                   fit=fit_instruction_whitening)
