"""Finding lexicon names anywhere in a CTC model's output: word spotting.

`CTCRanker` forces a whole clip to be one name. Here a name may start and end at any frame,
the rest of the audio explained by *filler*: any token, the best one at each frame. This is the
filler (wildcard) arc around the lexicon graph of keyword spotters such as NeMo's
`ctc_based_word_spotter.py`, run over the same prefix tree as the ranker so that names sharing
a prefix share its work.

Scores are log-likelihood ratios against the filler: frame t contributes
log p_t(token on the name's best path) - max_v log p_t(v), which is 0 where the model's own best
token is the name's and negative elsewhere; a span's score is the sum over its frames (the
frames outside it are filler and add 0), so 0 means the greedy transcript spells the name there.
The best path is a Viterbi path (max, not the sum over alignments): it has one span, whose start
and end frames are kept. Dividing by the name's letters gives `per_letter`, what a threshold
compares. With the tokenizer's word delimiter a name starts and ends only at a word's edge of
the best reading. A name found is then rescored exactly, with every other name, on its span
(see `S2T.spot`), which gives the calibrated probability and the runner-up names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..text.lexicon import DrugName
from .ctc import PrefixTrie


@dataclass(frozen=True)
class Span:
    """A lexicon name's best span in one clip: frames [start, end), its summed log-likelihood
    ratio against filler (<= 0), and that divided by the name's token count."""

    name: int
    start: int
    end: int
    score: float
    per_letter: float


class CTCSpotter:
    """Best span of every lexicon name in (frames, vocab) CTC log-probabilities."""

    def __init__(self, lexicon: list[DrugName], label_ids: list[list[int]], blank_id: int, word_delimiter_id: int | None = None):
        if len(lexicon) != len(label_ids) or any(not ids for ids in label_ids):
            raise ValueError("one non-empty token sequence per lexicon name is needed")
        self.lexicon = lexicon
        self.blank_id = blank_id
        self.word_delimiter_id = word_delimiter_id
        self.trie = PrefixTrie(label_ids)
        self.label_lengths = torch.tensor([len(ids) for ids in label_ids], dtype=torch.float32)

    @torch.no_grad()
    def best_spans(self, log_probs: torch.Tensor, blocked: torch.Tensor | None = None) -> list[Span]:
        """Every name's best span: (frames, vocab) log-probabilities of one clip -> one `Span` per
        name (score -inf where a name cannot fit). Frames where `blocked` is True are filler only
        (a span already taken by another detection)."""
        ratios = log_probs.float().cpu()
        ratios = ratios - ratios.max(dim=-1, keepdim=True).values  # <= 0: 0 for the frame's best token
        if blocked is not None:
            ratios = ratios.masked_fill(blocked.cpu()[:, None], -float("inf"))
        can_start, can_end = self.word_edges(log_probs)
        trie, impossible = self.trie, -float("inf")
        nodes = len(trie)
        on_token = torch.full((nodes,), impossible)  # best ratio of a path now on node's last token
        on_blank = torch.full((nodes,), impossible)  # ... now on a blank after it
        start_token = torch.zeros(nodes, dtype=torch.long)
        start_blank = torch.zeros(nodes, dtype=torch.long)
        best = torch.full((len(self.lexicon),), impossible)
        best_start = torch.zeros(len(self.lexicon), dtype=torch.long)
        best_end = torch.zeros(len(self.lexicon), dtype=torch.long)
        is_first, parents, repeats = trie.first_tokens, trie.parents, trie.repeats
        for frame in range(ratios.shape[0]):
            # into a node from its parent: after the parent's blank, or its token unless repeated;
            # a first token from the filler, which has ratio 0 at every frame (a span starts here)
            parent_token = on_token[parents].masked_fill(repeats, impossible)
            parent_blank = on_blank[parents]
            from_parent = torch.maximum(parent_token, parent_blank)
            parent_start = torch.where(parent_token >= parent_blank, start_token[parents], start_blank[parents])
            from_parent = torch.where(is_first, torch.tensor(0.0 if can_start[frame] else impossible), from_parent)
            parent_start = torch.where(is_first, torch.full((), frame), parent_start)
            stay = on_token >= from_parent
            entering = torch.maximum(on_token, from_parent)
            entering_start = torch.where(stay, start_token, parent_start)
            blank_stay = on_blank >= on_token
            on_blank = torch.maximum(on_blank, on_token) + ratios[frame, self.blank_id]
            start_blank = torch.where(blank_stay, start_blank, start_token)
            on_token = entering + ratios[frame, trie.tokens]
            start_token = entering_start
            on_token[0], on_blank[0] = impossible, impossible  # the root is the filler, kept implicit
            # a name may end on its last token at this frame; the filler takes over after it
            ending = on_token[trie.ends]
            better = (ending > best) & bool(can_end[frame])
            best = torch.where(better, ending, best)
            best_start = torch.where(better, start_token[trie.ends], best_start)
            best_end = torch.where(better, torch.full((), frame + 1), best_end)
        per_letter = best / self.label_lengths
        return [
            Span(index, int(start), int(end), float(score), float(letter))
            for index, (start, end, score, letter) in enumerate(zip(best_start, best_end, best, per_letter))
        ]

    def word_edges(self, log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames where a name may start and where it may end: with a word delimiter, only at a
        word's edge in the model's own best reading (the last token read before the start, and
        the first after the end, are the delimiter or nothing), so 'one' is not found inside
        'oxymorphone'; without one, anywhere."""
        frames = log_probs.shape[0]
        if self.word_delimiter_id is None:
            return torch.ones(frames, dtype=torch.bool), torch.ones(frames, dtype=torch.bool)
        best = log_probs.argmax(dim=-1).tolist()
        edge = {None, self.word_delimiter_id}
        can_start, can_end = torch.zeros(frames, dtype=torch.bool), torch.zeros(frames, dtype=torch.bool)
        last = None
        for frame in range(frames):  # the last token read before each frame
            can_start[frame] = last in edge
            if best[frame] != self.blank_id:
                last = best[frame]
        following = None
        for frame in reversed(range(frames)):  # the first token read after each frame
            can_end[frame] = following in edge
            if best[frame] != self.blank_id:
                following = best[frame]
        return can_start, can_end

    def spot(self, log_probs: torch.Tensor, threshold: float, max_rounds: int = 4, min_frames_apart: int = 0) -> list[Span]:
        """Names whose best span scores at least `threshold` per letter, no two overlapping:
        the best first, then each next best whose span overlaps none taken. Another round then
        searches the frames left (a name said twice, or a name whose best span lost to a better
        overlapping one), until a round finds nothing or `max_rounds`. Sorted by start frame."""
        taken: list[Span] = []
        blocked = torch.zeros(log_probs.shape[0], dtype=torch.bool)
        for _ in range(max_rounds):
            found = False
            for span in sorted(self.best_spans(log_probs, blocked if taken else None), key=lambda span: -span.per_letter):
                if span.per_letter < threshold:
                    break
                if any(span.start < other.end + min_frames_apart and other.start < span.end + min_frames_apart for other in taken):
                    continue
                taken.append(span)
                blocked[span.start : span.end] = True
                found = True
            if not found:
                break
        return sorted(taken, key=lambda span: span.start)


@dataclass(frozen=True)
class TimedName:
    """A name found in a recording, in seconds; what windows of a long recording are merged by."""

    name: str
    start: float
    end: float
    per_letter: float


def merge_windows(found: list[list[TimedName]], tolerance_s: float = 0.2) -> list[int]:
    """Indices (into the flattened `found`, window by window) of the detections to keep when
    overlapping windows of one recording each report what they heard: a name found by two
    windows over the same stretch of audio (overlapping, or within `tolerance_s`) is kept once,
    from the window that scored it best. Returned in time order."""
    flat = [(window, detection) for window, detections in enumerate(found) for detection in detections]
    order = sorted(range(len(flat)), key=lambda index: -flat[index][1].per_letter)
    kept: list[int] = []
    for index in order:
        detection = flat[index][1]
        duplicate = any(
            flat[other][1].name == detection.name
            and detection.start < flat[other][1].end + tolerance_s
            and flat[other][1].start < detection.end + tolerance_s
            for other in kept
        )
        if not duplicate:
            kept.append(index)
    return sorted(kept, key=lambda index: flat[index][1].start)
