"""WhisperRanker (s2t_hf/decoding/whisper.py): its prefix-tree search scores every name as
teacher forcing each spelling through Hugging Face's Whisper does, pruning keeps the best names
exact, and a clip scores the same alone and in a batch.

Everything is built here, in a second: a small byte-level BPE tokenizer (a `WhisperTokenizer`
like the real one, trained on the test names) and tiny random Whisper models. No download, no
optional package, nothing to skip.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizer

from s2t_hf.decoding.whisper import SPELLINGS, TokenTree, WhisperRanker, _cross_keys_values, _parts, decoder_states
from s2t_hf.text.lexicon import build_lexicon

NAMES = [
    "metformin", "metoprolol", "methotrexate", "methadone", "lisinopril", "losartan", "lorazepam", "atorvastatin",
    "amlodipine", "amoxicillin", "warfarin", "heparin", "ibuprofen", "insulin lispro", "prednisone", "prednisolone",
    "Lipitor", "Plavix", "Paxil", "Prozac", "St. John's wort",
]
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"]


def build_tokenizer() -> WhisperTokenizer:
    """A Whisper byte-level BPE tokenizer with a few hundred tokens, trained on the test names
    in both cases, so names share some prefix tokens and split into several tokens."""
    texts = [" ".join(NAMES), " ".join(name.capitalize() for name in NAMES), "the patient takes a tablet of it."]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in state["merges"]]
    whisper = WhisperTokenizer(vocab=state["vocab"], merges=merges)
    whisper.add_special_tokens({"additional_special_tokens": SPECIALS})
    return whisper


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py; `tokenizer` (build_tokenizer's) comes from there too


def prompt_of(tokenizer) -> list[int]:
    return tokenizer.convert_tokens_to_ids(SPECIALS[1:])


def tiny_whisper(tokenizer, seed: int = 0, sharpness: float = 1.0) -> WhisperForConditionalGeneration:
    """A random 2-layer Whisper of d_model 32; `sharpness` scales the (tied) token embedding,
    which makes the next-token distributions peaked and the names' scores far apart."""
    torch.manual_seed(seed)
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = WhisperConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=32, max_target_positions=48, num_mel_bins=8,
        pad_token_id=end, bos_token_id=end, eos_token_id=end, decoder_start_token_id=prompt_of(tokenizer)[0], init_std=0.2,
    )
    model = WhisperForConditionalGeneration(config).eval().requires_grad_(False)
    with torch.no_grad():
        model.model.decoder.embed_tokens.weight.mul_(sharpness)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()  # tied, as in Whisper
    return model


def encoder_output(model, clips: int = 1, frames: int = 20, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(clips, frames, model.config.d_model, generator=generator)


def steered(model, tokenizer, texts: list[str], frames: int = 20, steps: int = 40) -> torch.Tensor:
    """Encoder outputs (clips, frames, d_model) under which the model writes `texts`: random
    frames moved by gradient ascent on the texts' log-probability. A random model is unsure of
    everything; these clips make it sure of one name, like a trained model hearing it, so the
    names' scores stand far apart and pruning has something to prune."""
    decoder, projection = _parts(model)
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    prompt = prompt_of(tokenizer)
    clips = []
    for index, text in enumerate(texts):
        ids = torch.tensor([prompt + tokenizer.encode(text, add_special_tokens=False) + [end]])
        hidden = torch.randn(frames, model.config.d_model, generator=torch.Generator().manual_seed(index)).requires_grad_(True)
        optimiser = torch.optim.Adam([hidden], lr=0.2)
        for _ in range(steps):
            with torch.enable_grad():
                states, _ = decoder_states(decoder, ids[:, :-1], _cross_keys_values(decoder, hidden))
                logits = projection(states[0, len(prompt) - 1 :])
                loss = torch.nn.functional.cross_entropy(logits, ids[0, len(prompt) :], reduction="sum")
                optimiser.zero_grad()
                loss.backward()
            optimiser.step()
        clips.append(hidden.detach())
    return torch.stack(clips)


@torch.no_grad()
def teacher_forced(model, hidden: torch.Tensor, prompt: list[int], rows: list[list[int]]) -> torch.Tensor:
    """log P(tokens | prompt, one clip's encoder output) of each row, from Hugging Face's own
    forward (rows padded on the right: the causal mask keeps padding out of the real positions)."""
    longest = max(map(len, rows))
    ids = torch.tensor([prompt + row + [0] * (longest - len(row)) for row in rows])
    targets = ids[:, len(prompt) :]
    logits = model(encoder_outputs=(hidden[None].expand(len(rows), -1, -1),), decoder_input_ids=ids[:, :-1]).logits.float()
    log_probs = logits.log_softmax(-1)[:, len(prompt) - 1 :].gather(-1, targets[..., None])[..., 0]
    real = torch.arange(longest)[None, :] < torch.tensor([len(row) for row in rows])[:, None]
    return (log_probs * real).sum(-1)


def brute_force(ranker: WhisperRanker, model, hidden: torch.Tensor) -> torch.Tensor:
    """Every name's score by teacher forcing each of its spellings on its own: (clips, names)."""
    result = torch.empty(len(hidden), len(ranker))
    for clip in range(len(hidden)):
        per_sequence = teacher_forced(model, hidden[clip], ranker.prompt_ids, [list(ids) for ids in ranker.sequences])
        result[clip] = torch.cat([per_sequence, torch.tensor([-float("inf")])])[ranker.name_rows].logsumexp(-1)
    return result


def test_token_tree_numbers_the_distinct_prefixes_as_sorting_them_does():
    """The tree, built with array operations, against its definition: the distinct prefixes
    of the sequences, sorted (preorder, siblings by token), each node's parent its prefix less
    one token; sequences that repeat, or that are prefixes of others, included."""
    rng = random.Random(0)
    for _ in range(200):
        sequences = [tuple(rng.randrange(4) for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 30))]
        sequences += [ids[: rng.randint(1, len(ids))] for ids in rng.sample(sequences, min(3, len(sequences)))]
        prefixes = sorted({ids[:depth] for ids in sequences for depth in range(len(ids) + 1)})
        node_of = {prefix: node for node, prefix in enumerate(prefixes)}
        tree = TokenTree(sequences)
        assert tree.parents[1:].tolist() == [node_of[prefix[:-1]] for prefix in prefixes[1:]]
        assert tree.tokens[1:].tolist() == [prefix[-1] for prefix in prefixes[1:]]
        assert tree.depth.tolist() == [len(prefix) for prefix in prefixes]
        assert tree.leaf_of_sequence.tolist() == [node_of[ids] for ids in sequences]
        assert all(tree.paths[node, : len(prefix)].tolist() == [node_of[prefix[:depth]] for depth in range(1, len(prefix) + 1)]
                   for node, prefix in enumerate(prefixes))


def test_token_tree_is_a_preorder_prefix_tree():
    tree = TokenTree([(5, 6, 1), (5, 7, 1), (8, 1), (5, 6, 9, 1)])
    # preorder: ancestors first, each subtree contiguous
    assert all(int(tree.parents[node]) < node for node in range(1, len(tree)))
    for node in range(len(tree)):
        inside = torch.arange(node + 1, int(tree.subtree_end[node]))
        assert all(int(tree.paths[inner, int(tree.depth[node]) - 1]) == node for inner in inside.tolist() if node)
    assert len(tree) == 1 + 9  # root; 5; 5 6; 5 6 1; 5 6 9; 5 6 9 1; 5 7; 5 7 1; 8; 8 1
    for ids, leaf in zip([(5, 6, 1), (5, 7, 1), (8, 1), (5, 6, 9, 1)], tree.leaf_of_sequence.tolist()):
        path = tree.paths[leaf, : len(ids)]
        assert tree.tokens[path].tolist() == list(ids)
        assert not tree.internal[leaf]
    children, rows = tree.children_of(torch.tensor([0, int(tree.paths[tree.leaf_of_sequence[0], 1])]))
    assert sorted(tree.tokens[children[rows == 0]].tolist()) == [5, 8]
    assert sorted(tree.tokens[children[rows == 1]].tolist()) == [1, 9]


def test_decoder_forward_equals_hugging_face(tokenizer):
    model = tiny_whisper(tokenizer)
    decoder, projection = _parts(model)
    generator = torch.Generator().manual_seed(3)
    hidden = encoder_output(model, clips=2)
    ids = torch.randint(0, len(tokenizer), (2, 9), generator=generator)
    with torch.no_grad():
        reference = projection(model.model.decoder(input_ids=ids, encoder_hidden_states=hidden, use_cache=False).last_hidden_state)
        for clip in range(2):
            states, _ = decoder_states(decoder, ids[clip : clip + 1], _cross_keys_values(decoder, hidden[clip]))
            torch.testing.assert_close(projection(states)[0], reference[clip], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path_cache", [True, False])
@pytest.mark.parametrize("spellings", ["zero_shot", "label"])
def test_exhaustive_scores_equal_teacher_forcing_every_spelling(tokenizer, spellings, path_cache):
    lexicon = build_lexicon(NAMES)
    model = tiny_whisper(tokenizer)
    ranker = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), spellings=spellings, prune_margin=None, max_batch_nodes=7, path_cache=path_cache)
    assert ranker.name_rows.shape[1] == (1 if spellings == "label" else 3)  # " st johns wort", " St johns wort", " St. John's wort"
    hidden = encoder_output(model, clips=2)
    scores = ranker.scores(model, hidden)
    torch.testing.assert_close(scores, brute_force(ranker, model, hidden), rtol=0, atol=1e-4)
    assert all(stats["nodes_expanded"] == int(ranker.tree.internal.sum()) for stats in ranker.last_stats)  # the whole tree


def test_a_name_scores_the_logsumexp_of_its_spellings(tokenizer):
    lexicon = build_lexicon(NAMES[:6])
    model = tiny_whisper(tokenizer)
    hidden = encoder_output(model)
    both = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), spellings="zero_shot", prune_margin=None).scores(model, hidden)
    each = [
        WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), spellings=spell, prune_margin=None).scores(model, hidden)
        for spell in (lambda entry: [" " + entry.label], lambda entry: [" " + entry.label.capitalize()])
    ]
    torch.testing.assert_close(both, torch.logaddexp(*each), rtol=0, atol=1e-5)
    for single in each:
        assert (single < both).all()
    # spellings that tokenise alike count once, and names may share a spelling
    twice = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), spellings=lambda entry: [" metformin", " metformin"], prune_margin=None)
    shared = twice.scores(model, hidden)
    assert len(twice.sequences) == 1 and torch.equal(shared, shared[:, :1].expand_as(shared))
    torch.testing.assert_close(shared[0, 0], each[0][0, 0], rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def sure_clips(tokenizer):
    """A model and three clips it is sure of: metformin, Lipitor, warfarin."""
    model = tiny_whisper(tokenizer, sharpness=3.0)
    return model, steered(model, tokenizer, [" metformin", " Lipitor", " warfarin"])


@pytest.mark.parametrize("top_k, margin", [(1, 0.0), (3, 0.0), (1, 40.0), (1, 1e9)])
def test_pruned_search_keeps_the_best_names_exact(tokenizer, sure_clips, top_k, margin):
    lexicon = build_lexicon(NAMES)
    model, hidden = sure_clips
    exhaustive = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), prune_margin=None).scores(model, hidden)
    assert [lexicon[index].label for index in exhaustive.argmax(1).tolist()] == ["metformin", "lipitor", "warfarin"]
    top = exhaustive.topk(2, dim=1).values
    assert (top[:, 0] - top[:, 1] > 10).all()  # well separated
    ranker = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), prune_margin=margin, top_k=top_k, round_size=2, round_band=1.0)
    pruned = ranker.scores(model, hidden)
    best = exhaustive.topk(top_k, dim=1)
    assert torch.equal(pruned.topk(top_k, dim=1).indices, best.indices)
    torch.testing.assert_close(pruned.gather(1, best.indices), best.values, rtol=0, atol=1e-4)
    # every finite score is exact, and every name the result promises is there
    finite = torch.isfinite(pruned)
    torch.testing.assert_close(pruned[finite], exhaustive[finite], rtol=0, atol=1e-4)
    threshold = torch.minimum(best.values[:, -1], best.values[:, 0] - margin)
    assert finite[exhaustive >= threshold[:, None]].all()
    internal = int(ranker.tree.internal.sum())
    expanded = [stats["nodes_expanded"] for stats in ranker.last_stats]
    assert all(stats["exact"] for stats in ranker.last_stats)
    if margin == 1e9:
        assert finite.all()
    elif top_k == 1 and margin == 0.0:
        assert max(expanded) < internal / 3, (expanded, internal)  # most of the tree is never expanded
        assert (finite.sum(1) <= len(lexicon) // 4).all()  # names reached on the way are exact too
    else:
        assert max(expanded) < internal and (~finite).any()


@pytest.mark.parametrize("top_k, margin", [(1, 0.0), (4, 0.0), (2, 3.0)])
def test_bounded_nodes_are_projected_only_when_needed_and_scores_stay_exact(tokenizer, top_k, margin):
    """A model whose probability mass sits on the tree's tokens, so the logsumexp over them
    bounds tightly: some expanded nodes are never projected onto the whole vocabulary, others
    rounds after their expansion, and every score the search returns is still exact."""
    lexicon = build_lexicon(NAMES)
    model = tiny_whisper(tokenizer, sharpness=3.0)
    ranker = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), prune_margin=margin, top_k=top_k, round_size=2, round_band=0.5, lookahead=0)
    in_tree = torch.zeros(len(tokenizer), dtype=torch.bool)
    in_tree[torch.unique(ranker.tree.tokens[1:])] = True
    in_tree[prompt_of(tokenizer)] = True
    with torch.no_grad():
        model.model.decoder.embed_tokens.weight[~in_tree] *= 0.05  # other tokens: logits near 0
    hidden = torch.cat([encoder_output(model, clips=2, seed=7), steered(model, tokenizer, [" Paxil"])])
    exhaustive = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), prune_margin=None).scores(model, hidden)
    pruned = ranker.scores(model, hidden)
    best = exhaustive.topk(top_k, dim=1)
    assert torch.equal(pruned.topk(top_k, dim=1).indices, best.indices)
    finite = torch.isfinite(pruned)
    torch.testing.assert_close(pruned[finite], exhaustive[finite], rtol=0, atol=1e-4)
    threshold = torch.minimum(best.values[:, -1], best.values[:, 0] - margin)
    assert finite[exhaustive >= threshold[:, None]].all()
    stats = ranker.last_stats
    assert sum(s["projections"] for s in stats) < sum(s["nodes_expanded"] for s in stats)  # some never projected
    assert sum(s["projected_later"] for s in stats) > 0  # and some projected in a later round


@pytest.mark.parametrize("margin", [None, 0.0])
def test_a_clip_scores_the_same_alone_and_in_a_padded_batch(tokenizer, sure_clips, margin):
    lexicon = build_lexicon(NAMES)
    model, _ = sure_clips
    ranker = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), prune_margin=margin, top_k=2, round_size=2, round_band=1.0)
    lengths = [7, 20, 13]
    clips = [steered(model, tokenizer, [text], frames=length)[0] for text, length in zip([" Lipitor", " metformin", " heparin"], lengths)]
    batch = torch.randn(3, 20, model.config.d_model) * 5  # padding that would change every score if attended to
    for clip, frames in enumerate(clips):
        batch[clip, : len(frames)] = frames
    mask = (torch.arange(20)[None, :] < torch.tensor(lengths)[:, None]).long()
    together = ranker.scores(model, batch, mask)
    together_stats = ranker.last_stats
    if margin is not None:
        assert len({stats["nodes_expanded"] for stats in together_stats}) > 1  # the clips' searches differ
    for clip, frames in enumerate(clips):
        alone = ranker.scores(model, frames[None])
        assert torch.equal(torch.isfinite(alone[0]), torch.isfinite(together[clip]))
        finite = torch.isfinite(alone[0])
        torch.testing.assert_close(alone[0][finite], together[clip][finite], rtol=1e-6, atol=1e-5)
        assert ranker.last_stats[0]["nodes_expanded"] == together_stats[clip]["nodes_expanded"]
    assert not torch.equal(ranker.scores(model, batch)[0], together[0])  # the mask mattered


def test_transcript_scores_are_teacher_forced_and_on_the_names_scale(tokenizer):
    lexicon = build_lexicon(NAMES)
    model = tiny_whisper(tokenizer)
    hidden = encoder_output(model, clips=2)
    ranker = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), spellings="label", prune_margin=None)
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    transcripts = ["The patient takes metformin.", ""]
    own = ranker.transcript_scores(model, hidden, None, transcripts)
    expected = [teacher_forced(model, hidden[0], ranker.prompt_ids, [tokenizer.encode(" The patient takes metformin.", add_special_tokens=False) + [end]]),
                teacher_forced(model, hidden[1], ranker.prompt_ids, [[end]])]
    torch.testing.assert_close(own, torch.cat(expected), rtol=0, atol=1e-4)
    # a transcript that is a name's spelling scores what the name does
    names = ranker.scores(model, hidden)
    as_text = ranker.transcript_scores(model, hidden, None, ["lisinopril", "warfarin"])
    torch.testing.assert_close(as_text, torch.stack([names[0, 4], names[1, 10]]), rtol=0, atol=1e-5)


def test_a_capped_search_reports_whether_it_is_proven(tokenizer):
    lexicon = build_lexicon(NAMES)
    model = tiny_whisper(tokenizer, sharpness=2.0)
    hidden = encoder_output(model, clips=2)
    exhaustive = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), prune_margin=None).scores(model, hidden)
    capped = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), top_k=5, max_expansions=6, round_size=2)
    scores = capped.scores(model, hidden)
    for clip, stats in enumerate(capped.last_stats):
        assert stats["nodes_expanded"] <= 6
        assert not stats["exact"]  # 6 nodes cannot prove a top 5 in this flat model
        finite = torch.isfinite(scores[clip])
        torch.testing.assert_close(scores[clip][finite], exhaustive[clip][finite], rtol=0, atol=1e-4)  # what it scored is exact


def test_presets_and_bad_arguments(tokenizer):
    entry = build_lexicon(["Arnuity Ellipta"])[0]
    assert SPELLINGS["zero_shot"](entry) == [" arnuity ellipta", " Arnuity ellipta", " Arnuity Ellipta"]
    assert SPELLINGS["label"](entry) == [" arnuity ellipta"]
    lexicon = build_lexicon(NAMES[:3])
    with pytest.raises(ValueError, match="prompt"):
        WhisperRanker(lexicon, tokenizer, [])
    with pytest.raises(ValueError, match="prune_margin"):
        WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), prune_margin=-1.0)
    ranker = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer))
    assert len(ranker) == 3 and ranker.lexicon is lexicon and ranker.tokenizer is tokenizer


def test_results_list_only_the_names_the_search_ranked():
    """Names a pruned search left at -inf (proved far below the best) are not candidates: a
    result may list fewer than top_k names, with probabilities over the ranked ones."""
    from s2t_hf.inference.calibration import Calibration
    from s2t_hf.inference.recognizer import S2T, BatchScores
    from s2t_hf.text.lexicon import DrugName

    recogniser = S2T.__new__(S2T)  # results() needs only the lexicon, the calibration and the sound-alike partners
    recogniser.lexicon = [DrugName(name, name) for name in ("abacavir", "baclofen", "captopril", "dapsone")]
    recogniser.calibration = Calibration()
    recogniser.sound_alike = {}
    inf = float("inf")
    batch = BatchScores(["abacavir"], torch.tensor([[-0.1, -inf, -3.0, -inf]]), torch.tensor([-0.1]))
    (result,) = recogniser.results(batch, top_k=5)
    assert [candidate.name for candidate in result.candidates] == ["abacavir", "captopril"]
    assert sum(candidate.probability for candidate in result.candidates) == pytest.approx(1.0, abs=1e-3)
    assert result.decision == "abacavir"


def test_max_gap_ranks_exactly_the_names_within_it_and_no_others(tokenizer, sure_clips):
    lexicon = build_lexicon(NAMES)
    model, hidden = sure_clips
    exhaustive = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), prune_margin=None).scores(model, hidden)
    gap = 10.0
    ranker = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), top_k=5, max_gap=gap)
    pruned = ranker.scores(model, hidden)
    within = exhaustive >= exhaustive.max(1, keepdim=True).values - gap
    finite = torch.isfinite(pruned)
    assert finite[within].all()  # every name within the gap is ranked ...
    torch.testing.assert_close(pruned[finite], exhaustive[finite], rtol=0, atol=1e-4)  # ... exactly
    assert (finite.sum(1) < 5).all()  # these clips are sure: fewer than five names come within 10 nats
    unbounded = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), top_k=5)
    unbounded.scores(model, hidden)
    work = lambda stats: sum(clip["nodes_expanded"] for clip in stats)  # noqa: E731
    assert work(ranker.last_stats) < work(unbounded.last_stats)


def test_generated_ids_are_scored_as_generated_after_the_prompt(tokenizer):
    lexicon = build_lexicon(NAMES)
    model = tiny_whisper(tokenizer)
    hidden = encoder_output(model, clips=2)
    ranker = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), spellings="label", prune_margin=None)
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    metformin = tokenizer.encode(" metformin", add_special_tokens=False)
    generated = torch.tensor([ranker.prompt_ids + metformin + [end, end], ranker.prompt_ids + [end] * (len(metformin) + 2)])
    scores = ranker.generated_scores(model, hidden, None, generated)
    expected = ranker.sequence_scores(model, hidden, None, [metformin + [end], [end]])
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-6)
    too_long = torch.tensor([ranker.prompt_ids + metformin * 300])  # longer than the 448 decoder positions
    assert torch.isfinite(ranker.generated_scores(model, hidden[:1], None, too_long)).all()


def test_greedy_transcript_is_generates_and_scored_as_teacher_forcing(tokenizer, sure_clips):
    """`transcribe_and_score` decodes the transcript with the ranker's own decoder pass: the ids
    Hugging Face's greedy `generate` writes (suppressed tokens and all; <|endoftext|> forced at
    the length limit), the score of teacher forcing them, and the names' scores of `scores`."""
    from transformers import GenerationConfig
    from transformers.modeling_outputs import BaseModelOutput

    lexicon = build_lexicon(NAMES)
    model, clips = sure_clips
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    metformin = tokenizer.encode(" metformin", add_special_tokens=False)
    ending = tiny_whisper(tokenizer, sharpness=3.0)  # ends soon: <|endoftext|> outscores most tokens
    with torch.no_grad():
        ending.model.decoder.layer_norm.bias.fill_(1.0)
        ending.model.decoder.embed_tokens.weight[end] = 0.5
    hidden = torch.cat([clips, encoder_output(model, clips=3, seed=4)])
    ranker = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), spellings="label", prune_margin=0.0, top_k=3)
    limit = model.config.max_target_positions - len(ranker.prompt_ids)
    lengths = []
    kept = model.generation_config  # the module's model: given back as found
    for tested in (model, ending):
        tested.generation_config = GenerationConfig(
            decoder_start_token_id=prompt_of(tokenizer)[0], eos_token_id=end, pad_token_id=end,
            max_length=tested.config.max_target_positions,
            suppress_tokens=[metformin[0], 5, 7], begin_suppress_tokens=[end],
        )
        generated, scores, own = ranker.transcribe_and_score(tested, hidden, top_k=3)
        prompt = torch.tensor([ranker.prompt_ids] * len(hidden))
        with torch.no_grad():
            encoded = BaseModelOutput(last_hidden_state=hidden)
            expected = tested.generate(encoder_outputs=encoded, decoder_input_ids=prompt, num_beams=1, do_sample=False)
        for ours, theirs in zip(generated.tolist(), expected.tolist()):
            assert ours[: len(ranker.prompt_ids)] == ranker.prompt_ids
            ours = ours[len(ranker.prompt_ids) : ours.index(end) + 1]
            if theirs[: len(ranker.prompt_ids)] == ranker.prompt_ids:  # Whisper's generate returns the text alone
                theirs = theirs[len(ranker.prompt_ids) :]
            assert metformin[0] not in ours and ours[0] != end  # suppressed; <|endoftext|> not first
            text = theirs[: theirs.index(end)] if end in theirs else theirs  # generate may leave <|endoftext|> out
            if len(text) < limit:
                assert ours == text + [end]
            else:  # generate stopped at the limit; our transcript ends there, with <|endoftext|>
                assert len(ours) == limit and ours[:-1] == text[: limit - 1]
            lengths.append(len(ours))
        torch.testing.assert_close(own, ranker.generated_scores(tested, hidden, None, generated), rtol=0, atol=1e-4)
        torch.testing.assert_close(scores, ranker.scores(tested, hidden, None, 3), rtol=0, atol=1e-5)
    assert limit in lengths and min(lengths) < 5  # the random model runs to the limit, the other ends at once
    # max_new_tokens counts text tokens, as generate's does; the transcript then ends with <|endoftext|>
    short, _, _ = ranker.transcribe_and_score(model, hidden, max_new_tokens=5)
    with torch.no_grad():
        expected = model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), decoder_input_ids=prompt, max_new_tokens=5)
    for ours, theirs in zip(short.tolist(), expected.tolist()):
        ours = ours[len(ranker.prompt_ids) : ours.index(end) + 1]
        theirs = theirs[len(ranker.prompt_ids) :] if theirs[: len(ranker.prompt_ids)] == ranker.prompt_ids else theirs
        text = theirs[: theirs.index(end)] if end in theirs else theirs
        assert ours == text[:5] + [end]
    model.generation_config = kept
    assert ranker.transcribe_and_score(model, hidden[:0])[1].shape == (0, len(lexicon))


def test_clips_of_one_length_score_the_same_alone_and_together(tokenizer, sure_clips):
    """Clips of Whisper's fixed window share a batch through stacked cross-attention keys (one
    product per layer for all clips, rows padded per clip): each clip's scores and search are
    what it gets alone."""
    lexicon = build_lexicon(NAMES)
    model, hidden = sure_clips
    ranker = WhisperRanker(lexicon, tokenizer, prompt_of(tokenizer), prune_margin=3.0, top_k=3, round_size=3, round_band=1.0)
    together = ranker.scores(model, hidden)
    together_stats = ranker.last_stats
    assert len({stats["nodes_expanded"] for stats in together_stats}) > 1  # unequal rows per clip: padding is exercised
    for clip in range(len(hidden)):
        alone = ranker.scores(model, hidden[clip : clip + 1])
        assert torch.equal(torch.isfinite(alone[0]), torch.isfinite(together[clip]))
        finite = torch.isfinite(alone[0])
        torch.testing.assert_close(alone[0][finite], together[clip][finite], rtol=1e-6, atol=1e-5)
        assert ranker.last_stats[0]["nodes_expanded"] == together_stats[clip]["nodes_expanded"]
