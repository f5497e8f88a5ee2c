"""Caption generation over ``Captioner.step``: batched beam search, with greedy as beam size 1.

All B images x K beams advance together in one (B*K)-row batch per step; no Python loop over images or beams.
Beams of one image share its encoder memory (repeated per beam once, up front), so per step only the LSTM state
and the word histories are reordered; attention maps are gathered once at the end through back-pointers.

Scoring. A hypothesis' log-probability is the sum of the model's log-probabilities of its words and its
``<eos>``; its *length* counts those scored tokens (words + 1). Beams are ranked by the penalized score

    none     log p                                   (favours short captions)
    average  log p / length                          (mean log-probability per token)
    gnmt     log p / ((5 + length) / 6) ** alpha     (Wu et al. 2016, arXiv 1609.08144, sec. 7; alpha = 0.6
                                                      in Vaswani et al. 2017, arXiv 1706.03762, sec. 6.1)

Finished beams. A beam that emits ``<eos>`` stays in the beam, frozen: it only "emits" ``<eos>`` again, adding
nothing to its log-probability *and nothing to its length*, so its penalized score stays exactly the one it had
when it ended. Each step the K survivors are the top K of {open beam x word} and {frozen beam} by penalized
score, every candidate penalized at its own length. (Re-penalizing a frozen beam at the current step's length
would be wrong: under ``average`` its score would creep towards 0 as the search runs on, so early-ending beams
would win more the longer other beams keep going, and the winner would depend on when the batch stops.)
Open candidates of one step all have the same length, so among them the penalty does not change the order; it
only decides how open beams compete with finished ones. That comparison is the usual in-beam heuristic: an open
beam's penalized score is not a bound on its final one, so a finished beam can crowd out an open beam that would
later have beaten it. With beams enough to hold every candidate the search is exhaustive and exact
(tests/test_decoding.py checks this against brute force). The search ends when every beam of every image is
finished; an image whose beams are all finished is held as it is while others go on, so an image gives the same
result alone as in any batch. A beam still open after ``max_len`` words is ended there (its ``<eos>`` scored at
the model's probability), so a model that never emits ``<eos>`` still yields full-length captions.

Constraints (``min_len``, ``suppress``, ``block_trigrams``) remove candidates (log-probability -inf) without
renormalizing, so the reported log-probabilities are the model's own. ``<eos>`` is never trigram-blocked.
If fewer than K hypotheses are possible (a tiny vocabulary under constraints), the missing ones score -inf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from captioning.models.captioner import Captioner, Inputs, input_rows
from captioning.models.modes import in_inference_mode
from captioning.vocab import Vocabulary

LengthPenalty = Literal["none", "average", "gnmt"]


@dataclass(frozen=True)
class DecodingSpec:
    """How captions are generated (validation, test, predict, ``caption``): the settings of :func:`beam_search`.

    Args:
        beam_size: beams per image (1 = greedy).
        max_len: longest caption, in words.
        min_len: shortest caption, in words.
        length_penalty: how beams are ranked: ``none`` (sum of log-probabilities), ``average`` (per token) or
            ``gnmt`` (Wu et al. 2016, exponent ``length_alpha``); see the module docstring.
        length_alpha: the ``gnmt`` exponent.
        block_trigrams: forbid repeating a trigram within a caption.
        suppress_unk: never generate ``<unk>`` (``<pad>`` and ``<bos>`` are never generated either way).
    """

    beam_size: int = 1
    max_len: int = 16
    min_len: int = 0
    length_penalty: LengthPenalty = "none"
    length_alpha: float = 0.6
    block_trigrams: bool = False
    suppress_unk: bool = True


@dataclass
class Generation:
    """The ``n_best`` captions per image, best first; ``tokens``, ``scores``, ``attention`` are the best one's.

    Sequences hold word ids, then ``<eos>``, then ``<eos>`` padding up to T (the steps the search ran); attention
    weights after the ``<eos>`` step are 0.
    """

    nbest_tokens: torch.Tensor  # (B, n, T) word ids
    nbest_scores: torch.Tensor  # (B, n) penalized scores, the ranking (= nbest_log_probs without a penalty)
    nbest_log_probs: torch.Tensor  # (B, n) sums of the model's log-probabilities, <eos> included
    nbest_lengths: torch.Tensor  # (B, n) words in each caption (<eos> not counted)
    nbest_attention: dict[str, torch.Tensor]  # name -> (B, n, T, ...) weights at each generated token

    @property
    def tokens(self) -> torch.Tensor:
        return self.nbest_tokens[:, 0]  # (B, T)

    @property
    def scores(self) -> torch.Tensor:
        return self.nbest_scores[:, 0]  # (B,)

    @property
    def log_probs(self) -> torch.Tensor:
        return self.nbest_log_probs[:, 0]  # (B,)

    @property
    def attention(self) -> dict[str, torch.Tensor]:
        return {name: weights[:, 0] for name, weights in self.nbest_attention.items()}  # (B, T, ...) (alpha: (B, T, N))


def penalize(log_probs: torch.Tensor, lengths: torch.Tensor, kind: LengthPenalty, alpha: float) -> torch.Tensor:
    """Length-penalized score of hypotheses with summed ``log_probs`` over ``lengths`` scored tokens (see above)."""
    if kind == "none":
        return log_probs
    if kind == "average":
        return log_probs / lengths
    return log_probs / ((5.0 + lengths) / 6.0) ** alpha  # gnmt


def _repeated_trigram_ban(words: torch.Tensor, vocab: int) -> torch.Tensor:
    """words (R, t) -> (R, V) True for each word that would repeat a trigram already in its row."""
    rows, t = words.shape
    banned = words.new_zeros(rows, vocab + 1, dtype=torch.bool)  # column V collects the non-matches
    if t >= 3:
        earlier = (words[:, :-2] == words[:, -2:-1]) & (words[:, 1:-1] == words[:, -1:])  # (R, t-2) bigram seen
        followers = torch.where(earlier, words[:, 2:], vocab)  # (R, t-2) the word that followed it, or V
        banned.scatter_(1, followers, True)  # duplicates all write True: deterministic
    return banned[:, :vocab]


def _check(
    *,
    max_len: int,
    beam_size: int,
    min_len: int,
    n_best: int,
    eos: int,
    kind: str,
    alpha: float,
    suppress: tuple[int, ...],
) -> None:
    if beam_size < 1 or max_len < 1:
        raise ValueError(f"beam_size and max_len must be >= 1, got {beam_size} and {max_len}")
    if not 0 <= min_len <= max_len:
        raise ValueError(f"min_len must be in [0, max_len={max_len}], got {min_len}")
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be in [1, beam_size={beam_size}], got {n_best}")
    if kind not in ("none", "average", "gnmt"):
        raise ValueError(f"length_penalty must be none, average or gnmt, got {kind!r}")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"length_alpha must be a finite number >= 0, got {alpha}")
    if eos in suppress:
        raise ValueError(f"the end token {eos} cannot be suppressed")


@in_inference_mode
def beam_search(
    captioner: Captioner,
    images: Inputs,
    *,
    bos: int,
    eos: int,
    max_len: int,
    beam_size: int = 1,
    min_len: int = 0,
    length_penalty: LengthPenalty = "none",
    length_alpha: float = 0.6,
    block_trigrams: bool = False,
    suppress: Sequence[int] = (),
    n_best: int = 1,
) -> Generation:
    """Decodes captions of at most ``max_len`` words for images (B, 3, H, W); see the module docstring.

    The captioner runs in eval mode under ``torch.inference_mode`` (:func:`~captioning.models.modes.inference`),
    whatever mode the caller left it in, and gets its train/eval flags back afterwards: dropout and batch statistics
    would make beams random, and BatchNorm in train mode would update its running statistics.

    Args:
        captioner: the model.
        images: (B, 3, H, W), or their pre-extracted features (:meth:`Captioner.features`).
        bos: the start token fed at the first step.
        eos: the end token.
        max_len: most words per caption; a beam still open then is ended.
        beam_size: K beams per image; 1 is greedy decoding.
        min_len: fewest words per caption (``<eos>`` is suppressed before).
        length_penalty: ``none``, ``average`` or ``gnmt``: how beams are ranked.
        length_alpha: the exponent of the ``gnmt`` penalty.
        block_trigrams: forbid a word that would repeat a trigram the beam already holds.
        suppress: word ids never generated (e.g. ``<unk>``, ``<pad>``, ``<bos>``).
        n_best: captions returned per image (at most ``beam_size``).
    """
    suppress = tuple(suppress)
    _check(
        max_len=max_len,
        beam_size=beam_size,
        min_len=min_len,
        n_best=n_best,
        eos=eos,
        kind=length_penalty,
        alpha=length_alpha,
        suppress=suppress,
    )
    (b, device), k = input_rows(images), beam_size
    memory = {name: value.repeat_interleave(k, dim=0) for name, value in captioner.encode(images).items()}  # (B*K, ...)
    state = captioner.init_state(memory)
    tokens = torch.full((b * k,), bos, dtype=torch.long, device=device)  # (B*K,) the last word of each beam
    log_probs = torch.full((b, k), float("-inf"), device=device)
    log_probs[:, 0] = 0.0  # all beams start identical: expand only the first at step 0
    scores = log_probs.clone()  # (B, K) penalized
    lengths = torch.zeros(b, k, device=device)  # (B, K) scored tokens so far
    finished = torch.zeros(b, k, dtype=torch.bool, device=device)  # (B, K)
    words = tokens.new_empty(b * k, 0)  # (B*K, t) history of each beam
    offsets = torch.arange(b, device=device)[:, None] * k  # (B, 1) row of each image's first beam
    own = (offsets + torch.arange(k, device=device)).view(-1)  # (B*K,) every beam its own parent
    parents: list[torch.Tensor] = []  # per step: (B*K,) the row each new beam came from
    weights: list[dict[str, torch.Tensor]] = []  # per step: name -> (B*K, ...) attention of each parent row
    for t in range(max_len + 1):  # at most max_len words, then <eos>
        logits, state, step_weights = captioner.step(tokens, state, memory)  # (B*K, V), {name: (B*K, ...)}
        logp = torch.log_softmax(logits.float(), dim=-1)  # (B*K, V)
        vocab = logp.shape[-1]
        if t == 0 and any(not 0 <= i < vocab for i in suppress):
            raise ValueError(f"suppressed ids must be in [0, {vocab}), got {list(suppress)}")
        banned = torch.zeros(vocab, dtype=torch.bool, device=device)
        banned[list(suppress)] = True
        banned[eos] = t < min_len
        if block_trigrams:
            banned = banned | _repeated_trigram_ban(words, vocab)  # (B*K, V)
            banned[:, eos] = t < min_len
        if t == max_len:  # out of room: every beam must end here
            banned = torch.ones_like(banned)
            banned[..., eos] = False
        logp = logp.masked_fill(banned, float("-inf"))
        frozen = torch.full_like(logp[0], float("-inf"))
        frozen[eos] = 0.0  # a finished beam only repeats <eos>, at no cost
        logp = torch.where(finished.view(-1, 1), frozen, logp).view(b, k, vocab)

        candidate_log_probs = log_probs[..., None] + logp  # (B, K, V)
        candidate_lengths = (lengths + (~finished).float())[..., None]  # (B, K, 1): frozen beams stop growing
        candidates = penalize(candidate_log_probs, candidate_lengths, length_penalty, length_alpha)  # (B, K, V)
        top, flat = candidates.view(b, k * vocab).topk(k, dim=1)  # (B, K), sorted best first
        beam = flat // vocab  # (B, K) parent beam within the image

        hold = (finished | log_probs.isneginf()).all(dim=1, keepdim=True)  # (B, 1) image done: keep it as it is
        scores = torch.where(hold, scores, top)
        log_probs = torch.where(hold, log_probs, candidate_log_probs.view(b, -1).gather(1, flat))
        lengths = torch.where(hold, lengths, candidate_lengths[..., 0].gather(1, beam))
        rows = torch.where(hold, own.view(b, k), offsets + beam).view(-1)  # (B*K,)
        tokens = torch.where(hold, eos, flat % vocab).view(-1)  # (B*K,) the word each new beam adds
        finished = finished.view(-1)[rows].view(b, k) | (tokens == eos).view(b, k)

        state = (state[0][rows], state[1][rows])
        words = torch.cat([words[rows], tokens[:, None]], dim=1)  # (B*K, t+1)
        parents.append(rows)
        weights.append(step_weights)
        if bool((finished | log_probs.isneginf()).all()):
            break

    # Beams are sorted by score (topk sorts; held images were sorted when last changed): the first n are the n best.
    best = (offsets + torch.arange(n_best, device=device)).view(-1)  # (B*n,)
    steps = words.shape[1]
    sequences = words[best]  # (B*n, T)
    ends = torch.where(sequences == eos, torch.arange(steps, device=device), steps).amin(dim=1)  # (B*n,) <eos> step
    attention = _backtrack(parents, weights, best)  # name -> (B*n, T, ...)
    after_end = torch.arange(steps, device=device) > ends[:, None]  # (B*n, T)
    attention = {
        name: w.masked_fill(after_end.view(*after_end.shape, *[1] * (w.dim() - 2)), 0.0).view(b, n_best, *w.shape[1:])
        for name, w in attention.items()
    }  # name -> (B, n, T, ...)
    return Generation(
        nbest_tokens=sequences.view(b, n_best, steps),
        nbest_scores=scores[:, :n_best],
        nbest_log_probs=log_probs[:, :n_best],
        nbest_lengths=ends.view(b, n_best),
        nbest_attention=attention,
    )


def _backtrack(
    parents: list[torch.Tensor], weights: list[dict[str, torch.Tensor]], rows: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Attention of the final beams ``rows`` at every step, following back-pointers: name -> (R, T, ...)."""
    per_step: list[dict[str, torch.Tensor]] = []
    for step_parents, step_weights in zip(reversed(parents), reversed(weights), strict=True):
        rows = step_parents[rows]  # the row that computed this step's word (its weights) for each final beam
        per_step.append({name: w[rows] for name, w in step_weights.items()})
    per_step.reverse()
    return {name: torch.stack([w[name] for w in per_step], dim=1) for name in (per_step[0] if per_step else {})}


def greedy(captioner: Captioner, images: Inputs, *, bos: int, eos: int, max_len: int, **options: Any) -> Generation:
    """Greedy decoding: beam search with one beam (``options``: any of :func:`beam_search`'s but ``beam_size``)."""
    return beam_search(captioner, images, bos=bos, eos=eos, max_len=max_len, beam_size=1, **options)


def suppressed(spec: DecodingSpec, vocab: Vocabulary) -> tuple[int, ...]:
    """Word ids never generated: ``<pad>``, ``<bos>`` and, with ``spec.suppress_unk``, ``<unk>``."""
    return (vocab.pad, vocab.bos, *((vocab.unk,) if spec.suppress_unk else ()))


def decode_with(
    captioner: Captioner, images: Inputs, spec: DecodingSpec, vocab: Vocabulary, *, beam_size: int | None = None
) -> Generation:
    """:func:`beam_search` with the settings of ``spec`` and the special words of ``vocab`` (``beam_size`` overrides
    ``spec.beam_size``): how training, evaluation and the Python API generate."""
    return beam_search(
        captioner,
        images,
        bos=vocab.bos,
        eos=vocab.eos,
        max_len=spec.max_len,
        beam_size=beam_size or spec.beam_size,
        min_len=spec.min_len,
        length_penalty=spec.length_penalty,
        length_alpha=spec.length_alpha,
        block_trigrams=spec.block_trigrams,
        suppress=suppressed(spec, vocab),
    )
