"""LSTM decoder with a pluggable attention over the encoder's feature grid (Xu et al. 2015, section 3.1.2).

Per step t (teacher forcing feeds the reference word y_{t-1}; decoding feeds the previous prediction):

    z_t, weights = attention(memory, h_{t-1})        none | soft (Show-Attend-Tell) | sca (multi-layer SCA-CNN)
    h_t, c_t     = LSTM([E y_{t-1}; z_t], (h_{t-1}, c_{t-1}))
    p(y_t)       = softmax(W_o dropout(h_t))                                    output "linear"
                 = softmax(W_o dropout(tanh(W_h dropout(h_t) + b + E y_{t-1})))  output "deep"
    h_0, c_0     = tanh(f_init,h(pooled)), tanh(f_init,c(pooled))   pooled = mean_i a_i (section 3.1.2; for
                                                                     SCA the L2-normalized mean of layer4)

Output layer: ``linear`` is W_o h_t, as in the common PyTorch port. ``deep`` is the official SCA-CNN code's
(``prev2out=True``: the deep output of Xu et al. eq. 7, L_o(E y_{t-1} + L_h h_t), without its L_z z_t term, which
the official code leaves off too; W_h: D -> E, W_o: E -> V).
First input: ``bos`` embeds the ``<bos>`` token (a learnt vector); ``zero``, as the official code, feeds a zero
embedding at the first step (the ``<bos>`` row of E is zero and gets no gradient: ``nn.Embedding``'s
``padding_idx``).
"""

from __future__ import annotations

import torch
from torch import nn

from captioning.models.attention.registry import decoder_attention
from captioning.models.encoder import Encoder

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (B, D)
Memory = dict[str, torch.Tensor]  # batch-first tensors, one row per image (or beam)


class LSTMDecoder(nn.Module):
    """Attention LSTM decoder.

    Args:
        vocab_size: output vocabulary size V.
        encoder: the CNN whose maps the attention reads (sizes are taken from it; it is not stored here).
        embed_dim: word embedding size E.
        hidden_dim: LSTM size D.
        attn_dim: attention MLP size A (k in SCA-CNN).
        attention: decoder attention by name (:data:`~captioning.models.attention.registry.DECODER_ATTENTIONS`:
            ``none``, ``soft``, ``sca``, and any registered there).
        dropout: before the output layer (and, for ``deep``, also on h_t inside it, as the official code).
        output: ``linear`` (W_o h_t) or ``deep`` (see the module docstring).
        zero_token: the token whose embedding is a fixed zero vector (``<bos>`` for the official zero first input);
            None: every token has a learnt embedding.
        options: the attention's own settings (for ``sca``: ``order`` and ``layers``, see :class:`MultiLayerSCA`).
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        encoder: Encoder,
        embed_dim: int,
        hidden_dim: int,
        attn_dim: int,
        attention: str,
        dropout: float,
        output: str = "linear",
        zero_token: int | None = None,
        **options,
    ) -> None:
        super().__init__()
        if output not in ("linear", "deep"):
            raise ValueError(f"unknown output layer {output!r}; choose linear or deep")
        encoder_dim = encoder.out_channels
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=zero_token)
        self.attention = decoder_attention(attention, encoder, hidden_dim=hidden_dim, attn_dim=attn_dim, **options)
        self.init_h = nn.Linear(encoder_dim, hidden_dim)
        self.init_c = nn.Linear(encoder_dim, hidden_dim)
        self.lstm = nn.LSTMCell(embed_dim + encoder_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        # deep: W_h (D -> E, with the bias b), then W_o (E -> V)
        self.deep = nn.Linear(hidden_dim, embed_dim) if output == "deep" else None
        self.output = nn.Linear(embed_dim if self.deep is not None else hidden_dim, vocab_size)

    def prepare(self, encoder: Encoder, images: torch.Tensor) -> Memory:
        """images (B, 3, H, W) -> the per-image memory the attention reads at every step (CNN runs once)."""
        return self.attention.prepare(encoder, images)

    def init_state(self, memory: Memory) -> State:
        pooled = memory["pooled"]  # (B, C)
        return torch.tanh(self.init_h(pooled)), torch.tanh(self.init_c(pooled))  # (B, D) each

    def step(
        self, tokens: torch.Tensor, state: State, memory: Memory, encoder: Encoder
    ) -> tuple[torch.Tensor, State, dict[str, torch.Tensor]]:
        """One word: previous tokens (B,) -> logits (B, V), new state, attention weights by name."""
        words = self.embed(tokens)  # (B, E)
        state, weights = self.advance(words, state, memory, encoder)
        return self.logits(state[0], words), state, weights

    def advance(
        self, words: torch.Tensor, state: State, memory: Memory, encoder: Encoder
    ) -> tuple[State, dict[str, torch.Tensor]]:
        """The recurrence of one step without the output layer: embedded previous words E y_{t-1} (B, E) -> the new
        state and the attention weights by name. Teacher forcing embeds all words and applies :meth:`logits` to all
        steps at once, outside its loop over steps."""
        context, weights = self.attention(memory, state[0], encoder)  # (B, C), {name: (B, ...)}
        h, c = self.lstm(torch.cat([words, context], dim=1), state)  # (B, D) each
        return (h, c), weights

    def logits(self, hidden: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """p(y_t) before the softmax: h_t (..., D) and the step's input words E y_{t-1} (..., E) -> (..., V)."""
        out = self.dropout(hidden)  # (..., D)
        if self.deep is not None:
            out = self.dropout(torch.tanh(self.deep(out) + words))  # (..., E)
        return self.output(out)  # (..., V)
