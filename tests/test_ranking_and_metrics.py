import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from s2t_hf.decoding.ctc import CTCRanker, transcript_scores
from s2t_hf.decoding.fuzzy import fuzzy_rank
from s2t_hf.evaluation.metrics import build_compute_metrics, names_of, top_k_accuracy
from s2t_hf.models.processor import build_processor
from s2t_hf.text.lexicon import build_lexicon
from s2t_hf.text.vocabulary import encode_labels


def make_ranker(names):
    lexicon = build_lexicon(names)
    processor = build_processor(lexicon)
    ranker = CTCRanker(lexicon, encode_labels(processor.tokenizer, lexicon), processor.tokenizer.pad_token_id)
    return lexicon, processor.tokenizer, ranker


def spell(tokenizer, frames, vocab_size, confidence=0.9):
    """Log-probabilities whose frames spell `frames` (None = blank) with `confidence`."""
    probs = torch.full((len(frames), vocab_size), (1 - confidence) / (vocab_size - 1))
    for index, char in enumerate(frames):
        token = tokenizer.pad_token_id if char is None else tokenizer.convert_tokens_to_ids(char)
        probs[index, token] = confidence
    return probs.log()


def test_ctc_ranking_finds_the_spoken_name():
    lexicon, tokenizer, ranker = make_ranker(["cat", "act", "tact", "at"])
    log_probs = spell(tokenizer, [None, "c", "c", None, "a", "t", None], len(tokenizer)).unsqueeze(0)
    ranking = ranker.rank(log_probs, top_k=4)
    assert [lexicon[i].label for i in ranking.indices[0]][0] == "cat"
    assert ranking.scores[0].tolist() == sorted(ranking.scores[0].tolist(), reverse=True)


def test_double_letters_need_a_blank_between_them():
    lexicon, tokenizer, ranker = make_ranker(["ala", "alla"])
    with_blank = spell(tokenizer, ["a", "l", None, "l", "a"], len(tokenizer))
    without_blank = spell(tokenizer, ["a", "l", "l", "l", "a"], len(tokenizer))
    ranked = ranker.rank(torch.stack([with_blank, without_blank]), top_k=1).indices[:, 0].tolist()
    assert [lexicon[i].label for i in ranked] == ["alla", "ala"]


def test_lengths_ignore_padding_frames_and_too_long_names_rank_last():
    lexicon, tokenizer, ranker = make_ranker(["ab", "abcdefgh"])
    log_probs = spell(tokenizer, ["a", "b", None, "c", "d", "e", "f", "g"], len(tokenizer)).unsqueeze(0)
    scores = ranker.scores(log_probs, lengths=torch.tensor([3]))
    assert scores[0, 1] == -float("inf")
    assert torch.isfinite(scores[0, 0])
    assert ranker.rank(log_probs, lengths=torch.tensor([3]), top_k=2).indices[0].tolist() == [0, 1]


def test_prefix_tree_scores_equal_ctc_loss_for_every_name():
    # shared prefixes, a name that is a prefix of another, double letters, and clips of 1..20 frames
    names = ["metformin", "metoprolol", "met", "warfarin", "heparin", "hep", "alla", "ala", "all", "penicillin", "a"]
    lexicon, tokenizer, ranker = make_ranker(names)
    lengths = torch.tensor([20, 15, 9, 3, 1])
    log_probs = torch.randn(len(lengths), 20, len(tokenizer)).mul(3).log_softmax(-1)
    label_ids = encode_labels(tokenizer, lexicon)
    expected = torch.empty(len(lengths), len(names))
    for clip, length in enumerate(lengths.tolist()):
        for name, ids in enumerate(label_ids):
            nll = torch.nn.functional.ctc_loss(
                log_probs[clip, :length].unsqueeze(1), torch.tensor([ids]), torch.tensor([length]), torch.tensor([len(ids)]),
                blank=tokenizer.pad_token_id, reduction="none",
            )
            expected[clip, name] = -nll[0] / len(ids)
    scores = ranker.scores(log_probs, lengths)
    assert torch.equal(torch.isinf(scores), torch.isinf(expected))  # unalignable names agree
    finite = torch.isfinite(expected)
    torch.testing.assert_close(scores[finite], expected[finite], rtol=1e-5, atol=1e-4)


def spellings(ids, word_break):
    """Every way of writing a label with its word breaks optional: between words and at both ends."""
    words, word = [], []
    for token in ids:
        if token == word_break:
            words.append(word)
            word = []
        else:
            word.append(token)
    words.append(word)
    choices = []
    for pattern in range(2 ** (len(words) + 1)):  # bit i: a break before word i (the last bit: after the last word)
        spelled = []
        for position, word in enumerate(words):
            spelled += ([word_break] if pattern >> position & 1 else []) + word
        choices.append(spelled + ([word_break] if pattern >> len(words) & 1 else []))
    return choices


def brute_force_log_likelihood(log_probs, length, alternatives, blank):
    """log of the summed CTC likelihood of each alternative label, by `ctc_loss` one at a time."""
    totals = [
        -torch.nn.functional.ctc_loss(
            log_probs[:length].unsqueeze(1), torch.tensor([ids]), torch.tensor([length]), torch.tensor([len(ids)]),
            blank=blank, reduction="none", zero_infinity=False,
        )[0]
        for ids in alternatives
    ]
    return torch.logsumexp(torch.stack(totals), 0)


def test_optional_word_breaks_sum_every_spelling_exactly():
    # multi-word and hyphenated names (a shared first word), a name whose last letter is the next
    # word's first ('a|a': repeated across a skipped break, needing a blank), and one-letter words
    names = ["insulin glargine", "insulin lispro", "insulin", "co-trimoxazole", "alla alla", "a a", "a", "metformin"]
    lexicon = build_lexicon(names)
    tokenizer = build_processor(lexicon).tokenizer
    word_break = tokenizer.convert_tokens_to_ids("|")
    ranker = CTCRanker.for_tokenizer(lexicon, tokenizer)
    assert ranker.word_break == word_break
    label_ids = encode_labels(tokenizer, lexicon)
    assert word_break in label_ids[0] and word_break in label_ids[3]  # the space and the hyphen are word breaks
    lengths = torch.tensor([40, 25, 4, 1])
    logits = torch.randn(len(lengths), 40, len(tokenizer)).mul(3)
    logits[..., word_break] += 2.0  # breaks likely enough that every spelling counts
    log_probs = logits.log_softmax(-1)
    scores = ranker.log_likelihoods(log_probs, lengths)
    for clip, length in enumerate(lengths.tolist()):
        for name, ids in enumerate(label_ids):
            expected = brute_force_log_likelihood(log_probs[clip], length, spellings(ids, word_break), tokenizer.pad_token_id)
            if torch.isinf(expected):
                assert torch.isinf(scores[clip, name]), (names[name], length)
            else:
                torch.testing.assert_close(scores[clip, name], expected, rtol=1e-5, atol=1e-4)
    # divided by the label's length as written (an inner break counts, the optional ones at the ends do not)
    assert ranker.label_lengths.tolist()[:3] == [16, 14, 7]
    torch.testing.assert_close(ranker.scores(log_probs, lengths, 0.5), scores / ranker.label_lengths ** 0.5)


def test_a_name_said_with_word_breaks_around_it_still_wins():
    # a LibriSpeech-style head ends words with '|': without optional breaks 'insulin' would need
    # its final frames spent on letters, and the model's '|' frames would count against it
    lexicon = build_lexicon(["insulin", "insulins"])
    tokenizer = build_processor(lexicon).tokenizer
    heard = spell(tokenizer, ["|", "i", "n", "s", "u", "l", "i", "n", "|", "|"], len(tokenizer)).unsqueeze(0)
    with_breaks = CTCRanker.for_tokenizer(lexicon, tokenizer)
    without = CTCRanker(lexicon, encode_labels(tokenizer, lexicon), tokenizer.pad_token_id)
    assert with_breaks.rank(heard, top_k=1).indices[0, 0] == 0
    assert with_breaks.scores(heard)[0, 0] > without.scores(heard)[0, 0] + 0.5


def test_transcripts_are_scored_like_names():
    lexicon = build_lexicon(["insulin glargine", "warfarin"])
    tokenizer = build_processor(lexicon).tokenizer
    ranker = CTCRanker.for_tokenizer(lexicon, tokenizer)
    log_probs = torch.randn(3, 30, len(tokenizer)).mul(3).log_softmax(-1)
    lengths = torch.tensor([30, 30, 12])
    ids = encode_labels(tokenizer, lexicon)
    # a transcript that spells a name scores as that name does, whatever breaks it was written with
    with_edges = [ranker.word_break, *ids[0], ranker.word_break]
    own = transcript_scores(log_probs, lengths, [with_edges, ids[1], []], tokenizer.pad_token_id, ranker.word_break, 0.7)
    names = ranker.scores(log_probs, lengths, 0.7)
    torch.testing.assert_close(own[:2], torch.stack([names[0, 0], names[1, 1]]))
    # an empty transcript: all blank, or a lone break, over a length of one
    all_blank = log_probs[2, :12, tokenizer.pad_token_id].sum()
    alone = brute_force_log_likelihood(log_probs[2], 12, [[ranker.word_break]], tokenizer.pad_token_id)
    torch.testing.assert_close(own[2], torch.logaddexp(all_blank, alone))


def test_fuzzy_baseline_ranks_by_spelling():
    lexicon = build_lexicon(["metformin", "metoprolol", "warfarin"])
    assert fuzzy_rank(["metforman", "wafarin"], lexicon, top_k=2)[:, 0].tolist() == [0, 2]


def test_top_k_accuracy_goes_through_the_metric_module():
    lexicon = build_lexicon(["a a", "b", "c"])
    ranked = names_of(np.array([[0, 1, 2], [2, 0, 1], [1, 2, 0], [1, 2, 0]]), lexicon)
    assert ranked[0] == ["a a", "b", "c"]
    assert top_k_accuracy(ranked, ["a a", "a a", "a a", "not in lexicon"], max_k=3) == {"top1": 0.25, "top2": 0.5, "top3": 0.75}
    with pytest.raises(ValueError, match="2 rankings for 1 references"):
        top_k_accuracy(ranked[:2], ["b"])


def test_compute_metrics_reports_ctc_fuzzy_and_cer():
    lexicon, tokenizer, _ = make_ranker(["metformin", "warfarin", "heparin"])
    labels = tokenizer(["warfarin", "heparin"]).input_ids
    label_ids = np.full((2, 8), -100)
    for row, ids in enumerate(labels):
        label_ids[row, : len(ids)] = ids
    greedy = np.full((2, 10), -100)
    spoken = tokenizer("warfarin").input_ids  # clip 1 transcribed right, clip 2 wrongly as warfarin
    greedy[0, : len(spoken)] = spoken
    greedy[1, : len(spoken)] = spoken
    ranked = np.array([[1, 0, 2], [0, 2, 1]])
    metrics = build_compute_metrics(lexicon, tokenizer)(EvalPrediction(predictions=(ranked, greedy), label_ids=label_ids))
    assert metrics["top1"] == 0.5 and metrics["top2"] == 1.0
    assert metrics["fuzzy_top1"] == 0.5
    assert 0 < metrics["cer"] < 1
