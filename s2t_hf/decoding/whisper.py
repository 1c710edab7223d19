"""Ranking a drug-name lexicon with Whisper: exact sequence log-probabilities over the names'
token prefix tree, searched best-first with branch and bound.

The score of a name is the log-probability Whisper gives its text after the prompt,

    log P(spelling tokens + <|endoftext|> | prompt tokens, audio),

the sum of the log-softmax over the FULL vocabulary at each of the spelling's tokens (a proper
probability over token sequences, not divided by length), and for a name with several
spellings (" metformin", " Metformin" for a zero-shot model) the logsumexp over them: the
probability that the model writes the name in any of those ways.

Teacher-forcing every spelling on its own projects every position of every name onto the
51,864-token vocabulary (13 s a clip for the 2,259 spellings of the 1,128 common names, on 2
CPU cores, through Hugging Face's forward). This ranker does that arithmetic once per distinct
prefix, and only for the prefixes that can matter:

* The encoder runs once per clip (the caller's), and every decoder layer's cross-attention keys
  and values are computed once per clip from its output, not once per name.
* The spellings' token sequences (prompt excluded, each ending with <|endoftext|>) form a prefix
  tree (`TokenTree`). Expanding a node runs ONE token through the decoder layers. Expanded
  nodes keep their self-attention keys and values (`_NodeStore`) for their descendants to
  read, so a node costs one row, not its whole path (`path_cache=False` recomputes the path:
  2-3x slower, benchmarks/whisper_ranking_speed.py). A node and its descendants may share a
  batch: a row's layer-l keys depend only on its ancestors' lower layers, so writing the
  batch's layer-l keys before reading the paths' gives each row what a causal pass over its
  path would.
* The children's exact log-probabilities need the node's state projected onto the whole
  vocabulary (384 x 51,864 for tiny.en: 2.5 times a node's four decoder layers). That is done
  `VOCAB_CHUNK` tokens at a time with a running logsumexp (`log_probabilities`), so the logits
  never leave the cache and the 80 MB of weights are read once per round, not once per row;
  and it is done only where needed: the logsumexp over the tree's own ~1,600 tokens is at most
  the full one, so it gives an upper bound on every child's log-probability for 3% of the
  cost. A node whose children's bounds all fall below what the search still needs stays
  bounded, unprojected, unless a later round needs it (`_Search`); off-the-shelf tiny.en
  projects about one expanded node in six.
* Branch and bound. A prefix's log-probability bounds every spelling below it (token
  log-probabilities are <= 0), so a name's score is at most the logsumexp, over its spellings,
  of their deepest bounded prefixes. Each clip's threshold is min(K-th best, best -
  `prune_margin`) of the names found so far (K = `top_k`); while some incomplete name's bound
  reaches it, its spellings' deepest exactly scored prefixes are expanded or projected, best
  bound first, in batched rounds (those within `round_band` nats of the clip's best, at least
  `round_size`; the best one brings its whole subtree when it has at most `lookahead` inner
  nodes, which saves a round per token where the model is sure). All clips of a batch search
  in lockstep: one pass over the weights per round serves every clip's rows.

What the pruned search returns: the exact score of every name whose score reaches the final
threshold, so the `top_k` best names and every name within `prune_margin` of the best, each
exactly as exhaustive search scores it; names reached on the way with all their spellings are
exact too; every other name is -inf (its score is below the threshold). Ties aside, the top K
equals exhaustive search's. `prune_margin=None` expands and projects every node and equals
teacher forcing every spelling through Hugging Face's model (tests/test_whisper_ranking.py).
How many nodes that takes depends on how sure the model is: every prefix scoring above the
K-th best name must be expanded by any search that bounds names by their prefixes, so a
confident model expands a few dozen nodes and off-the-shelf tiny.en on synthetic speech
hundreds; benchmarks/whisper_ranking_speed.py measures both. `max_expansions` caps that work
per clip; a capped clip may miss names (`last_stats[clip]["exact"]` says whether its result is
still proven), but whatever it scores is exact.

The decoder forward is written here from the HF modules' own weights (token and position
embeddings; per layer self-attention, cross-attention with the precomputed keys, feed-forward;
the final layer norm; the output projection, tied to the token embedding) instead of calling
`model.model.decoder`: HF's cache holds one growing sequence per batch row, while here each row
attends to its own path of cached tree nodes, rows of different depths and clips share a batch,
and one clip's cross-attention keys serve all its rows. tests/test_whisper_ranking.py checks it
against `model.model.decoder` + `proj_out`. It reads the modules at call time, so it follows
the weights as they train, in the model's dtype and on its device, and it runs a model whose
linear layers are int8 (`models.quantization`; the whole-vocabulary products then go through
the projection's own int8 `vocabulary_logits`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..text.lexicon import DrugName
from .ranking import Ranking, top_candidates

END_OF_TEXT = "<|endoftext|>"
VOCAB_CHUNK = 4096  # tokens projected at once: (rows, 4096) float32 logits stay in cache
PROJECTED_ROWS = 256  # rows projected at once: with VOCAB_CHUNK, 4 MiB of logits
MAX_POSITIONS = 448  # Whisper decoder positions


# ---- spellings ---------------------------------------------------------------------------


def label_spellings(entry: DrugName) -> list[str]:
    """The text a model fine-tuned on labels writes: ' metformin' (Whisper puts a space before a word)."""
    return [" " + entry.label]


def zero_shot_spellings(entry: DrugName) -> list[str]:
    """How an off-the-shelf Whisper may write the name: lower case, capitalised (it starts a
    sentence) and as written in the lexicon (brands: 'Arnuity Ellipta')."""
    forms = [entry.label, entry.label[:1].upper() + entry.label[1:], entry.name]
    return list(dict.fromkeys(" " + form.strip() for form in forms))


SPELLINGS: dict[str, Callable[[DrugName], list[str]]] = {"label": label_spellings, "zero_shot": zero_shot_spellings}


# ---- the prefix tree ----------------------------------------------------------------------


class TokenTree:
    """Token sequences as a prefix tree, numbered in depth-first preorder: node 0 is the empty
    prefix (the prompt), every other node one token added to its parent, so a node's ancestors
    come before it and its subtree is the nodes `n .. subtree_end[n] - 1`."""

    def __init__(self, sequences: list[tuple[int, ...]]):
        if not sequences or any(len(ids) == 0 for ids in sequences):
            raise ValueError("every sequence needs at least one token")
        # the nodes are the distinct prefixes in depth-first preorder (a prefix before its
        # extensions, siblings by token), found without a walk in Python: sort the sequences (a
        # shorter one before its extensions); each one's new nodes are its tokens past the prefix
        # it shares with the one before it, numbered in order; an older prefix keeps its node.
        # (A spotting span builds a tree of every name followed by the rest of its sentence: with
        # the paths a level at a time below, ~5x faster than sorting the prefixes as tuples.)
        lengths = np.array([len(ids) for ids in sequences])
        padded = np.full((len(sequences), int(lengths.max())), -1, dtype=np.int64)  # -1 sorts before every token
        for row, ids in enumerate(sequences):
            padded[row, : len(ids)] = ids
        order = np.lexsort(padded.T[::-1])
        ordered, ordered_lengths = padded[order], lengths[order]
        same = np.ones_like(ordered, dtype=bool)
        same[1:] = np.logical_and.accumulate(ordered[1:] == ordered[:-1], axis=1)
        same[0] = False
        shared = np.minimum(same.sum(1), ordered_lengths)  # tokens shared with the sequence before
        column = np.arange(padded.shape[1])
        new = (column >= shared[:, None]) & (column < ordered_lengths[:, None])  # this sequence's new nodes
        first_node = 1 + np.cumsum(new.sum(1)) - new.sum(1)
        node_at = np.where(new, first_node[:, None] + column - shared[:, None], 0)
        rows = np.arange(len(sequences))[:, None]
        node_at = node_at[np.maximum.accumulate(np.where(new, rows, 0), axis=0), column]  # an older prefix: its node
        nodes = 1 + int(new.sum())
        parents, tokens, depth = np.zeros(nodes, dtype=np.int64), np.zeros(nodes, dtype=np.int64), np.zeros(nodes, dtype=np.int64)
        created = node_at[new]
        parents[created] = np.where(column > 0, np.roll(node_at, 1, axis=1), 0)[new]
        tokens[created] = ordered[new]  # the root's token is never read
        depth[created] = np.broadcast_to(column + 1, new.shape)[new]
        self.parents, self.tokens, self.depth = torch.from_numpy(parents), torch.from_numpy(tokens), torch.from_numpy(depth)
        self.child_count = torch.bincount(self.parents[1:], minlength=nodes)
        self.child_start = torch.cumsum(self.child_count, 0) - self.child_count
        self.children = torch.argsort(self.parents[1:], stable=True) + 1  # each parent's children in order
        self.internal = self.child_count > 0
        self.internal_before = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(self.internal.long(), 0)])  # internal nodes in 0 .. n-1
        leaf = np.zeros(len(sequences), dtype=np.int64)
        leaf[order] = node_at[np.arange(len(sequences)), ordered_lengths - 1]
        self.leaf_of_sequence = torch.from_numpy(leaf)
        # paths[n, i]: the ancestor of n at depth i + 1 (n itself at depth[n] - 1), 0 past the end
        longest = int(self.depth.max())
        self.paths = torch.zeros(nodes, longest, dtype=torch.long)
        by_depth = torch.argsort(self.depth, stable=True)
        level_ends = torch.cumsum(torch.bincount(self.depth), 0).tolist()
        for level in range(1, longest + 1):  # a level at a time: each node's path is its parent's and itself
            at = by_depth[level_ends[level - 1] : level_ends[level]]
            self.paths[at] = self.paths[self.parents[at]]
            self.paths[at, level - 1] = at
        # a subtree is contiguous in preorder: node n's is n .. n + its size - 1, and a node lies
        # in the subtree of each node on its path
        on_paths = self.paths.flatten()
        sizes = torch.bincount(on_paths[on_paths > 0], minlength=nodes)
        sizes[0] = nodes
        self.subtree_end = torch.arange(nodes) + sizes

    def __len__(self) -> int:
        return len(self.parents)

    def internal_in_subtree(self, node: int) -> int:
        return int(self.internal_before[self.subtree_end[node]] - self.internal_before[node])

    def children_of(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every child of `nodes`, and the position in `nodes` of each one's parent."""
        counts = self.child_count[nodes]
        rows = torch.repeat_interleave(torch.arange(len(nodes)), counts)
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        return self.children[self.child_start[nodes][rows] + offsets], rows


# ---- the decoder, written out -------------------------------------------------------------


def _parts(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder stack and the output projection of a WhisperForConditionalGeneration."""
    decoder = model.model.decoder if hasattr(model, "model") and hasattr(model.model, "decoder") else model.get_decoder()
    return decoder, model.get_output_embeddings()


def _split_heads(attention: torch.nn.Module, states: torch.Tensor) -> torch.Tensor:
    """(..., d_model) -> (..., heads, head_dim)"""
    return states.view(*states.shape[:-1], attention.num_heads, attention.head_dim)


def _cross_keys_values(decoder: torch.nn.Module, encoder_states: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cross-attention keys and values of every decoder layer for one clip's encoder output
    (frames, d_model): per layer (heads, frames, head_dim) each."""
    return [(keys[0], values[0]) for keys, values in stacked_cross_keys_values(decoder, encoder_states[None])]


def stacked_cross_keys_values(decoder: torch.nn.Module, encoder_states: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cross-attention keys and values of every decoder layer for clips of one length
    (clips, frames, d_model): per layer (clips, heads, frames, head_dim) each."""
    return [
        tuple(_split_heads(layer.encoder_attn, projection(encoder_states)).transpose(1, 2)
              for projection in (layer.encoder_attn.k_proj, layer.encoder_attn.v_proj))
        for layer in decoder.layers
    ]


def _cross_attention(
    layer: torch.nn.Module, states: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, weights_out: list | None = None
) -> torch.Tensor:
    """The cross-attention block's output (before the residual) for rows (..., d_model) of one
    clip, keys and values (heads, frames, head_dim): one batched product per head over all rows.
    With keys and values (rows, heads, frames, head_dim), each row (rows, ..., d_model) attends
    to its own clip's. `weights_out`, a list, gets the attention weights appended (one clip's
    keys: (heads, rows, frames))."""
    attention = layer.encoder_attn
    hidden = layer.encoder_attn_layer_norm(states)
    shape = hidden.shape[:-1]
    queries = _split_heads(attention, attention.q_proj(hidden) * attention.scaling)
    if keys.dim() == 4:
        queries = queries.reshape(shape[0], -1, attention.num_heads, attention.head_dim)  # (rows, positions, heads, head_dim)
        weights = torch.einsum("rqhe,rhfe->rhqf", queries, keys).softmax(-1)
        return attention.out_proj(torch.einsum("rhqf,rhfe->rqhe", weights, values).reshape(*shape, -1))
    queries = queries.reshape(-1, attention.num_heads, attention.head_dim)
    weights = torch.matmul(queries.transpose(0, 1), keys.transpose(1, 2)).softmax(-1)  # (heads, rows, frames)
    if weights_out is not None:
        weights_out.append(weights)
    output = torch.matmul(weights, values).transpose(0, 1).reshape(*shape, -1)
    return attention.out_proj(output)


def _feed_forward(layer: torch.nn.Module, states: torch.Tensor) -> torch.Tensor:
    return layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(states))))


def decoder_states(
    decoder: torch.nn.Module, ids: torch.Tensor, cross: list[tuple[torch.Tensor, torch.Tensor]], cross_weights: list | None = None
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Whisper's decoder on whole sequences (rows, length) of one clip (or, given cross keys and
    values (rows, heads, frames, head_dim), each row of its own clip), causal, from position 0:
    the final states (rows, length, d_model) after the last layer norm, and each layer's
    self-attention keys and values (rows, length, heads, head_dim). Rows padded on the right
    need no mask: a position never attends to later ones. `cross_weights`, a list, gets each
    layer's cross-attention weights (one clip's keys: (heads, rows x length, frames)), what
    word timing reads (`whisper_spotting.token_times`)."""
    rows, length = ids.shape
    states = decoder.embed_tokens(ids) + decoder.embed_positions.weight[:length]
    causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()
    keys_values = []
    for layer, (cross_keys, cross_values) in zip(decoder.layers, cross):
        attention = layer.self_attn
        hidden = layer.self_attn_layer_norm(states)
        queries = _split_heads(attention, attention.q_proj(hidden) * attention.scaling)
        keys, values = _split_heads(attention, attention.k_proj(hidden)), _split_heads(attention, attention.v_proj(hidden))
        keys_values.append((keys, values))
        scores = torch.matmul(queries.transpose(1, 2), keys.permute(0, 2, 3, 1)).masked_fill(~causal, -float("inf"))
        output = torch.matmul(scores.softmax(-1), values.transpose(1, 2)).transpose(1, 2).reshape(rows, length, -1)
        states = states + attention.out_proj(output)
        states = states + _cross_attention(layer, states, cross_keys, cross_values, cross_weights)
        states = states + _feed_forward(layer, states)
    return decoder.layer_norm(states), keys_values


def log_probabilities(projection: torch.nn.Module, hidden: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log_softmax(projection(hidden))[rows, tokens] in float32 without the (rows, vocab)
    logits ever leaving the cache: the vocabulary is projected `VOCAB_CHUNK` tokens at a time
    for up to `PROJECTED_ROWS` rows at once, each chunk folded into a running logsumexp. The
    projection weights (80 MB for tiny.en) are read once per group of rows; projecting a few
    rows at a time would read them again for each few, and whole (rows, vocab) logits would
    go through memory twice more for the logsumexp."""
    weight = projection.weight
    normalisers = []
    for first in range(0, len(hidden), PROJECTED_ROWS):
        group = hidden[first : first + PROJECTED_ROWS]
        size = VOCAB_CHUNK * max(1, min(4, 64 // len(group)))  # few rows: bigger chunks, fewer steps
        peak = sums = None
        for start in range(0, weight.shape[0], size):
            logits = vocabulary_logits(projection, group, start, start + size).float()
            chunk_peak = logits.amax(-1, keepdim=True)
            if peak is None:
                peak, sums = chunk_peak, (logits - chunk_peak).exp_().sum(-1, keepdim=True)
            else:
                new_peak = torch.maximum(peak, chunk_peak)
                sums = sums * (peak - new_peak).exp_() + (logits - new_peak).exp_().sum(-1, keepdim=True)
                peak = new_peak
        normalisers.append((peak + sums.log())[:, 0])
    return known_log_probabilities(projection, hidden, rows, tokens, torch.cat(normalisers))


def known_log_probabilities(projection: torch.nn.Module, hidden: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor,
                            log_normalisers: torch.Tensor) -> torch.Tensor:
    """log_softmax(projection(hidden))[rows, tokens] given each row's logsumexp over the whole
    vocabulary (`log_normalisers` (len(hidden),): `log_probabilities` computes them; a greedy
    decoding has them already, `GreedySteps`)."""
    weight, bias = projection.weight, projection.bias
    chosen = (hidden[rows] * weight[tokens]).sum(-1).float()
    if bias is not None:
        chosen = chosen + bias[tokens].float()
    # <= 0 as a log-probability must be (the search's prefix bounds rely on it): float rounding,
    # or an int8 product's normaliser against the chosen row's float product, can put it above
    return (chosen - log_normalisers.to(chosen.device)[rows]).clamp(max=0.0)


def vocabulary_logits(projection: torch.nn.Module, hidden: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Logits of tokens start..stop-1 for rows (rows, d_model): the projection's own product
    where it has one (`models.quantization.Int8Projection`: int8), else with its weights."""
    if hasattr(projection, "vocabulary_logits"):
        return projection.vocabulary_logits(hidden, start, stop)
    bias = None if projection.bias is None else projection.bias[start:stop]
    return torch.nn.functional.linear(hidden, projection.weight[start:stop], bias)


class Prompted:
    """A batch of clips with the decoder prompt read: each clip's cross-attention keys and
    values per layer (computed once, shared by the greedy transcript and the names' search),
    the prompt's self-attention keys and values per layer, (clips, prompt, heads, head_dim)
    each, and the final decoder state after the prompt, (clips, d_model). `stacked`: the clips'
    cross-attention keys and values if already computed (clips of one length; per layer
    (clips, heads, frames, head_dim) each, as `stacked_cross_keys_values` gives them): a spotter
    reads one window several times (its transcript, its times, each candidate span)."""

    def __init__(self, decoder: torch.nn.Module, frames: list[torch.Tensor], prompt_ids: list[int],
                 stacked: list[tuple[torch.Tensor, torch.Tensor]] | None = None):
        prompt = torch.tensor([prompt_ids], device=frames[0].device)
        self.stacked = None  # all clips alike long (Whisper's fixed window): per layer (clips, heads, frames, head_dim) keys, values
        if stacked is None and len({len(clip_frames) for clip_frames in frames}) > 1:
            self.cross = [_cross_keys_values(decoder, clip_frames) for clip_frames in frames]
            roots, keys, values = [], [], []
            for cross in self.cross:
                states, keys_values = decoder_states(decoder, prompt, cross)
                roots.append(states[0, -1])
                keys.append([layer_keys[0] for layer_keys, _ in keys_values])
                values.append([layer_values[0] for _, layer_values in keys_values])
            self.keys = [torch.stack(layer) for layer in zip(*keys)]
            self.values = [torch.stack(layer) for layer in zip(*values)]
            self.roots = torch.stack(roots)
            return
        # one pass for the batch: every layer's cross keys from all clips' frames at once, the
        # prompt's rows side by side, each attending to its own clip's frames
        self.stacked = stacked_cross_keys_values(decoder, torch.stack(frames)) if stacked is None else stacked
        self.cross = [[(keys[clip], values[clip]) for keys, values in self.stacked] for clip in range(len(frames))]
        states, keys_values = decoder_states(decoder, prompt.expand(len(frames), -1), self.stacked)  # each row its clip's keys
        self.keys = [keys for keys, _ in keys_values]
        self.values = [values for _, values in keys_values]
        self.roots = states[:, -1]

    @classmethod
    def from_steps(cls, steps: GreedySteps, first: int, stacked: list[tuple[torch.Tensor, torch.Tensor]]) -> Prompted:
        """One clip prompted with what its greedy decoding (`steps`) read up to its `first`
        token (the decoder prompt and the transcript's first `first` tokens), without a decoder
        pass; `stacked`: its cross-attention keys and values (`stacked_cross_keys_values`)."""
        prompted = cls.__new__(cls)
        prompted.stacked = stacked
        prompted.cross = [[(keys[0], values[0]) for keys, values in stacked]]
        prompted.keys = [keys[None, : steps.prompt_length + first] for keys in steps.keys]
        prompted.values = [values[None, : steps.prompt_length + first] for values in steps.values]
        prompted.roots = steps.states[None, first]
        return prompted

    def cross_attention(self, layer: torch.nn.Module, index: int, clips: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """Layer `index`'s cross-attention output for one row per clip in `clips` (increasing),
        for clips of one length (`stacked`)."""
        keys, values = self.stacked[index]
        if len(clips) < len(keys):  # some clips have finished: only the others' keys (a copy)
            keys, values = keys[clips], values[clips]
        return _cross_attention(layer, states, keys, values)


@dataclass
class GreedySteps:
    """What one clip's greedy transcript computed (`greedy_decode`): at each step the decoder's
    final state (steps, d_model) and the logsumexp of its logits over the whole vocabulary
    (steps,), and each layer's self-attention keys and values at every position it read (the
    prompt's and each token's but the last: (positions, heads, head_dim) each). Step i predicts
    the transcript's i-th token after the prompt, so log P(token t at step i) = state[i] .
    weight[t] (+ bias[t]) - log_normalisers[i]; a search that starts from the transcript's
    first i tokens reads all this instead of computing it again (`Prompted.from_steps`,
    `WhisperRanker.scores(known=...)`). `tokens`: the chosen tokens (steps,); `prompt_length`:
    the decoder prompt's positions."""

    tokens: list[int]
    prompt_length: int
    states: torch.Tensor
    log_normalisers: torch.Tensor
    keys: list[torch.Tensor]
    values: list[torch.Tensor]


def greedy_decode(
    decoder: torch.nn.Module, projection: torch.nn.Module, prompted: Prompted, end_id: int, max_tokens: int,
    suppress: list[int] | None = None, begin_suppress: list[int] | None = None, steps: list[GreedySteps] | None = None,
) -> tuple[list[list[int]], torch.Tensor]:
    """Each clip's greedy transcript after the prompt (token ids ending with <|endoftext|>) and
    its log-probability, sharing the clips' cross-attention keys with the names' search.

    As Hugging Face's `generate` for Whisper without timestamps: at each step the argmax of the
    logits with the generation config's `suppress_tokens` (and, at the first step, its
    `begin_suppress_tokens`) set to -inf. At most `max_tokens` tokens, <|endoftext|> included:
    a transcript still running at the last one is ended there with <|endoftext|> (so `generate`
    with `max_new_tokens = max_tokens - 1` writes the same text). The score sums each token's
    log-softmax over the whole vocabulary, unsuppressed: what teacher forcing the ids gives
    (`WhisperRanker.sequence_scores`), without a second decoder pass. Written out for the reason
    the search is (module docstring). `steps`: an empty list to receive each clip's
    `GreedySteps` (a spotter bounds names in place with them)."""
    if prompted.stacked is None:
        raise ValueError("greedy_decode needs clips of one length (Whisper's fixed window)")
    clips, prompt_length = len(prompted.roots), prompted.keys[0].shape[1]
    device = prompted.roots.device
    width = prompt_length + min(max_tokens, 16)  # grown by doubling: a name takes a few tokens, the limit hundreds
    keys = [layer.new_empty(clips, width, *layer.shape[2:]) for layer in prompted.keys]
    values = [layer.new_empty(clips, width, *layer.shape[2:]) for layer in prompted.values]
    for cache, prompt in zip(keys + values, prompted.keys + prompted.values):
        cache[:, :prompt_length] = prompt
    vocabulary = projection.weight.shape[0]  # ids past it are ignored, as generate's processors do
    suppress = {token for token in suppress or [] if token < vocabulary}
    suppressed = torch.tensor(sorted(suppress), dtype=torch.long, device=device)
    first = suppress | {token for token in begin_suppress or [] if token < vocabulary}
    suppressed_first = torch.tensor(sorted(first), dtype=torch.long, device=device)
    tokens_of: list[list[int]] = [[] for _ in range(clips)]
    scores = torch.zeros(clips, dtype=torch.float64)
    running, states = torch.arange(clips, device=device), prompted.roots
    recorded: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(clips)]
    for step in range(max_tokens):
        logits = vocabulary_logits(projection, states, 0, vocabulary).float()
        if step == max_tokens - 1:
            tokens = torch.full((len(running),), end_id, device=device)
        else:
            tokens = logits.index_fill(1, suppressed_first if step == 0 else suppressed, -float("inf")).argmax(-1)
        normalisers = logits.logsumexp(-1)
        chosen = logits.gather(1, tokens[:, None])[:, 0] - normalisers
        scores[running.cpu()] += chosen.double().cpu()
        for row, (clip, token) in enumerate(zip(running.tolist(), tokens.tolist())):
            tokens_of[clip].append(token)
            if steps is not None:
                recorded[clip].append((states[row], normalisers[row]))
        going = tokens != end_id
        running, tokens = running[going], tokens[going]
        if not len(running):
            break
        if prompt_length + step >= keys[0].shape[1]:
            keys = [torch.cat([cache, torch.empty_like(cache)], 1) for cache in keys]
            values = [torch.cat([cache, torch.empty_like(cache)], 1) for cache in values]
        position = prompt_length + step
        states = decoder.embed_tokens(tokens) + decoder.embed_positions.weight[position]
        for index, layer in enumerate(decoder.layers):
            attention = layer.self_attn
            hidden = layer.self_attn_layer_norm(states)
            queries = _split_heads(attention, attention.q_proj(hidden) * attention.scaling)  # (rows, heads, head_dim)
            keys[index][running, position] = _split_heads(attention, attention.k_proj(hidden))
            values[index][running, position] = _split_heads(attention, attention.v_proj(hidden))
            weights = torch.einsum("rhe,rthe->rht", queries, keys[index][running, : position + 1]).softmax(-1)
            output = torch.einsum("rht,rthe->rhe", weights, values[index][running, : position + 1])
            states = states + attention.out_proj(output.reshape(len(running), -1))
            states = states + prompted.cross_attention(layer, index, running, states)
            states = states + _feed_forward(layer, states)
        states = decoder.layer_norm(states)
    if steps is not None:
        for clip, clip_steps in enumerate(recorded):
            read = prompt_length + len(clip_steps) - 1  # positions read: the prompt's and every token's but the last
            clip_states, clip_normalisers = (torch.stack(part) for part in zip(*clip_steps))
            steps.append(GreedySteps(tokens_of[clip], prompt_length, clip_states, clip_normalisers, [cache[clip, :read] for cache in keys],
                                     [cache[clip, :read] for cache in values]))
    return tokens_of, scores


class _NodeStore:
    """What expanded nodes keep, one slot per (clip, node): each decoder layer's self-attention
    keys and values (read by their descendants) and the final decoder state (projected onto the
    whole vocabulary later if the node's children turn out to matter)."""

    def __init__(self, clips: int, num_nodes: int, layers: int, heads: int, head_dim: int, dtype: torch.dtype, device: torch.device):
        self.slot_of = torch.full((clips, num_nodes), -1, dtype=torch.long)
        self.held = torch.empty(0, 2, dtype=torch.long)  # (clip, node) of each slot
        self.dtype, self.device = dtype, device
        self.shapes = [(heads, head_dim)] * (2 * layers) + [(heads * head_dim,)]
        self.tables = [self._empty(64, shape) for shape in self.shapes]  # keys and values of each layer, then states

    def _empty(self, capacity: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.empty(capacity, *shape, dtype=self.dtype, device=self.device)

    def keys(self, layer: int) -> torch.Tensor:
        return self.tables[2 * layer]

    def values(self, layer: int) -> torch.Tensor:
        return self.tables[2 * layer + 1]

    @property
    def states(self) -> torch.Tensor:
        return self.tables[-1]

    def add(self, clips: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """Slots for new nodes (the caller writes their tables)."""
        used, wanted = len(self.held), len(self.held) + len(nodes)
        if wanted > len(self.tables[0]):
            capacity = max(wanted, 2 * len(self.tables[0]))
            for index, (old, shape) in enumerate(zip(self.tables, self.shapes)):
                self.tables[index] = self._empty(capacity, shape)
                self.tables[index][:used] = old[:used]
        slots = torch.arange(used, wanted)
        self.slot_of[clips, nodes] = slots
        self.held = torch.cat([self.held, torch.stack([clips, nodes], 1)])
        return slots.to(self.device)

    def keep(self, kept: torch.Tensor) -> None:
        """Drop every slot but those whose `kept` is True, compacting the rest."""
        old = torch.nonzero(kept)[:, 0]
        for index, (values, shape) in enumerate(zip(self.tables, self.shapes)):
            compact = self._empty(max(64, 2 * len(old)), shape)
            compact[: len(old)] = values[old.to(self.device)]
            self.tables[index] = compact
        self.slot_of.fill_(-1)
        self.held = self.held[old]
        self.slot_of[self.held[:, 0], self.held[:, 1]] = torch.arange(len(old))


# ---- the ranker ---------------------------------------------------------------------------


class WhisperRanker:
    """Scores every lexicon name with a Whisper model (`WhisperForConditionalGeneration`):
    log P(prompt given; spelling + <|endoftext|> | audio), logsumexp over the name's spellings
    (see the module docstring for the search and what it guarantees).

    `prompt_ids`: the decoder prompt, e.g. `tokenizer.prefix_tokens` ([<|startoftranscript|>,
    <|notimestamps|>] for English-only tiny.en). `spellings`: a preset of `SPELLINGS` ('label'
    for a model fine-tuned on labels, 'zero_shot' for an off-the-shelf one) or a function
    DrugName -> texts. `top_k`: the names the search must rank exactly (S2T shows 5; metrics use
    10). `prune_margin`: nats below the best within which names are scored too; names left at
    -inf get probability 0 in a softmax over the lexicon, so for calibrated probabilities give
    it 5 or so (zero-shot tiny.en leaves up to 13% of the mass below the 5th name, 2% beyond 5
    nats). `max_gap`: names more than this many nats below the best are not ranked, even if
    fewer than `top_k` names are then (a result may list fewer than `top_k` names): a
    fine-tuned model puts its 2nd to 5th names 15-30 nats down, and proving their exact order
    costs most of the search (see `encoder_decoder_ranker`). None expands the whole tree (exhaustive: every name scored, seconds a clip). `round_size`, `round_band`, `lookahead`, `max_batch_nodes`: how
    many prefixes a round expands per clip (see the module docstring). `max_expansions`: a cap
    on a clip's work, nodes expanded plus nodes projected (None: none). `path_cache=False` recomputes each node's
    path instead of reading its ancestors' cached keys and values. `complete_sequences`: each
    name's token sequences after the prompt, as scored (instead of `spellings` + <|endoftext|>;
    spotting ranks names in place, each followed by the next words of a sentence:
    `whisper_spotting`); `token_sequences` holds the spellings' ids otherwise. `name_gaps`
    (names,), with `max_gap`: further below than `max_gap`, an entry is still searched down to
    its own gap below the best entry, but only while it could be the best of the entries with a
    finite gap (spotting in place: the best name, though further below the span's own words
    than `max_gap`, can still pass a threshold per token). After `scores`, `last_stats` holds a
    dict per clip: nodes expanded (run through the decoder; the root, the prompt, counts one),
    projections (onto the whole vocabulary), how many of those came in a later round than the
    expansion, rounds, names scored, nodes known (read from a greedy decoding's steps: `known`),
    and whether the result is proven exact.
    """

    def __init__(
        self,
        lexicon: list[DrugName],
        tokenizer,
        prompt_ids: list[int],
        spellings: str | Callable[[DrugName], list[str]] = "zero_shot",
        prune_margin: float | None = 0.0,
        top_k: int = 5,
        max_gap: float | None = None,
        round_size: int = 8,
        round_band: float = 2.0,
        max_batch_nodes: int = 256,
        max_expansions: int | None = None,
        lookahead: int = 16,
        path_cache: bool = True,
        complete_sequences: list[list[tuple[int, ...]]] | None = None,
        name_gaps: torch.Tensor | None = None,
    ):
        if not prompt_ids:
            raise ValueError("Whisper needs a decoder prompt: at least <|startoftranscript|>")
        if prune_margin is not None and prune_margin < 0:
            raise ValueError("prune_margin must be >= 0 (or None for exhaustive search)")
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        self.lexicon = lexicon
        self.tokenizer = tokenizer
        self.prompt_ids = list(prompt_ids)
        self.end_id = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
        self.prune_margin = prune_margin
        self.top_k = top_k
        self.max_gap = max_gap
        if name_gaps is not None and (max_gap is None or len(name_gaps) != len(lexicon)):
            raise ValueError("name_gaps extend max_gap: give max_gap, and one gap per name")
        self.name_gaps = None if name_gaps is None else torch.as_tensor(name_gaps, dtype=torch.float64)
        self.round_size = round_size
        self.round_band = round_band
        self.max_batch_nodes = max_batch_nodes
        self.max_expansions = max_expansions
        self.lookahead = lookahead
        self.path_cache = path_cache
        spell = SPELLINGS[spellings] if isinstance(spellings, str) else spellings
        if complete_sequences is None:
            self.token_sequences = [[tuple(self.encode(text)) for text in spell(entry)] for entry in lexicon]
            complete_sequences = [[ids + (self.end_id,) for ids in spelled] for spelled in self.token_sequences]
        elif len(complete_sequences) != len(lexicon):
            raise ValueError(f"complete_sequences has {len(complete_sequences)} entries for {len(lexicon)} names: a list per name")
        else:
            self.token_sequences = None
        sequence_of: dict[tuple[int, ...], int] = {}
        name_sequences: list[list[int]] = []
        for entry, spelled in zip(lexicon, complete_sequences):
            rows = []
            for ids in spelled:
                row = sequence_of.setdefault(tuple(ids), len(sequence_of))
                if row not in rows:  # two spellings that tokenise alike count once
                    rows.append(row)
            if not rows:
                raise ValueError(f"no spelling for {entry.name!r}")
            name_sequences.append(rows)
        self.sequences = list(sequence_of)
        self.tree = TokenTree(self.sequences)
        # (names, most spellings): rows of `sequences`, padded with len(sequences) (read as -inf)
        width, padding = max(map(len, name_sequences)), len(self.sequences)
        self.name_rows = torch.tensor([rows + [padding] * (width - len(rows)) for rows in name_sequences], dtype=torch.long)
        # each spelling's path from depth 1 to its leaf, padded with the leaf
        leaves = self.tree.leaf_of_sequence
        paths = self.tree.paths[leaves]
        self.sequence_paths = torch.where(torch.arange(paths.shape[1]) < self.tree.depth[leaves, None], paths, leaves[:, None])
        if len(self.prompt_ids) + paths.shape[1] > MAX_POSITIONS:
            raise ValueError("a spelling is longer than Whisper's 448 decoder positions")
        self._calls = threading.local()  # `last_stats` per thread: a server scores batches in several at once

    def __len__(self) -> int:
        return len(self.lexicon)

    @property
    def last_stats(self) -> list[dict]:
        """The search statistics of this thread's last call, a dict per clip (see the class docstring)."""
        return getattr(self._calls, "stats", [])

    @last_stats.setter
    def last_stats(self, stats: list[dict]) -> None:
        self._calls.stats = stats

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    # ---- public scores --------------------------------------------------------------------

    @torch.no_grad()
    def scores(self, model, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor | None = None, top_k: int | None = None,
               stacked_cross: list[tuple[torch.Tensor, torch.Tensor]] | None = None, known: GreedySteps | None = None) -> torch.Tensor:
        """log P(name | audio) of every name (clips, names), float32 on the CPU; -inf for the
        names the search proved to be neither among the `top_k` best (this call's, else the
        ranker's) nor within `prune_margin` of the best. `encoder_mask` (clips, frames), 1 for frames to attend to, is for encoder
        outputs padded to a common length; Whisper's own encoder output has a fixed length and
        the model attends to all of it (HF ignores the mask), so pass None for Whisper.
        `stacked_cross`: the clips' cross-attention keys and values, if already computed
        (`stacked_cross_keys_values`; no mask). `known`: one clip's greedy decoding (with
        `stacked_cross`) whose transcript continues this ranker's decoder prompt: the prompt's
        state and the tree's nodes along the transcript's tokens (the span's own words in
        place, and any name spelled as they are) are read from it, not computed again."""
        decoder, projection = _parts(model)
        frames = [self._frames(encoder_hidden, encoder_mask, clip) for clip in range(encoder_hidden.shape[0])]
        if not frames:
            return torch.empty(0, len(self.lexicon))
        if known is not None:
            first = len(self.prompt_ids) - known.prompt_length
            if len(frames) != 1 or stacked_cross is None or self.prune_margin is None or first < 0 \
                    or list(known.tokens[:first]) != self.prompt_ids[known.prompt_length :]:
                raise ValueError("known greedy steps are one clip's, with its stacked cross-attention keys, for a pruned search "
                                 "whose prompt is the decoding's prompt and first tokens")
            return self._searched_scores(decoder, projection, frames, Prompted.from_steps(known, first, stacked_cross), top_k, known)
        prompted = None if self.prune_margin is None else Prompted(decoder, frames, self.prompt_ids, stacked_cross)
        return self._searched_scores(decoder, projection, frames, prompted, top_k)

    @torch.no_grad()
    def transcribe_and_score(
        self, model, encoder_hidden: torch.Tensor, top_k: int | None = None, max_new_tokens: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """From Whisper's encoder output (clips, frames, d_model): each clip's greedy transcript
        ids (clips, tokens; the prompt, the text, <|endoftext|>, then -100), every name's score
        as `scores` gives it, and each transcript's own score (clips,), on the same scale. The
        cross-attention keys and the prompt are computed once for both (`greedy_decode`)."""
        decoder, projection = _parts(model)
        frames = list(encoder_hidden)
        if not frames:
            return torch.empty(0, len(self.prompt_ids), dtype=torch.long), torch.empty(0, len(self.lexicon)), torch.empty(0)
        prompted = Prompted(decoder, frames, self.prompt_ids)
        tokens, own = self.greedy(model, prompted, max_new_tokens)
        generated = torch.full((len(frames), len(self.prompt_ids) + max(map(len, tokens))), -100, dtype=torch.long,
                               device=encoder_hidden.device)  # where generate's ids were: the trainer gathers them across processes
        for row, ids in enumerate(tokens):
            generated[row, : len(self.prompt_ids) + len(ids)] = torch.tensor(self.prompt_ids + ids, device=generated.device)
        return generated, self._searched_scores(decoder, projection, frames, prompted, top_k), own.float()

    def greedy(self, model, prompted: Prompted, max_new_tokens: int | None = None,
               steps: list[GreedySteps] | None = None) -> tuple[list[list[int]], torch.Tensor]:
        """Each prompted clip's greedy transcript (ids ending with <|endoftext|>) and its
        log-probability, as `generate` decodes it with the model's generation config (`steps`:
        see `greedy_decode`)."""
        decoder, projection = _parts(model)
        generation = getattr(model, "generation_config", None)
        # text tokens: `max_new_tokens` (None or 0: no limit) and what the decoder's positions leave after
        # the prompt and an <|endoftext|> (the limit `generated_scores` cuts at)
        text = getattr(model.config, "max_target_positions", MAX_POSITIONS) - len(self.prompt_ids) - 1
        return greedy_decode(
            decoder, projection, prompted, self.end_id, min(text, max_new_tokens or text) + 1,
            getattr(generation, "suppress_tokens", None), getattr(generation, "begin_suppress_tokens", None), steps,
        )

    def _searched_scores(
        self, decoder, projection, frames: list[torch.Tensor], prompted: Prompted | None, top_k: int | None,
        known: GreedySteps | None = None,
    ) -> torch.Tensor:
        """The names' scores by the pruned search over all clips at once (from `prompted`, the
        clips' prompted state), or, with `prune_margin` None, by exhaustive search clip by clip
        (the whole tree's keys would not fit for many)."""
        if self.prune_margin is None:
            searches = [self._exhaustive(decoder, projection, Prompted(decoder, [clip_frames], self.prompt_ids)) for clip_frames in frames]
        else:
            searches = [self._pruned(decoder, projection, prompted, top_k or self.top_k, known)]
        node_scores = torch.cat([search.exact for search in searches])
        self.last_stats = [stats for search in searches for stats in search.stats]
        result = self._name_scores(node_scores, complete_only=True)
        for stats, row in zip(self.last_stats, result):
            stats["names_scored"] = int(torch.isfinite(row).sum())
        return result.float()

    def rank(self, model, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor | None = None, top_k: int = 5) -> Ranking:
        return top_candidates(self.scores(model, encoder_hidden, encoder_mask, top_k), top_k)

    @torch.no_grad()
    def sequence_scores(
        self, model, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor | None, token_ids: list[list[int]]
    ) -> torch.Tensor:
        """log P(tokens | prompt, audio) of one token sequence per clip (the tokens after the
        prompt, as given: end them with <|endoftext|> for a complete text), teacher-forced: (clips,)."""
        decoder, projection = _parts(model)
        result = torch.empty(len(token_ids), dtype=torch.float64)
        for clip, row in enumerate(token_ids):
            if not row:
                result[clip] = 0.0  # the empty continuation: certain
                continue
            cross = _cross_keys_values(decoder, self._frames(encoder_hidden, encoder_mask, clip))
            ids = torch.tensor([self.prompt_ids + list(row)], device=encoder_hidden.device)
            states, _ = decoder_states(decoder, ids, cross)
            targets = ids[0, len(self.prompt_ids) :]
            positions = torch.arange(len(targets), device=targets.device)
            result[clip] = log_probabilities(projection, states[0, len(self.prompt_ids) - 1 : -1], positions, targets).double().sum().cpu()
        return result.float()

    def transcript_scores(
        self, model, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor | None, transcripts: list[str]
    ) -> torch.Tensor:
        """log P(text + <|endoftext|> | prompt, audio) of each clip's own free transcript, on the
        scale of `scores`. The text is spelled as Whisper writes it, after a space; give it as
        decoded (case and punctuation kept): lower-cased it is another, less likely sequence."""
        rows = [self.encode(" " + text.strip()) if text.strip() else [] for text in transcripts]
        return self.sequence_scores(model, encoder_hidden, encoder_mask, [self._complete(model, row) for row in rows])

    def generated_scores(self, model, encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor | None, generated: torch.Tensor) -> torch.Tensor:
        """log P(generated tokens + <|endoftext|> | prompt, audio) of each clip's own greedy
        transcript, scored exactly as generated (the ids, not their decoded text, which may
        tokenise otherwise): the prompt and anything after <|endoftext|> are dropped."""
        rows = []
        for row in generated.tolist():
            if row[: len(self.prompt_ids)] == self.prompt_ids:
                row = row[len(self.prompt_ids) :]
            rows.append(self._complete(model, row[: row.index(self.end_id)] if self.end_id in row else row))
        return self.sequence_scores(model, encoder_hidden, encoder_mask, rows)

    def _complete(self, model, tokens: list[int]) -> list[int]:
        """A continuation ended by <|endoftext|>, cut to fit the decoder's positions (448) after the prompt."""
        positions = getattr(model.config, "max_target_positions", MAX_POSITIONS)
        return tokens[: positions - len(self.prompt_ids) - 1] + [self.end_id]

    # ---- the search -----------------------------------------------------------------------

    @staticmethod
    def _frames(encoder_hidden: torch.Tensor, encoder_mask: torch.Tensor | None, clip: int) -> torch.Tensor:
        """One clip's encoder frames, padding dropped (attending to a frame with weight zero is
        not attending to it: the clip scores the same alone and in a padded batch)."""
        frames = encoder_hidden[clip]
        return frames if encoder_mask is None else frames[encoder_mask[clip].to(frames.device).bool()]

    def _name_scores(self, node_scores: torch.Tensor, complete_only: bool = False) -> torch.Tensor:
        """(clips, names): logsumexp of each name's reached spellings; with `complete_only`,
        -inf for a name not all of whose spellings were reached."""
        leaf_scores = node_scores[:, self.tree.leaf_of_sequence]
        spelled = torch.cat([leaf_scores, leaf_scores.new_full((len(leaf_scores), 1), -float("inf"))], 1)[:, self.name_rows]
        scores = spelled.logsumexp(-1)
        if complete_only:
            reached = torch.isfinite(spelled) | (self.name_rows == len(self.sequences))
            scores = scores.masked_fill(~reached.all(-1), -float("inf"))
        return scores

    def _plan(self, search: _Search, budget: torch.Tensor) -> _Round | None:
        """The next round of the pruned search, or None when no clip has an open name.

        A spelling's score is at most the bound of its deepest bounded prefix: its exact score
        once known, else the bound its parent's state gave it (see `_Search.run`); so a name's
        score is at most the logsumexp of those over its spellings. A name is open while that
        reaches its clip's threshold, min(K-th best, best - `prune_margin`) of the names' scores
        so far (lower bounds: logsumexp of their exactly scored spellings), and not all its
        spellings are exact. Each open spelling's deepest exactly scored prefix is then
        expanded (run through the decoder) or, if it was and only bounded, projected onto the
        whole vocabulary; each clip takes those within `round_band` nats of its best, at least
        `round_size`, at most `budget`, and its best one brings its small subtree (`lookahead`).
        """
        exact, bound, state = search.exact, search.bound, search.state
        clips, width = exact.shape
        paths = self.sequence_paths.expand(clips, -1, -1)
        # exactly scored and bounded nodes each form a prefix of a path
        deepest_exact = paths.gather(2, (torch.isfinite(exact[:, self.sequence_paths]).sum(-1) - 1)[..., None])[..., 0]
        deepest_bound = paths.gather(2, (torch.isfinite(bound[:, self.sequence_paths]).sum(-1) - 1)[..., None])[..., 0]
        padding = exact.new_full((clips, 1), -float("inf"))
        name_bound = torch.cat([bound.gather(1, deepest_bound), padding], 1)[:, self.name_rows].logsumexp(-1)
        lower = self._name_scores(exact)
        top = lower.topk(min(search.top_k, lower.shape[1]), dim=1).values
        threshold = torch.minimum(top[:, -1], top[:, 0] - self.prune_margin)
        if self.max_gap is not None:  # names that far below the best found so far are not ranked
            threshold = torch.maximum(threshold, top[:, 0] - self.max_gap)
        name_threshold = threshold[:, None]
        if self.name_gaps is not None:
            # further down, to its own gap, a name stays open while it could beat the best name found so far
            named = torch.isfinite(self.name_gaps)
            best_named = lower[:, named].max(1, keepdim=True).values
            reach = torch.maximum(best_named, top[:, :1] - self.name_gaps.masked_fill(~named, -float("inf")))
            name_threshold = torch.minimum(name_threshold, reach)
            threshold = name_threshold.min(1).values  # the loosest, for the round's cutoff
        open_names = name_bound >= name_threshold
        open_spellings = torch.zeros(clips, len(self.sequences) + 1)
        open_spellings.scatter_reduce_(1, self.name_rows.flatten().expand(clips, -1), open_names.float().repeat_interleave(self.name_rows.shape[1], 1), "amax")
        wanted = (open_spellings[:, :-1] > 0) & ~torch.isfinite(exact[:, self.tree.leaf_of_sequence])
        clip_of, spelling_of = torch.nonzero(wanted, as_tuple=True)
        keys, which = torch.unique(clip_of * width + deepest_exact[clip_of, spelling_of], return_inverse=True)
        if not len(keys):
            return None
        clip_of, node_of = keys // width, keys % width
        # a node's priority: the best bound of the open spellings it leads to
        score = torch.full((len(keys),), -float("inf"), dtype=torch.float64)
        score.scatter_reduce_(0, which, bound.gather(1, deepest_bound)[torch.nonzero(wanted, as_tuple=True)], "amax")
        order = torch.argsort(score, descending=True, stable=True)
        order = order[torch.argsort(clip_of[order], stable=True)]  # by clip, best first within each
        clip_of, node_of, score = clip_of[order], node_of[order], score[order]
        counts = torch.bincount(clip_of, minlength=clips)
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(clip_of)) - first[clip_of]
        best = score[first[clip_of]]
        chosen = (rank < torch.clamp(budget, max=self.max_batch_nodes)[clip_of]) & ((rank < self.round_size) | (score >= best - self.round_band))
        if not chosen.any():
            return None
        clip_of, node_of, rank = clip_of[chosen], node_of[chosen], rank[chosen]
        upgrade = state[clip_of, node_of] == BOUNDED
        # an expanded node is projected at once if a child's bound would be chosen next round
        chosen_best = torch.full_like(threshold, -float("inf")).scatter_reduce_(0, clip_of, best[chosen], "amax")
        cutoff = torch.maximum(threshold, chosen_best - self.round_band)
        plan = _Round(clip_of[~upgrade], node_of[~upgrade], torch.zeros(int((~upgrade).sum()), dtype=torch.bool),
                      clip_of[upgrade], node_of[upgrade], cutoff)
        if not self.lookahead:
            return plan
        # look ahead: each clip's best prefix, if it is to be expanded, brings its subtree when
        # that is small (one round instead of one a token where the model is sure); all of them
        # are projected whole, since each row's state needs its parent's exact score
        taken = torch.bincount(clip_of, minlength=clips)
        extra_clips, extra_nodes = [plan.clips], [plan.nodes]
        forced = [plan.forced]
        for clip, node in zip(clip_of[(rank == 0) & ~upgrade].tolist(), node_of[(rank == 0) & ~upgrade].tolist()):
            inner = self.tree.internal_in_subtree(node) - 1
            if 0 < inner <= min(self.lookahead, int(budget[clip] - taken[clip])):
                below = torch.arange(node + 1, int(self.tree.subtree_end[node]))
                below = below[self.tree.internal[below]]
                extra_clips.append(torch.full_like(below, clip))
                extra_nodes.append(below)
                forced.append(torch.ones(len(below), dtype=torch.bool))
                forced[0] = forced[0] | ((plan.clips == clip) & (plan.nodes == node))
        order = torch.argsort(torch.cat(extra_clips), stable=True)
        plan.clips, plan.nodes, plan.forced = torch.cat(extra_clips)[order], torch.cat(extra_nodes)[order], torch.cat(forced)[order]
        return plan

    def _pruned(self, decoder, projection, prompted: Prompted, top_k: int, known: GreedySteps | None = None) -> _Search:
        """Rounds over all clips at once until no clip has an open name (or budget left)."""
        search = _Search(self, decoder, projection, prompted, bounded=True, known=known)
        search.top_k = top_k
        unlimited = torch.full((len(prompted.roots),), len(self.tree))
        while True:
            spent = torch.tensor([stats["nodes_expanded"] + stats["projections"] for stats in search.stats])
            budget = unlimited if self.max_expansions is None else (self.max_expansions - spent).clamp(min=0)
            plan = self._plan(search, budget)
            if plan is None:
                break
            search.run(plan)
        unfinished = set()
        if self.max_expansions is not None and (plan := self._plan(search, unlimited)) is not None:
            unfinished = set(torch.cat([plan.clips, plan.upgrade_clips]).tolist())
        for clip, stats in enumerate(search.stats):
            stats["exact"] = clip not in unfinished
        return search

    def _exhaustive(self, decoder, projection, prompted: Prompted) -> _Search:
        """Every internal node of one clip, in preorder (ancestors first), `max_batch_nodes` at
        a time, keeping only the keys of nodes whose subtree is not done yet."""
        search, tree = _Search(self, decoder, projection, prompted, bounded=False), self.tree
        order = torch.nonzero(tree.internal)[1:, 0]
        for start in range(0, len(order), self.max_batch_nodes):
            chunk = order[start : start + self.max_batch_nodes]
            search.run(_Round(torch.zeros_like(chunk), chunk, torch.ones(len(chunk), dtype=torch.bool)))
            if start + self.max_batch_nodes < len(order):
                search.store.keep(tree.subtree_end[search.store.held[:, 1]] > order[start + self.max_batch_nodes])
        search.stats[0]["exact"] = True
        return search


UNEXPANDED, BOUNDED, PROJECTED = 0, 1, 2  # a node's state in a search
BOUND_SLACK = 1e-3  # nats added to a bound: float rounding must not put it below the exact score


class _Round:
    """One round of a search: nodes to run through the decoder (grouped by clip; `forced`: to
    project onto the whole vocabulary whatever their bound), nodes already run whose stored
    state is to be projected now, and per clip the bound from which a child makes its
    expanded parent worth projecting at once."""

    def __init__(self, clips, nodes, forced, upgrade_clips=None, upgrade_nodes=None, cutoff=None):
        self.clips, self.nodes, self.forced = clips, nodes, forced
        empty = torch.empty(0, dtype=torch.long)
        self.upgrade_clips = empty if upgrade_clips is None else upgrade_clips
        self.upgrade_nodes = empty if upgrade_nodes is None else upgrade_nodes
        self.cutoff = cutoff


class _Search:
    """The state of one search over a batch of clips, per (clip, node): the exact prefix score
    (-inf until known), an upper bound on it (the exact score when known, else what its
    parent's bounded expansion gave), and its state: `UNEXPANDED`, `BOUNDED` (run through the
    decoder, children bounded) or `PROJECTED` (children scored exactly); plus the nodes' cached
    keys and states and each clip's cross-attention keys.

    A round (`run`) runs its nodes through the decoder. A forced one (exhaustive search, or a
    look-ahead subtree, whose rows need their parents' exact scores) is projected onto the
    whole vocabulary at once. Any other is bounded: its children get upper bounds from the
    logsumexp over the bounding vocabulary (the tree's tokens: any subset's logsumexp is at
    most the full one). It is projected in the same round only if a child's bound reaches the
    round's cutoff (what the next round would pick anyway); otherwise it stays `BOUNDED`, and
    a later round projects its stored state only if a name below still needs it.

    With `known` greedy steps (one clip; see `WhisperRanker.scores`), the root's projection and
    every node along the decoding's own tokens come from them: stored and projected as if
    expanded (counted as `nodes_known`), with no decoder pass and no projection onto the
    vocabulary.
    """

    def __init__(self, ranker: WhisperRanker, decoder, projection, prompted: Prompted, bounded: bool, known: GreedySteps | None = None):
        self.ranker, self.decoder, self.projection, self.tree = ranker, decoder, projection, ranker.tree
        self.cross, self.prompt_keys, self.prompt_values = prompted.cross, prompted.keys, prompted.values
        self.stacked_cross = prompted.stacked  # per layer (clips, heads, frames, head_dim), or None for clips of several lengths
        device, dtype = prompted.roots.device, prompted.roots.dtype
        attention = decoder.layers[0].self_attn
        clips, tree = len(prompted.cross), ranker.tree
        self.store = _NodeStore(clips, len(tree), len(decoder.layers), attention.num_heads, attention.head_dim, dtype, device)
        self.exact = torch.full((clips, len(tree)), -float("inf"), dtype=torch.float64)
        self.exact[:, 0] = 0.0
        self.bound = self.exact.clone()
        self.state = torch.full((clips, len(tree)), UNEXPANDED, dtype=torch.int8)
        self.stats = [{"nodes_expanded": 1, "projections": 1, "projected_later": 0, "rounds": 1, "nodes_known": 0} for _ in range(clips)]
        self.top_k = ranker.top_k  # the names this search must rank exactly
        roots = prompted.roots
        if known is None:
            self._project(torch.arange(clips), torch.zeros(clips, dtype=torch.long), roots)
        else:
            self._seed(known, len(ranker.prompt_ids) - known.prompt_length)
        if bounded:  # the bounding vocabulary: every token of the tree
            subset = torch.unique(tree.tokens[1:]).to(device)
            self.subset_weight = projection.weight[subset]
            self.subset_bias = None if projection.bias is None else projection.bias[subset]

    def run(self, plan: _Round) -> None:
        """Expand `plan.nodes`, bound or project them, and project `plan.upgrade_nodes`."""
        tree, store = self.tree, self.store
        projected_clips, projected_nodes, projected_states = [plan.upgrade_clips], [plan.upgrade_nodes], []
        if len(plan.upgrade_nodes):
            projected_states.append(store.states[store.slot_of[plan.upgrade_clips, plan.upgrade_nodes].to(store.device)])
            for stats, count in zip(self.stats, torch.bincount(plan.upgrade_clips, minlength=len(self.stats)).tolist()):
                stats["projected_later"] += count
        if len(plan.nodes):
            slots = store.add(plan.clips, plan.nodes)
            hidden = self._node_states(plan.clips, plan.nodes, slots) if self.ranker.path_cache else self._path_states(plan.clips, plan.nodes)
            store.states[slots] = hidden
            full = plan.forced.clone()
            free = torch.nonzero(~plan.forced)[:, 0]
            if len(free):
                clips, nodes = plan.clips[free], plan.nodes[free]
                children, rows = tree.children_of(nodes)
                child_bound = self.exact[clips[rows], nodes[rows]] + self._upper_log_probabilities(hidden[free.to(hidden.device)], rows, tree.tokens[children])
                reaching = child_bound >= plan.cutoff[clips[rows]]
                needed = torch.zeros(len(free), dtype=torch.bool)
                needed[rows[reaching]] = True
                full[free[needed]] = True
                kept = ~needed[rows]
                self.bound[clips[rows][kept], children[kept]] = child_bound[kept]
                self.state[clips[~needed], nodes[~needed]] = BOUNDED
            projected_clips.append(plan.clips[full])
            projected_nodes.append(plan.nodes[full])
            projected_states.append(hidden[full.to(hidden.device)])
            for stats, count in zip(self.stats, torch.bincount(plan.clips, minlength=len(self.stats)).tolist()):
                stats["nodes_expanded"] += count
        clips, nodes = torch.cat(projected_clips), torch.cat(projected_nodes)
        if len(nodes):
            order = torch.argsort(clips, stable=True)
            self._project(clips[order], nodes[order], torch.cat(projected_states)[order.to(store.device)])
        for stats, count in zip(self.stats, torch.bincount(torch.cat([plan.clips, plan.upgrade_clips]), minlength=len(self.stats)).tolist()):
            stats["rounds"] += bool(count)

    def _seed(self, known: GreedySteps, first: int) -> None:
        """The root and the nodes along the greedy decoding's tokens from its `first` on (one
        clip), stored and projected from `known` (see the class docstring)."""
        tree, store = self.tree, self.store
        nodes, steps, node = [0], [first], 0
        for index in range(first, len(known.tokens) - 1):  # the last token was never read: its node would be a leaf
            children, _ = tree.children_of(torch.tensor([node]))
            match = children[tree.tokens[children] == known.tokens[index]]
            if not len(match) or not tree.internal[int(match[0])]:
                break
            node = int(match[0])
            nodes.append(node)
            steps.append(index + 1)  # its state predicts the next token
        nodes, steps = torch.tensor(nodes), torch.tensor(steps)
        clips = torch.zeros(len(nodes), dtype=torch.long)
        below = nodes[1:]  # the root's keys are the prompt's
        slots = store.add(clips[1:], below)
        positions = (known.prompt_length + steps[1:] - 1).to(store.device)
        for layer in range(len(self.decoder.layers)):
            store.keys(layer)[slots] = known.keys[layer][positions]
            store.values(layer)[slots] = known.values[layer][positions]
        states = known.states[steps.to(known.states.device)]
        store.states[slots] = states[1:]
        self._project(clips, nodes, states, known.log_normalisers[steps.to(known.states.device)])
        self.stats[0].update(nodes_known=len(nodes), nodes_expanded=0, projections=0)  # neither a decoder pass nor a projection

    def _upper_log_probabilities(self, hidden: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Upper bounds on log_softmax(projection(hidden))[rows, tokens]: the logit less the
        logsumexp over the bounding vocabulary only, on the CPU in float64."""
        device = hidden.device
        log_normaliser = torch.nn.functional.linear(hidden, self.subset_weight, self.subset_bias).float().logsumexp(-1)
        weight, bias = self.projection.weight, self.projection.bias
        rows, tokens = rows.to(device), tokens.to(device)
        chosen = (hidden[rows] * weight[tokens]).sum(-1).float()
        if bias is not None:
            chosen = chosen + bias[tokens].float()
        return (chosen - log_normaliser[rows]).double().cpu() + BOUND_SLACK

    def _project(self, clips: torch.Tensor, nodes: torch.Tensor, hidden: torch.Tensor, log_normalisers: torch.Tensor | None = None) -> None:
        """Score the children of `nodes` exactly from their final decoder states (rows, d_model)
        (and their logsumexps over the vocabulary, if known)."""
        tree = self.tree
        children, rows = tree.children_of(nodes)
        device = hidden.device
        rows, tokens = rows.to(device), tree.tokens[children].to(device)
        if log_normalisers is None:
            edge = log_probabilities(self.projection, hidden, rows, tokens).double().cpu()
        else:
            edge = known_log_probabilities(self.projection, hidden, rows, tokens, log_normalisers).double().cpu()
        rows = rows.cpu()
        exact, width = self.exact.view(-1), self.exact.shape[1]
        child_keys = clips[rows] * width + children
        parent_keys = clips[rows] * width + tree.parents[children]
        depths = tree.depth[children]
        for depth in torch.unique(depths).tolist():  # a parent in the same batch is scored first
            at = depths == depth
            exact[child_keys[at]] = exact[parent_keys[at]] + edge[at]
        self.bound.view(-1)[child_keys] = exact[child_keys]
        self.state[clips, nodes] = PROJECTED
        for stats, count in zip(self.stats, torch.bincount(clips, minlength=len(self.stats)).tolist()):
            stats["projections"] += count

    def _groups(self, clips: torch.Tensor) -> list[tuple[int, int, int]]:
        """(clip, first row, end row) of each run of rows of one clip."""
        values, counts = torch.unique_consecutive(clips, return_counts=True)
        ends = torch.cumsum(counts, 0).tolist()
        return [(clip, end - count, end) for clip, count, end in zip(values.tolist(), counts.tolist(), ends)]

    def _node_states(self, clips: torch.Tensor, nodes: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Final decoder states (rows, d_model) of `nodes`, one token each: self-attention over
        the prompt's and the path's cached keys (the path's nodes are stored or in this batch)."""
        tree, decoder, store = self.tree, self.decoder, self.store
        device = store.device
        prompt_length = len(self.ranker.prompt_ids)
        depth = tree.depth[nodes]
        longest = int(depth.max())
        on_path = torch.arange(longest) < depth[:, None]  # (rows, longest)
        path_slots = store.slot_of[clips[:, None], tree.paths[nodes, :longest]].masked_fill(~on_path, 0).to(device)
        row_clips = clips.to(device)
        # each row attends to the prompt (its clip's) and to its path: one fused attention call per
        # layer over (prompt + longest) keys, the positions past a row's depth masked
        attend = torch.cat([torch.ones(len(nodes), prompt_length, dtype=torch.bool), on_path], 1).to(device)[:, None, None, :]
        groups = self._groups(clips)
        if self.stacked_cross is not None:
            # rows laid out (clips of this round, their most rows): the cross-attention of all clips in
            # one batched product against the stacked keys, instead of a call per clip
            round_clips = torch.tensor([clip for clip, _, _ in groups], device=device)
            sizes = torch.tensor([end - first for _, first, end in groups])
            group_of = torch.repeat_interleave(torch.arange(len(groups)), sizes).to(device)
            place = torch.cat([torch.arange(end - first) for _, first, end in groups]).to(device)
            widest = max(end - first for _, first, end in groups)
        states = decoder.embed_tokens(tree.tokens[nodes].to(device)) + decoder.embed_positions.weight[(prompt_length + depth - 1).to(device)]
        for index, layer in enumerate(decoder.layers):
            attention = layer.self_attn
            hidden = layer.self_attn_layer_norm(states)
            queries = _split_heads(attention, attention.q_proj(hidden) * attention.scaling)  # (rows, heads, head_dim)
            store.keys(index)[slots] = _split_heads(attention, attention.k_proj(hidden))
            store.values(index)[slots] = _split_heads(attention, attention.v_proj(hidden))
            # (rows, prompt + longest, heads, head_dim)
            keys = torch.cat([self.prompt_keys[index][row_clips], store.keys(index)[path_slots]], 1)
            values = torch.cat([self.prompt_values[index][row_clips], store.values(index)[path_slots]], 1)
            output = torch.nn.functional.scaled_dot_product_attention(
                queries[:, :, None], keys.transpose(1, 2), values.transpose(1, 2), attn_mask=attend, scale=1.0)  # queries are scaled
            states = states + attention.out_proj(output.reshape(len(nodes), -1))
            if self.stacked_cross is None:
                cross = torch.cat([_cross_attention(layer, states[first:end], *self.cross[clip][index]) for clip, first, end in groups])
            else:
                cross = self._stacked_cross_attention(layer, index, states, round_clips, group_of, place, widest)
            states = states + cross
            states = states + _feed_forward(layer, states)
        return decoder.layer_norm(states)

    def _stacked_cross_attention(self, layer, index: int, states: torch.Tensor, round_clips: torch.Tensor, group_of: torch.Tensor,
                                 place: torch.Tensor, widest: int) -> torch.Tensor:
        """The cross-attention block's output for rows (rows, d_model) grouped by clip: row r is
        the `place[r]`-th of clip `round_clips[group_of[r]]`'s rows; one product per layer."""
        attention = layer.encoder_attn
        queries = attention.q_proj(layer.encoder_attn_layer_norm(states)) * attention.scaling
        padded = queries.new_zeros(len(round_clips), widest, queries.shape[-1])
        padded[group_of, place] = queries
        keys, values = self.stacked_cross[index]
        if len(round_clips) < len(keys):
            keys, values = keys[round_clips], values[round_clips]
        padded = padded.view(len(round_clips), widest, attention.num_heads, attention.head_dim).transpose(1, 2)
        output = torch.nn.functional.scaled_dot_product_attention(padded, keys, values, scale=1.0)  # (clips, heads, widest, head_dim)
        return attention.out_proj(output.transpose(1, 2)[group_of, place].reshape(len(states), -1))

    def _path_states(self, clips: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """The same states by running each node's whole path (prompt + tokens) again: no cache."""
        tree, device = self.tree, self.store.device
        depth = tree.depth[nodes]
        longest = int(depth.max())
        path_tokens = tree.tokens[tree.paths[nodes, :longest]].masked_fill(torch.arange(longest) >= depth[:, None], 0)
        ids = torch.cat([torch.tensor(self.ranker.prompt_ids).expand(len(nodes), -1), path_tokens], dim=1).to(device)
        last = (len(self.ranker.prompt_ids) + depth - 1).to(device)
        result = []
        for clip, first, end in self._groups(clips):
            states, _ = decoder_states(self.decoder, ids[first:end], self.cross[clip])
            result.append(states[torch.arange(end - first, device=device), last[first:end]])
        return torch.cat(result)
