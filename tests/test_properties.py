"""Property-based tests (hypothesis): lexicon normalisation and CTC ranking hold for any input."""

from __future__ import annotations

import re
import string

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2t_hf.decoding.ctc import CTCRanker
from s2t_hf.models.processor import build_processor
from s2t_hf.text.lexicon import LexiconError, build_lexicon, normalize_name
from s2t_hf.text.vocabulary import encode_labels

LABEL = re.compile(r"[a-z]+( [a-z]+)*")


@given(st.text(max_size=40))
def test_normalisation_gives_a_clean_label_or_a_clear_error(name):
    try:
        label = normalize_name(name)
    except LexiconError as error:
        assert repr(name) in str(error)  # the error names the offending text
        return
    assert LABEL.fullmatch(label)
    assert normalize_name(label) == label  # idempotent
    assert normalize_name(name.upper()) == label  # case never matters


@given(st.lists(st.text(alphabet=string.ascii_letters + " -'.", min_size=1, max_size=15), min_size=1, max_size=20))
def test_lexicon_labels_are_unique_and_normalised(names):
    try:
        lexicon = build_lexicon(names)
    except LexiconError:
        return  # nothing speakable in the list: a clear error, tested elsewhere
    labels = [entry.label for entry in lexicon]
    assert len(labels) == len(set(labels))
    assert all(LABEL.fullmatch(label) for label in labels)


names = st.lists(st.text(alphabet="abcdel", min_size=1, max_size=6), min_size=1, max_size=12, unique=True)


def ranker_for(lexicon_names: list[str]):
    lexicon = build_lexicon(lexicon_names)
    tokenizer = build_processor(build_lexicon(["abcdel"])).tokenizer  # one vocabulary for every lexicon
    return lexicon, tokenizer, CTCRanker(lexicon, encode_labels(tokenizer, lexicon), tokenizer.pad_token_id)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names, st.integers(min_value=1, max_value=12), st.integers(min_value=0, max_value=2**31 - 1), st.randoms())
def test_ranking_stays_in_the_lexicon_and_ignores_its_order(lexicon_names, frames, seed, random):
    lexicon, tokenizer, ranker = ranker_for(lexicon_names)
    log_probs = torch.randn(2, frames, len(tokenizer), generator=torch.Generator().manual_seed(seed)).mul(3).log_softmax(-1)
    ranking = ranker.rank(log_probs, top_k=len(lexicon) + 3)
    assert ranking.indices.shape == (2, len(lexicon))  # never more names than the lexicon holds
    assert all(0 <= index < len(lexicon) for index in ranking.indices.flatten().tolist())
    assert (ranking.scores[:, :-1] >= ranking.scores[:, 1:]).all()  # best first

    shuffled = list(lexicon_names)
    random.shuffle(shuffled)
    shuffled_lexicon, _, shuffled_ranker = ranker_for(shuffled)
    scores = {entry.label: score for entry, score in zip(lexicon, ranker.scores(log_probs)[0].tolist())}
    shuffled_scores = {entry.label: score for entry, score in zip(shuffled_lexicon, shuffled_ranker.scores(log_probs)[0].tolist())}
    assert scores.keys() == shuffled_scores.keys()
    for label, score in scores.items():
        assert score == shuffled_scores[label] or abs(score - shuffled_scores[label]) < 1e-4


@settings(max_examples=30, deadline=None)
@given(st.text(alphabet="abcdel", min_size=1, max_size=6), st.integers(min_value=1, max_value=10))
def test_a_one_name_lexicon_always_returns_that_name(name, frames):
    lexicon, tokenizer, ranker = ranker_for([name])
    ranking = ranker.rank(torch.randn(1, frames, len(tokenizer)).log_softmax(-1), top_k=5)
    assert ranking.indices.tolist() == [[0]]
