"""Instruction retrieval (`model/instruction_retrieval.py`): the policy acts on the most similar
trained instruction; trained ones are untouched; checkpoints record what they trained on."""
from __future__ import annotations

import numpy as np
import pytest

from language_fixtures import BagOfWordsEncoder
from vla3d_ros.model.instruction_retrieval import (TRAINING_INSTRUCTIONS_KEY, InstructionMatch,
                                                  RetrievingInstructionEncoder, checkpoint_instruction_encoder)


TRAINED = ("push the red can to the left zone", "push the red can to the right zone",
           "push the blue can to the left zone", "push the blue can to the right zone")


def test_a_trained_instruction_is_acted_on_unchanged():
    encoder = BagOfWordsEncoder()
    retrieval = RetrievingInstructionEncoder(encoder, TRAINED)
    for text in TRAINED:
        assert retrieval.match(text) == InstructionMatch(text, 1.0)
        np.testing.assert_array_equal(retrieval.embed(text), encoder.embed(text))


def test_a_paraphrase_is_acted_on_as_the_trained_instruction_sharing_its_content():
    encoder = BagOfWordsEncoder()
    retrieval = RetrievingInstructionEncoder(encoder, TRAINED)
    match = retrieval.match("please shove the blue can over to the right zone")
    assert match.instruction == "push the blue can to the right zone"
    assert 0.0 < match.similarity < 1.0
    # the policy gets exactly the embedding it trained on
    np.testing.assert_array_equal(retrieval.embed("please shove the blue can over to the right zone"),
                                  encoder.embed(match.instruction))


def test_the_match_is_the_highest_cosine_among_the_trained_instructions():
    rng = np.random.default_rng(0)
    encoder = BagOfWordsEncoder(dim=32)
    trained = [" ".join(f"w{k}" for k in rng.integers(0, 40, size=6)) for _ in range(30)]
    retrieval = RetrievingInstructionEncoder(encoder, trained)
    for _ in range(20):
        query = " ".join(f"w{k}" for k in rng.integers(0, 40, size=5))
        q = encoder.embed(query)
        cosines = {text: float(encoder.embed(text) @ q / np.linalg.norm(encoder.embed(text))) for text in trained}
        match = retrieval.match(query)
        assert match.similarity == pytest.approx(max(cosines.values()), abs=1e-5)
        assert cosines[match.instruction] == pytest.approx(match.similarity, abs=1e-5)


def test_trained_instructions_are_embedded_in_one_batch_at_construction():
    encoder = BagOfWordsEncoder()
    RetrievingInstructionEncoder(encoder, [*TRAINED, TRAINED[0]])
    assert encoder.calls == 1          # one batch, before the first control step; duplicates once


@pytest.mark.parametrize("trained, message", [((), "needs the trained instructions"),
                                               (("push it", "  "), "non-empty strings")])
def test_bad_trained_instructions_are_refused_in_one_line(trained, message):
    with pytest.raises(ValueError, match=message) as error:
        RetrievingInstructionEncoder(BagOfWordsEncoder(), trained)
    assert "\n" not in str(error.value)


def test_an_empty_instruction_is_refused_as_the_encoder_refuses_it():
    with pytest.raises(ValueError, match="non-empty string"):
        RetrievingInstructionEncoder(BagOfWordsEncoder(), TRAINED).embed(" ")


def test_a_checkpoint_runs_with_retrieval_only_when_it_lists_its_instructions_and_it_is_on():
    encoder = BagOfWordsEncoder()
    listed = {"extra": {TRAINING_INSTRUCTIONS_KEY: list(TRAINED)}}
    assert isinstance(checkpoint_instruction_encoder(listed, encoder), RetrievingInstructionEncoder)
    assert checkpoint_instruction_encoder(listed, encoder, retrieval=False) is encoder
    assert checkpoint_instruction_encoder({"extra": {}}, encoder) is encoder


def test_the_sentence_encoder_embeds_a_batch_as_it_embeds_one_at_a_time():
    from vla3d_ros.bench.model_latency import HashInstructionEncoder

    encoder = HashInstructionEncoder()
    batch = encoder.embed_batch(list(TRAINED))
    assert batch.shape == (len(TRAINED), 384) and batch.dtype == np.float32
    np.testing.assert_allclose(batch, np.stack([encoder.embed(text) for text in TRAINED]), atol=1e-6)
    with pytest.raises(ValueError, match="non-empty strings"):
        encoder.embed_batch(["push it", ""])
