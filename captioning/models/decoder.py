"""LSTM decoder with a pluggable attention over the encoder's feature grid (Xu et al. 2015, section 3.1.2).

Per step t (teacher forcing feeds the reference word y_{t-1}; decoding feeds the previous prediction):

    z_t, alpha_t = attention(memory, h_{t-1})
    h_t, c_t     = LSTM([E y_{t-1}; z_t], (h_{t-1}, c_{t-1}))
    p(y_t)       = softmax(W_o dropout(h_t))
    h_0, c_0     = tanh(f_init,h(mean_i a_i)), tanh(f_init,c(mean_i a_i))      (section 3.1.2)

Deviation: the output layer is W_o h_t (as in the common PyTorch port), not the paper's deep output
L_o(E y_{t-1} + L_h h_t + L_z z_t).
"""

from __future__ import annotations

import torch
from torch import nn

from captioning.models.attention.soft import decoder_attention

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (B, D)


class LSTMDecoder(nn.Module):
    """Attention LSTM decoder.

    Args:
        vocab_size: output vocabulary size V.
        encoder_dim: channels C of the feature grid.
        embed_dim: word embedding size E.
        hidden_dim: LSTM size D.
        attn_dim: attention MLP size A.
        attention: decoder attention by name (``none``, ``soft``).
        dropout: before the output layer.
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        encoder_dim: int,
        embed_dim: int,
        hidden_dim: int,
        attn_dim: int,
        attention: str,
        dropout: float,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.attention = decoder_attention(attention, encoder_dim=encoder_dim, hidden_dim=hidden_dim, attn_dim=attn_dim)
        self.init_h = nn.Linear(encoder_dim, hidden_dim)
        self.init_c = nn.Linear(encoder_dim, hidden_dim)
        self.lstm = nn.LSTMCell(embed_dim + encoder_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_dim, vocab_size)

    def prepare(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """features (B, N, C) -> the per-image memory the attention reads at every step."""
        return self.attention.prepare(features)

    def init_state(self, memory: dict[str, torch.Tensor]) -> State:
        pooled = memory["features"].mean(dim=1)  # (B, C)
        return torch.tanh(self.init_h(pooled)), torch.tanh(self.init_c(pooled))  # (B, D) each

    def step(
        self, tokens: torch.Tensor, state: State, memory: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, State, torch.Tensor]:
        """One word: previous tokens (B,) -> logits (B, V), new state, alpha_t (B, N)."""
        context, alphas = self.attention(memory, state[0])  # (B, C), (B, N)
        h, c = self.lstm(torch.cat([self.embed(tokens), context], dim=1), state)  # (B, D) each
        return self.output(self.dropout(h)), (h, c), alphas
