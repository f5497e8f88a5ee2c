"""Captioner: encoder + decoder as one nn.Module, with teacher-forced ``forward`` and a ``step`` API for decoding.

Read top to bottom, this file is one training step: ``encode`` runs the CNN once per image and prepares the
decoder's memory; ``forward`` loops the decoder over the reference words (teacher forcing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from captioning.models.decoder import LSTMDecoder, State
from captioning.models.encoder import ResNetEncoder


@dataclass(frozen=True)
class EncoderSpec:
    """The encoder's constructor arguments (see :class:`ResNetEncoder`), as plain data a checkpoint can carry."""

    depth: int = 18
    attention: Literal["none", "se", "cbam"] = "none"
    weights: str | None = None
    width: int = 64
    trainable: bool = True


@dataclass(frozen=True)
class DecoderSpec:
    """The decoder's constructor arguments (see :class:`LSTMDecoder`) other than the sizes linked from elsewhere."""

    attention: Literal["none", "soft"] = "soft"
    embed_dim: int = 256
    hidden_dim: int = 512
    attn_dim: int = 256
    dropout: float = 0.5


class Captioner(nn.Module):
    """Image captioner.

    Args:
        encoder: images (B, 3, H, W) -> features (B, C, h, w).
        decoder: the attention LSTM.
        blind: zero the image features (a language-model-only baseline that shows what the image adds).
    """

    def __init__(self, encoder: ResNetEncoder, decoder: LSTMDecoder, *, blind: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.blind = blind

    @classmethod
    def build(cls, vocab_size: int, encoder: EncoderSpec, decoder: DecoderSpec, *, blind: bool = False) -> Captioner:
        cnn = ResNetEncoder(
            encoder.depth,
            attention=encoder.attention,
            weights=encoder.weights,
            width=encoder.width,
            trainable=encoder.trainable,
        )
        lstm = LSTMDecoder(
            vocab_size,
            encoder_dim=cnn.out_channels,
            embed_dim=decoder.embed_dim,
            hidden_dim=decoder.hidden_dim,
            attn_dim=decoder.attn_dim,
            attention=decoder.attention,
            dropout=decoder.dropout,
        )
        return cls(cnn, lstm, blind=blind)

    def encode(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, 3, H, W) -> decoder memory (batch-first tensors; ``features`` is (B, N, C), N = h*w)."""
        if self.blind:  # run the CNN on one image only, for the feature shape
            with torch.no_grad():
                probe = self.encoder(images[:1])  # (1, C, h, w)
            grid = probe.new_zeros((images.shape[0], *probe.shape[1:]))  # (B, C, h, w)
        else:
            grid = self.encoder(images)  # (B, C, h, w)
        return self.decoder.prepare(grid.flatten(2).transpose(1, 2))  # features (B, N, C)

    def init_state(self, memory: dict[str, torch.Tensor]) -> State:
        return self.decoder.init_state(memory)

    def step(
        self, tokens: torch.Tensor, state: State, memory: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, State, torch.Tensor]:
        """tokens (B,) -> logits (B, V), state, alphas (B, N)."""
        return self.decoder.step(tokens, state, memory)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: images (B, 3, H, W), input tokens (B*R, T) -> logits (B*R, T, V), alphas (B*R, T, N).

        R >= 1 captions per image, image-major: each image is encoded once and its memory repeated R times.
        """
        repeats, remainder = divmod(tokens.shape[0], images.shape[0])
        if remainder or not repeats:
            raise ValueError(f"{tokens.shape[0]} captions do not split evenly over {images.shape[0]} images")
        memory = self.encode(images)
        if repeats > 1:
            memory = {name: value.repeat_interleave(repeats, dim=0) for name, value in memory.items()}  # (B*R, ...)
        state = self.init_state(memory)
        logits, alphas = [], []
        for t in range(tokens.shape[1]):
            step_logits, state, step_alphas = self.step(tokens[:, t], state, memory)
            logits.append(step_logits)
            alphas.append(step_alphas)
        return torch.stack(logits, dim=1), torch.stack(alphas, dim=1)  # (B, T, V), (B, T, N)
