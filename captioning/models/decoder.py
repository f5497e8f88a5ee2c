"""LSTM decoder with a pluggable attention over the encoder's feature grid (Xu et al. 2015, section 3.1.2).

Per step t (teacher forcing feeds the reference word y_{t-1}; decoding feeds the previous prediction):

    z_t, weights = attention(memory, h_{t-1})        none | soft (Show-Attend-Tell) | sca (multi-layer SCA-CNN)
    h_t, c_t     = LSTM([E y_{t-1}; z_t], (h_{t-1}, c_{t-1}))
    p(y_t)       = softmax(W_o dropout(h_t))
    h_0, c_0     = tanh(f_init,h(pooled)), tanh(f_init,c(pooled))   pooled = mean_i a_i (section 3.1.2; for
                                                                     SCA the L2-normalized mean of layer4)

Deviation: the output layer is W_o h_t (as in the common PyTorch port), not the paper's deep output
L_o(E y_{t-1} + L_h h_t + L_z z_t).
"""

from __future__ import annotations

import torch
from torch import nn

from captioning.models.attention.soft import MeanAttention, SoftAttention
from captioning.models.encoder import Encoder

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (B, D)
Memory = dict[str, torch.Tensor]  # batch-first tensors, one row per image (or beam)


def decoder_attention(kind: str, encoder: Encoder, *, hidden_dim: int, attn_dim: int, **sca) -> nn.Module:
    """Registry of decoder attention by name: ``none`` (mean pooling), ``soft`` (Show-Attend-Tell), ``sca``."""
    if kind == "none":
        return MeanAttention()
    if kind == "soft":
        return SoftAttention(encoder.out_channels, hidden_dim, attn_dim)
    if kind == "sca":
        from captioning.models.attention.multilayer import MultiLayerSCA

        return MultiLayerSCA(encoder, hidden_dim=hidden_dim, attn_dim=attn_dim, **sca)
    raise ValueError(f"unknown decoder attention {kind!r}; choose none, soft or sca")


class LSTMDecoder(nn.Module):
    """Attention LSTM decoder.

    Args:
        vocab_size: output vocabulary size V.
        encoder: the CNN whose maps the attention reads (sizes are taken from it; it is not stored here).
        embed_dim: word embedding size E.
        hidden_dim: LSTM size D.
        attn_dim: attention MLP size A (k in SCA-CNN).
        attention: decoder attention by name (``none``, ``soft``, ``sca``).
        dropout: before the output layer.
        sca: for ``sca``: ``order`` and ``layers`` (see :class:`MultiLayerSCA`).
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
        **sca,
    ) -> None:
        super().__init__()
        encoder_dim = encoder.out_channels
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.attention = decoder_attention(attention, encoder, hidden_dim=hidden_dim, attn_dim=attn_dim, **sca)
        self.init_h = nn.Linear(encoder_dim, hidden_dim)
        self.init_c = nn.Linear(encoder_dim, hidden_dim)
        self.lstm = nn.LSTMCell(embed_dim + encoder_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_dim, vocab_size)

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
        state, weights = self.advance(self.embed(tokens), state, memory, encoder)
        return self.logits(state[0]), state, weights

    def advance(
        self, words: torch.Tensor, state: State, memory: Memory, encoder: Encoder
    ) -> tuple[State, dict[str, torch.Tensor]]:
        """The recurrence of one step without the output layer: embedded previous words E y_{t-1} (B, E) -> the new
        state and the attention weights by name. Teacher forcing embeds all words and applies :meth:`logits` to all
        steps at once, outside its loop over steps."""
        context, weights = self.attention(memory, state[0], encoder)  # (B, C), {name: (B, ...)}
        h, c = self.lstm(torch.cat([words, context], dim=1), state)  # (B, D) each
        return (h, c), weights

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """p(y_t) before the softmax: h_t (..., D) -> (..., V)."""
        return self.output(self.dropout(hidden))
