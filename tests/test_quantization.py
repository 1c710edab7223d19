"""int8 inference (s2t_hf/models/quantization.py): the output projection multiplies the int8
weights it claims to, a quantized Whisper ranks names as the float32 model does (scores within
a small distance), every family loads quantized through `S2T.from_pretrained` and the CLI, and
bad values are refused with the fix."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from s2t_hf.decoding.whisper import WhisperRanker, log_probabilities
from s2t_hf.evaluation.comparison import PredictionCache
from s2t_hf.inference.recognizer import S2T
from s2t_hf.models.quantization import Int8Projection, quantize_int8
from s2t_hf.text.lexicon import build_lexicon

from .families import whisper_tiny_en
from .test_whisper_ranking import NAMES, prompt_of, steered, tiny_whisper

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py; `tokenizer` comes from there too


@pytest.mark.parametrize("bias", [False, True])
def test_int8_projection_multiplies_its_dequantized_int8_weights(bias):
    torch.manual_seed(0)
    linear = torch.nn.Linear(32, 300, bias=bias)
    projection = Int8Projection(linear, chunk=64)
    # the weights it keeps are int8 values times one scale per row, within half a step of the originals
    scales = linear.weight.abs().amax(1, keepdim=True) / 127
    steps = projection.weight / scales
    torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-3)
    assert (projection.weight - linear.weight).abs().le(scales / 2 + 1e-7).all()
    assert not torch.equal(projection.weight, linear.weight)
    hidden = torch.randn(5, 32)
    exact = torch.nn.functional.linear(hidden, projection.weight, projection.bias)
    # the input is quantized too (8 bits over its range): errors of a few hundredths here
    logits = projection.vocabulary_logits(hidden, 64, 200)
    assert logits.shape == (5, 136)
    torch.testing.assert_close(logits, exact[:, 64:200], rtol=0, atol=0.05)
    assert (logits - exact[:, 64:200]).abs().max() > 0  # it is the int8 product, not the float one
    torch.testing.assert_close(projection(hidden[None])[0], projection.vocabulary_logits(hidden, 0, 300))
    with pytest.raises(ValueError, match="multiples of 64"):
        projection.vocabulary_logits(hidden, 10, 200)


def test_a_quantized_whisper_ranks_names_as_float32_does(tokenizer):
    lexicon = build_lexicon(NAMES)
    model = tiny_whisper(tokenizer, sharpness=3.0)
    texts = [" metformin", " Lipitor", " warfarin", " heparin"]
    hidden = steered(model, tokenizer, texts)
    quantized = quantize_int8(copy.deepcopy(model), chunk=64)
    assert isinstance(quantized.get_output_embeddings(), Int8Projection)
    assert quantized.model.decoder.embed_tokens.weight.dtype == torch.float32  # the embedding keeps float weights
    assert torch.equal(quantized.model.decoder.embed_tokens.weight, model.model.decoder.embed_tokens.weight)
    assert not any(type(module) is torch.nn.Linear for module in quantized.modules())
    ranker = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), prune_margin=5.0, top_k=3)
    exact, approximate = ranker.scores(model, hidden), ranker.scores(quantized, hidden)
    labels = [lexicon[index].label for index in approximate.argmax(1).tolist()]
    assert labels == [text.strip().lower() for text in texts]
    best = exact.topk(3, dim=1).indices
    difference = (approximate.gather(1, best) - exact.gather(1, best)).abs()
    assert difference[:, 0].max() < 0.25 and difference.max() < 1.0, difference  # close to float32's scores ...
    assert difference.max() > 1e-4  # ... but not float32's own
    # the search on the quantized model finds what exhaustive search on it finds (the rows share
    # products differently, so the inputs' int8 scales and the scores differ a little), and
    # log-probabilities stay <= 0
    exhaustive = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), prune_margin=None).scores(quantized, hidden)
    assert torch.equal(exhaustive.argmax(1), approximate.argmax(1))
    top = approximate.argmax(1, keepdim=True)
    torch.testing.assert_close(approximate.gather(1, top), exhaustive.gather(1, top), rtol=0, atol=0.25)
    states = torch.randn(6, model.config.d_model) * 3
    assert (log_probabilities(quantized.get_output_embeddings(), states, torch.arange(6), torch.arange(6)) <= 0).all()


def test_every_family_loads_quantized_and_recognises(untrained_model, tmp_path):
    """A CTC model (the mel-conformer) and an encoder-decoder (tiny random Whisper with the real
    tiny.en tokenizer) load with quantize="int8", keep no float linear layer, and answer as many names as the float model."""
    clip = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    for folder in (untrained_model, whisper_tiny_en(tmp_path / "whisper")):
        floats = S2T.from_pretrained(folder)
        int8 = S2T.from_pretrained(folder, quantize="int8")
        assert int8.quantization == "int8" and floats.quantization is None
        assert not any(type(module) is torch.nn.Linear for module in int8.model.modules())
        result, reference = int8.recognize((clip, 16000), top_k=3), floats.recognize((clip, 16000), top_k=3)
        assert len(result.candidates) == len(reference.candidates) > 0
        assert int8.restricted_to([int8.lexicon[0].name]).quantization == "int8"


def test_bad_quantization_values_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"quantize='int4'.*int8"):
        S2T.from_pretrained("any-folder", quantize="int4")
    with pytest.raises(ValueError, match=r"runs on the CPU, not on 'cuda'"):
        S2T.from_pretrained("any-folder", quantize="int8", device="cuda")


def test_quantized_predictions_are_cached_apart_from_float_ones(tmp_path, lexicon, untrained_model):
    cache = PredictionCache(tmp_path)
    rows = [{"path": "a.wav", "text": "metformin"}]
    floats, int8 = cache.path(untrained_model, lexicon, rows, None), cache.path(untrained_model, lexicon, rows, None, "int8")
    assert floats != int8 and "int8" in int8.name and "int8" not in floats.name


def test_cli_recognizes_with_quantize(untrained_model, corpus, capsys):
    from s2t_hf.cli import main

    folder, _ = corpus
    clip = sorted(folder.rglob("*.wav"))[0]
    assert main(["recognize", str(untrained_model), str(clip), "--quantize", "int8", "--json"]) == 0
    output = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert output["candidates"] and "transcript" in output
    with pytest.raises(SystemExit):
        main(["recognize", str(untrained_model), str(clip), "--quantize", "fp4"])
    assert "invalid choice: 'fp4'" in capsys.readouterr().err
