"""Ranking lexicon names by CTC likelihood, and greedy CTC decoding.

The CTC score of a name is the log-likelihood of its letter sequence under the model's
frame-wise output, summed over all alignments and over the ways of writing its word breaks
(with a word delimiter `|`, one is optional between the words of a multi-word name and at
both ends: a head fine-tuned on LibriSpeech labels ends words with `|`, one trained on isolated
names writes none), divided by the label's length to a power fitted on validation (the
calibration's `length_exponent`; 1, per letter, until fitted). This uses everything the model
heard, not just its single best transcript, and is the ranking users get from `S2T.recognize`
and the one every reported metric measures. The model's own free transcript is scored by the
same graph and the same length term, so the two can be compared (the "not in lexicon" gap).
"""

from __future__ import annotations

import torch

from ..text.lexicon import DrugName
from ..text.vocabulary import encode_labels
from .ranking import Ranking, top_candidates


def written_label(ids: list[int], word_break: int | None) -> list[int]:
    """A label as the graph spells it: without word breaks at its ends, one between words."""
    if word_break is None:
        return list(ids)
    label: list[int] = []
    for token in ids:
        if token != word_break or (label and label[-1] != word_break):
            label.append(token)
    return label[:-1] if label and label[-1] == word_break else label


def length_term(lengths: torch.Tensor, exponent: float) -> torch.Tensor:
    """What a log-likelihood is divided by: its label's length (at least 1) to `exponent`."""
    return lengths.float().clamp(min=1) ** exponent


class PrefixTrie:
    """Lexicon token sequences as a prefix graph: node 0 is the empty prefix, every other node
    one token added to its parent, `ends[i]` the node where label i ends.

    With a `word_break` token, each label is stored as `| w1 | w2 |` and every `|` is optional:
    the token after one may also follow the node before it (`skips`), and a label also ends
    after its final `|` (`break_ends`). Different paths spell different label sequences, so
    summing over the paths sums over the spellings, each once."""

    def __init__(self, label_ids: list[list[int]], word_break: int | None = None):
        node_of: dict[tuple[int, ...], int] = {(): 0}
        parents, tokens, skips, ends, break_ends = [0], [-1], [-1], [], []
        for ids in label_ids:
            label = written_label(ids, word_break)
            full = label if word_break is None else [word_break, *label, word_break] if label else [word_break]
            prefix: tuple[int, ...] = ()
            for token in full:
                child = prefix + (token,)
                if child not in node_of:
                    node_of[child] = len(parents)
                    parents.append(node_of[prefix])
                    tokens.append(token)
                    after_break = word_break is not None and len(prefix) > 0 and prefix[-1] == word_break
                    skips.append(node_of[prefix[:-1]] if after_break else -1)
                prefix = child
            ends.append(node_of[prefix[:-1]] if word_break is not None else node_of[prefix])
            break_ends.append(node_of[prefix])
        self.word_break = word_break
        self.parents = torch.tensor(parents)
        self.tokens = torch.tensor(tokens).clamp(min=0)  # the root's -1 is never read as a token
        self.ends = torch.tensor(ends)
        self.break_ends = torch.tensor(break_ends) if word_break is not None else None
        self.label_lengths = torch.tensor([len(written_label(ids, word_break)) for ids in label_ids], dtype=torch.float32)
        # a repeated token (the 'll' of 'alla') can only follow its parent through a blank
        self.repeats = (self.tokens == self.tokens[self.parents]) & (self.parents != 0)
        self.repeats[0] = True
        skips_tensor = torch.tensor(skips)
        self.has_skip = skips_tensor >= 0
        self.skips = skips_tensor.clamp(min=0)
        self.skip_repeats = (self.tokens == self.tokens[self.skips]) & (self.skips != 0) & self.has_skip
        self.first_tokens = (self.parents == 0) | (self.has_skip & (self.skips == 0))
        self.first_tokens[0] = False

    def __len__(self) -> int:
        return len(self.parents)


@torch.no_grad()
def graph_log_likelihoods(trie: PrefixTrie, log_probs: torch.Tensor, blank_id: int, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """log p(label | clip) for every label of `trie`, summed over all CTC alignments (and the
    optional word breaks): (batch, frames, vocab) -> (batch, labels). The CTC forward recursion
    runs once over the prefix graph: labels that share a prefix share its work."""
    log_probs = log_probs.float().cpu()
    batch, frames, _ = log_probs.shape
    lengths = torch.full((batch,), frames, dtype=torch.long) if lengths is None else lengths.cpu().clamp(min=1, max=frames)
    impossible = -float("inf")
    blank = log_probs[..., blank_id]  # (batch, frames)
    # on_token[n]: prefix n emitted, now on its last token; on_blank[n]: prefix n emitted, now on a blank
    on_token = torch.full((batch, len(trie)), impossible)
    on_token[:, trie.first_tokens] = log_probs[:, 0, trie.tokens[trie.first_tokens]]
    on_blank = torch.full((batch, len(trie)), impossible)
    on_blank[:, 0] = blank[:, 0]
    result = torch.full((batch, len(trie.ends)), impossible)
    skipping = bool(trie.has_skip.any())
    for frame in range(frames):
        if frame > 0:
            from_parent = torch.logaddexp(on_blank[:, trie.parents], on_token[:, trie.parents].masked_fill(trie.repeats, impossible))
            if skipping:  # past an optional word break, from the node before it
                from_skip = torch.logaddexp(on_blank[:, trie.skips], on_token[:, trie.skips].masked_fill(trie.skip_repeats, impossible))
                from_parent = torch.logaddexp(from_parent, from_skip.masked_fill(~trie.has_skip, impossible))
            entering = torch.logaddexp(on_token, from_parent)
            entering[:, 0] = impossible
            on_blank = torch.logaddexp(on_blank, on_token) + blank[:, frame, None]
            on_token = entering + log_probs[:, frame, trie.tokens]
        finished = lengths == frame + 1
        if finished.any():
            done_token, done_blank = on_token[finished], on_blank[finished]
            total = torch.logaddexp(done_token[:, trie.ends], done_blank[:, trie.ends])
            if trie.break_ends is not None:  # or after a final word break
                total = torch.logaddexp(total, torch.logaddexp(done_token[:, trie.break_ends], done_blank[:, trie.break_ends]))
            result[finished] = total
    return result


class CTCRanker:
    """Scores every lexicon name against a CTC model's log-probabilities.

    Without a word break the score is what `F.ctc_loss(reduction="none")` gives, negated and
    divided by label length; with one, the sum of that likelihood over the name's spellings
    with and without each optional `|` (tests/test_ranking_and_metrics.py checks both against
    `ctc_loss` over every spelling). It is computed with the CTC forward recursion run once over
    the lexicon's prefix graph: names that share a prefix ('metf-', 'hydro-') share its work,
    and each frame updates all prefixes in a few tensor operations. For the 6,528 generic +
    brand names this is 4x faster than ctc_loss over every name (benchmarks/ranking_speed.py).
    """

    def __init__(self, lexicon: list[DrugName], label_ids: list[list[int]], blank_id: int, word_break: int | None = None):
        if len(lexicon) != len(label_ids):
            raise ValueError("lexicon and label_ids must have the same length")
        if any(len(written_label(ids, word_break)) == 0 for ids in label_ids):
            raise ValueError("every lexicon name needs at least one token")
        self.lexicon = lexicon
        self.blank_id = blank_id
        self.word_break = word_break
        self.trie = PrefixTrie(label_ids, word_break)
        self.label_lengths = self.trie.label_lengths
        self.length_exponent = 1.0  # what `scores` uses unless given one: the calibration's, once fitted

    @classmethod
    def for_tokenizer(cls, lexicon: list[DrugName], tokenizer) -> "CTCRanker":
        """The ranker of a CTC tokenizer: its padding token is the blank, its word delimiter
        (where its vocabulary has one) the optional word break."""
        return cls(lexicon, encode_labels(tokenizer, lexicon), tokenizer.pad_token_id, word_break_id(tokenizer))

    def __len__(self) -> int:
        return len(self.lexicon)

    def log_likelihoods(self, log_probs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """log p(name | clip), over all CTC alignments and spellings: (batch, frames, vocab) -> (batch, names)."""
        return graph_log_likelihoods(self.trie, log_probs, self.blank_id, lengths)

    def scores(self, log_probs: torch.Tensor, lengths: torch.Tensor | None = None, length_exponent: float | None = None) -> torch.Tensor:
        """Log-likelihood of every name over its length ** `length_exponent` (default: the
        ranker's own, 1, per letter, until a calibration sets it; higher is better):
        (batch, frames, vocab) -> (batch, names). Names that cannot be aligned (more letters
        than frames) score -inf."""
        exponent = self.length_exponent if length_exponent is None else length_exponent
        return self.log_likelihoods(log_probs, lengths) / length_term(self.label_lengths, exponent)

    def rank(self, log_probs: torch.Tensor, lengths: torch.Tensor | None = None, top_k: int = 5) -> Ranking:
        return top_candidates(self.scores(log_probs, lengths), top_k)


def word_break_id(tokenizer) -> int | None:
    """A CTC tokenizer's word delimiter id, or None where it has none."""
    delimiter = getattr(tokenizer, "word_delimiter_token", None)
    return tokenizer.get_vocab().get(delimiter) if delimiter else None


def transcript_scores(
    log_probs: torch.Tensor, lengths: torch.Tensor, transcript_ids: list[list[int]], blank_id: int,
    word_break: int | None = None, length_exponent: float = 1.0,
) -> torch.Tensor:
    """Each clip's own free (greedy) transcript scored as a lexicon name would be: the same
    graph (optional word breaks), the same length term (an empty transcript, all blank, counts
    as one token). How well the best unconstrained reading fits, to compare the best name with."""
    trie = PrefixTrie(transcript_ids, word_break)
    rows = torch.arange(len(transcript_ids))
    own = graph_log_likelihoods(trie, log_probs, blank_id, lengths)[rows, rows]
    return own / length_term(trie.label_lengths, length_exponent)

def output_lengths(model: torch.nn.Module, input_lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """Valid output frames per clip, from its length in samples."""
    if not hasattr(model, "_get_feat_extract_output_lengths"):
        return torch.full((len(input_lengths),), frames, dtype=torch.long)
    lengths = model._get_feat_extract_output_lengths(input_lengths.cpu()).long()
    return lengths.clamp(max=frames)


def collapse_ctc(ids: list[int], blank_id: int) -> list[int]:
    """A CTC frame sequence as its label: repeats merged, blanks and padding (-100) dropped."""
    label, previous = [], None
    for token in ids:
        if token != previous and token != blank_id and token >= 0:
            label.append(token)
        previous = token
    return label


def greedy_ids(log_probs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Best token per frame, with frames past each clip's length set to -100 (padding)."""
    greedy = log_probs.argmax(-1)
    greedy[torch.arange(log_probs.shape[1])[None, :] >= lengths[:, None]] = -100
    return greedy


def batch_dependent(inputs: dict[str, torch.Tensor]) -> bool:
    """Whether padding can change a clip's output: a model given no attention mask sees the
    padding as audio (wav2vec2-base's group-normed feature encoder normalises over it)."""
    return "attention_mask" not in inputs and len(next(iter(inputs.values()))) > 1


@torch.no_grad()
def ctc_log_probs(model: torch.nn.Module, inputs: dict[str, torch.Tensor], input_lengths: torch.Tensor) -> torch.Tensor:
    """Frame log-probabilities (batch, frames, vocab), float32 on the CPU, each clip's the same
    as if it were alone: a batch the model would see padded without a mask runs clip by clip on
    unpadded input (frames past a clip's length are zero and masked by its length)."""
    if not batch_dependent(inputs):
        return model(**inputs).logits.float().log_softmax(-1).cpu()
    name = "input_values" if "input_values" in inputs else "input_features"
    rows = [
        model(**{name: inputs[name][index : index + 1, : int(length)]}).logits[0].float().log_softmax(-1).cpu()
        for index, length in enumerate(input_lengths.tolist())
    ]
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
