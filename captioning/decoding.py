"""Caption generation over ``Captioner.step``: batched beam search, with greedy as beam size 1.

All B images x K beams advance together in one (B*K)-row batch per step; no Python loop over images or beams.
Beams of one image share its encoder memory, so only the LSTM state and the histories are reordered.
A beam that emits ``<eos>`` is frozen (it keeps its score and emits ``<eos>``); a beam still open after
``max_len`` words is ended there, so a model that never emits ``<eos>`` still yields full-length captions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from captioning.models.captioner import Captioner


@dataclass
class Generation:
    """Best caption per image."""

    tokens: torch.Tensor  # (B, T) word ids; <eos> (then <eos>) after the caption ends
    scores: torch.Tensor  # (B,) sum of log-probabilities
    attention: dict[str, torch.Tensor]  # name -> (B, T, ...) weights at each generated word (alpha: (B, T, N))


def _repeat(x: torch.Tensor, k: int) -> torch.Tensor:
    return x.repeat_interleave(k, dim=0)  # (B, ...) -> (B*K, ...), beams of an image adjacent


@torch.no_grad()
def beam_search(
    captioner: Captioner, images: torch.Tensor, *, bos: int, eos: int, max_len: int, beam_size: int = 1
) -> Generation:
    """Decodes captions of at most ``max_len`` words for images (B, 3, H, W)."""
    if beam_size < 1 or max_len < 1:
        raise ValueError(f"beam_size and max_len must be >= 1, got {beam_size} and {max_len}")
    b, k = images.shape[0], beam_size
    memory = {name: _repeat(value, k) for name, value in captioner.encode(images).items()}  # (B*K, ...)
    state = captioner.init_state(memory)
    tokens = torch.full((b * k,), bos, dtype=torch.long, device=images.device)  # (B*K,)
    scores = torch.full((b, k), float("-inf"), device=images.device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first at step 0
    finished = torch.zeros(b * k, dtype=torch.bool, device=images.device)  # (B*K,)
    words = tokens.new_empty(b * k, 0)  # (B*K, t) history of each beam
    history: dict[str, torch.Tensor] = {}  # name -> (B*K, t, ...) attention weights of each beam
    offsets = torch.arange(b, device=images.device)[:, None] * k  # (B, 1) row of each image's first beam
    for t in range(max_len + 1):  # at most max_len words, then <eos>
        logits, state, weights = captioner.step(tokens, state, memory)  # (B*K, V), {name: (B*K, ...)}
        logp = torch.log_softmax(logits.float(), dim=-1)  # (B*K, V)
        if t == max_len:  # out of room: every beam must end here
            forced = torch.full_like(logp, float("-inf"))
            forced[:, eos] = logp[:, eos]
            logp = forced
        frozen = torch.full_like(logp[0], float("-inf"))
        frozen[eos] = 0.0  # a finished beam only repeats <eos>, at no cost
        logp = torch.where(finished[:, None], frozen, logp)
        vocab = logp.shape[-1]
        candidates = scores[..., None] + logp.view(b, k, vocab)  # (B, K, V)
        scores, flat = candidates.view(b, k * vocab).topk(k, dim=1)  # (B, K), sorted best first
        rows = (offsets + flat // vocab).view(-1)  # (B*K,) the parent beam of each new beam
        tokens = (flat % vocab).view(-1)  # (B*K,) the word each new beam adds
        state = (state[0][rows], state[1][rows])
        words = torch.cat([words[rows], tokens[:, None]], dim=1)  # (B*K, t+1)
        history = {
            name: torch.cat([history[name][rows], w[rows, None]], dim=1) if name in history else w[rows, None]
            for name, w in weights.items()
        }  # (B*K, t+1, ...)
        finished = finished[rows] | (tokens == eos)
        if bool(finished.all()):
            break
    best = offsets.view(-1)  # (B,) topk sorts, so beam 0 of each image is its best
    return Generation(tokens=words[best], scores=scores[:, 0], attention={n: h[best] for n, h in history.items()})


def greedy(captioner: Captioner, images: torch.Tensor, *, bos: int, eos: int, max_len: int) -> Generation:
    """Greedy decoding: beam search with one beam."""
    return beam_search(captioner, images, bos=bos, eos=eos, max_len=max_len, beam_size=1)
