"""Ranking lexicon names by CTC likelihood, and greedy CTC decoding.

The CTC score of a name is the log-likelihood of its letter sequence under the model's
frame-wise output, summed over all alignments, divided by the label's length so that long
names are not punished for being long. This uses everything the model heard, not just its
single best transcript, and is the ranking users get from `S2T.recognize` and the one every
reported metric measures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..text.lexicon import DrugName
from .ranking import Ranking, top_candidates


class PrefixTrie:
    """Lexicon token sequences as a prefix tree: node 0 is the empty prefix, every other node
    one token added to its parent, `ends[i]` the node where name i ends."""

    def __init__(self, label_ids: list[list[int]]):
        node_of: dict[tuple[int, ...], int] = {(): 0}
        parents, tokens, ends = [0], [-1], []
        for ids in label_ids:
            prefix: tuple[int, ...] = ()
            for token in ids:
                child = prefix + (token,)
                if child not in node_of:
                    node_of[child] = len(parents)
                    parents.append(node_of[prefix])
                    tokens.append(token)
                prefix = child
            ends.append(node_of[prefix])
        self.parents = torch.tensor(parents)
        self.tokens = torch.tensor(tokens).clamp(min=0)  # the root's -1 is never read as a token
        self.ends = torch.tensor(ends)
        # a repeated token (the 'll' of 'alla') can only follow its parent through a blank
        self.repeats = (self.tokens == self.tokens[self.parents]) & (self.parents != 0)
        self.repeats[0] = True
        self.first_tokens = self.parents == 0
        self.first_tokens[0] = False

    def __len__(self) -> int:
        return len(self.parents)


class CTCRanker:
    """Scores every lexicon name against a CTC model's log-probabilities.

    The score is what `F.ctc_loss(reduction="none")` gives, negated and divided by label length,
    but computed with the CTC forward recursion run once over the lexicon's prefix tree: names
    that share a prefix ('metf-', 'hydro-') share its work, and each frame updates all prefixes
    in a few tensor operations. For the 6,528 generic + brand names this is 4x faster than
    ctc_loss over every name (benchmarks/ranking_speed.py) and equal to it within float
    rounding (tests/test_ranking_and_metrics.py).
    """

    def __init__(self, lexicon: list[DrugName], label_ids: list[list[int]], blank_id: int):
        if len(lexicon) != len(label_ids):
            raise ValueError("lexicon and label_ids must have the same length")
        if any(len(ids) == 0 for ids in label_ids):
            raise ValueError("every lexicon name needs at least one token")
        self.lexicon = lexicon
        self.blank_id = blank_id
        self.trie = PrefixTrie(label_ids)
        self.label_lengths = torch.tensor([len(ids) for ids in label_ids], dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.lexicon)

    @torch.no_grad()
    def log_likelihoods(self, log_probs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """log p(name | clip) summed over all CTC alignments: (batch, frames, vocab) -> (batch, names)."""
        log_probs = log_probs.float().cpu()
        batch, frames, _ = log_probs.shape
        lengths = torch.full((batch,), frames, dtype=torch.long) if lengths is None else lengths.cpu().clamp(min=1, max=frames)
        trie, impossible = self.trie, -float("inf")
        blank = log_probs[..., self.blank_id]  # (batch, frames)
        # on_token[n]: prefix n emitted, now on its last token; on_blank[n]: prefix n emitted, now on a blank
        on_token = torch.full((batch, len(trie)), impossible)
        on_token[:, trie.first_tokens] = log_probs[:, 0, trie.tokens[trie.first_tokens]]
        on_blank = torch.full((batch, len(trie)), impossible)
        on_blank[:, 0] = blank[:, 0]
        result = torch.full((batch, len(self.lexicon)), impossible)
        for frame in range(frames):
            if frame > 0:
                from_parent = torch.logaddexp(on_blank[:, trie.parents], on_token[:, trie.parents].masked_fill(trie.repeats, impossible))
                entering = torch.logaddexp(on_token, from_parent)
                entering[:, 0] = impossible
                on_blank = torch.logaddexp(on_blank, on_token) + blank[:, frame, None]
                on_token = entering + log_probs[:, frame, trie.tokens]
            finished = lengths == frame + 1
            if finished.any():
                result[finished] = torch.logaddexp(on_token[finished][:, trie.ends], on_blank[finished][:, trie.ends])
        return result

    def scores(self, log_probs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Log-likelihood per letter of every name (higher is better): (batch, frames, vocab) -> (batch, names).

        Names that cannot be aligned (more letters than frames) score -inf.
        """
        return self.log_likelihoods(log_probs, lengths) / self.label_lengths

    def rank(self, log_probs: torch.Tensor, lengths: torch.Tensor | None = None, top_k: int = 5) -> Ranking:
        return top_candidates(self.scores(log_probs, lengths), top_k)


def transcript_scores(log_probs: torch.Tensor, lengths: torch.Tensor, transcript_ids: list[list[int]], blank_id: int) -> torch.Tensor:
    """Log-likelihood per token of each clip's own free (greedy) transcript, the same measure as
    `CTCRanker.scores`: how well the best unconstrained reading fits, to compare the best name with."""
    log_probs = log_probs.float().cpu()
    result = torch.zeros(len(transcript_ids))
    for clip, ids in enumerate(transcript_ids):
        if not ids:  # all blank: the transcript's likelihood is the all-blank path's
            result[clip] = log_probs[clip, : int(lengths[clip]), blank_id].sum()
            continue
        nll = F.ctc_loss(
            log_probs[clip, : int(lengths[clip])].unsqueeze(1), torch.tensor([ids]), torch.tensor([int(lengths[clip])]),
            torch.tensor([len(ids)]), blank=blank_id, reduction="none",
        )
        result[clip] = -nll[0] / len(ids)
    return result


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
