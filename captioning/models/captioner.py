"""Captioner: encoder + decoder as one nn.Module, with teacher-forced ``forward`` and a ``step`` API for decoding.

Read top to bottom, this file is one training step: ``encode`` runs the CNN once per image and prepares the
decoder's memory; ``forward`` loops the decoder over the reference words (teacher forcing).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from captioning.errors import ConfigError
from captioning.models.attention.registry import DECODER_ATTENTIONS
from captioning.models.backbones import RESNET_LAYERS, VGG_CONFIGS
from captioning.models.cbam import BACKBONE_ATTENTIONS
from captioning.models.decoder import LSTMDecoder, Memory, State
from captioning.models.encoder import Encoder, ResNetEncoder, VGGEncoder

Features = dict[str, torch.Tensor]  # pre-extracted CNN maps by name, batch-first (see Captioner.features)
Inputs = torch.Tensor | Features  # images (B, 3, H, W), or their features


@dataclass(frozen=True)
class EncoderSpec:
    """The encoder's constructor arguments (see :class:`ResNetEncoder`, :class:`VGGEncoder`), as plain data a
    checkpoint can carry.

    ``arch`` picks the network: ``resnet`` (depth 18, 34, 50, 101, 152; ``attention`` in every block), ``vgg`` or
    ``vgg_bn`` (depth 16 or 19, torchvision's plain or BN layout; ``attention`` must be ``none``). Checkpoints
    saved before ``arch`` existed load as ``resnet`` (the class default fills the missing field).
    """

    depth: int = 18
    attention: str = "none"  # a name of BACKBONE_ATTENTIONS: none, se, cbam (or one registered there)
    weights: str | None = None
    width: int = 64
    trainable: bool = True
    arch: Literal["resnet", "vgg", "vgg_bn"] = "resnet"
    output_stride: Literal[32, 16] = 32
    train_attention: bool | None = None  # CBAM/SE train where the rest is frozen; None: if grafted onto weights
    train_modules: tuple[str, ...] = ()  # with trainable false: backbone modules that still train (layer4.2.conv3)

    def __post_init__(self) -> None:
        depths = RESNET_LAYERS if self.arch == "resnet" else VGG_CONFIGS
        if self.depth not in depths:
            raise ConfigError(f"encoder depth must be one of {sorted(depths)} for arch {self.arch}, got {self.depth}")
        if self.attention not in BACKBONE_ATTENTIONS:
            raise ConfigError(f"encoder attention must be one of {sorted(BACKBONE_ATTENTIONS)}, got {self.attention!r}")
        if self.arch != "resnet" and self.output_stride != 32:
            raise ConfigError("output_stride 16 is a ResNet option (VGG's last convs are at stride 16 already)")
        if self.arch != "resnet" and self.attention != "none":
            raise ConfigError(
                f"encoder arch {self.arch} has no backbone attention: set attention none, not {self.attention}"
            )


@dataclass(frozen=True)
class DecoderSpec:
    """The decoder's constructor arguments (see :class:`LSTMDecoder`) other than the sizes linked from elsewhere."""

    attention: str = "soft"  # a name of DECODER_ATTENTIONS: none, soft, sca (or one registered there)
    embed_dim: int = 256
    hidden_dim: int = 512
    attn_dim: int = 256
    dropout: float = 0.5
    sca_order: Literal["cs", "sc", "c", "s"] = "cs"
    sca_layers: tuple[str, ...] = ()  # level names of the attended maps (Encoder.level_names()); () = the paper's two
    output: Literal["linear", "deep"] = "linear"  # W_o h_t, or the official deep output (see LSTMDecoder)
    first_input: Literal["bos", "zero"] = "bos"  # the <bos> embedding, or the official zero vector

    def __post_init__(self) -> None:
        if self.attention not in DECODER_ATTENTIONS:
            raise ConfigError(f"decoder attention must be one of {sorted(DECODER_ATTENTIONS)}, got {self.attention!r}")


class Captioner(nn.Module):
    """Image captioner.

    Args:
        encoder: images (B, 3, H, W) -> features (B, C, h, w).
        decoder: the attention LSTM.
        blind: zero the image features (a language-model-only baseline that shows what the image adds).
    """

    def __init__(self, encoder: Encoder, decoder: LSTMDecoder, *, blind: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.blind = blind

    @classmethod
    def build(
        cls,
        vocab_size: int,
        encoder: EncoderSpec,
        decoder: DecoderSpec,
        *,
        blind: bool = False,
        bos: int = 1,
        load_weights: bool = True,
    ) -> Captioner:
        """The captioner the specs describe; ``bos``: the ``<bos>`` index (``first_input`` zero fixes its embedding).
        ``load_weights`` False builds it without fetching ``encoder.weights`` (whose name still shapes the model), for
        a state dict that replaces every tensor: loading a checkpoint or an export needs neither the network nor the
        ImageNet file (which torch.hub would unpickle)."""
        if encoder.arch == "resnet":
            cnn: Encoder = ResNetEncoder(
                encoder.depth,
                attention=encoder.attention,
                weights=encoder.weights,
                width=encoder.width,
                trainable=encoder.trainable,
                output_stride=encoder.output_stride,
                train_attention=encoder.train_attention,
                train_modules=encoder.train_modules,
                load_weights=load_weights,
            )
        else:
            cnn = VGGEncoder(
                encoder.depth,
                batch_norm=encoder.arch == "vgg_bn",
                weights=encoder.weights,
                width=encoder.width,
                trainable=encoder.trainable,
                train_modules=encoder.train_modules,
                load_weights=load_weights,
            )
        options = {"order": decoder.sca_order, "layers": decoder.sca_layers} if decoder.attention == "sca" else {}
        lstm = LSTMDecoder(
            vocab_size,
            encoder=cnn,
            embed_dim=decoder.embed_dim,
            hidden_dim=decoder.hidden_dim,
            attn_dim=decoder.attn_dim,
            attention=decoder.attention,
            dropout=decoder.dropout,
            output=decoder.output,
            zero_token=bos if decoder.first_input == "zero" else None,
            **options,
        )
        return cls(cnn, lstm, blind=blind)

    def features(self, images: torch.Tensor) -> Features:
        """images (B, 3, H, W) -> what the decoder attention reads from the CNN below the layers it recomputes (for
        SCA the last block's input and the lowest attended map, else the final map): what ``captioning extract``
        stores for a frozen encoder, and what :meth:`encode` takes instead of the images."""
        return self.decoder.attention.features(self.encoder, images)

    def encode(self, inputs: Inputs) -> Memory:
        """images (B, 3, H, W), or their :meth:`features` -> decoder memory: batch-first tensors the attention reads
        at every step."""
        if isinstance(inputs, dict):
            prepare = functools.partial(self.decoder.attention.from_features, self.encoder)
        else:
            prepare = functools.partial(self.decoder.prepare, self.encoder)
        if not self.blind:
            return prepare(inputs)
        with torch.no_grad():  # blind: one image for the shapes, then zeros for every image
            probe = prepare(_first_row(inputs))
        rows, _ = input_rows(inputs)
        return {name: value.new_zeros((rows, *value.shape[1:])) for name, value in probe.items()}

    def init_state(self, memory: Memory) -> State:
        return self.decoder.init_state(memory)

    def step(
        self, tokens: torch.Tensor, state: State, memory: Memory
    ) -> tuple[torch.Tensor, State, dict[str, torch.Tensor]]:
        """tokens (B,) -> logits (B, V), state, attention weights by name (``alpha``: (B, N), ...)."""
        return self.decoder.step(tokens, state, memory, self.encoder)

    def forward(
        self,
        images: Inputs,
        tokens: torch.Tensor,
        *,
        lengths: torch.Tensor | None = None,
        sample_prob: float = 0.0,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Teacher forcing: images (B, 3, H, W) (or their :meth:`features`), input tokens (B*R, T) -> logits
        (B*R, T, V) and attention weights by name, each stacked over steps: (B*R, T, ...).

        R >= 1 captions per image, image-major: each image is encoded once and its memory repeated R times.
        ``lengths`` (B*R,): each row's number of real steps. Then the decoder runs, at step t, only the rows still
        going (t < length), as in the common Show-Attend-Tell PyTorch port (its ``decode_lengths``); their logits
        and weights after their end are zeros, which a loss that ignores padding never reads. Each row's own
        positions are computed as without ``lengths``: the steps are row-wise, with BN on running statistics in the
        recomputed layers. On the shapes captions a third of the (row, step) pairs of a batch are padding, and every
        step of SCA-CNN recomputes a CNN layer for every row it runs.
        ``sample_prob``: scheduled sampling (Bengio et al. 2015, arXiv 1506.03099): from the second step on, each
        row's input word is, with this probability, drawn from the model's previous output distribution instead of
        the reference word (no gradient through the draw).
        """
        rows, steps = tokens.shape
        images_in = input_rows(images)[0]
        repeats, remainder = divmod(rows, images_in)
        if remainder or not repeats:
            raise ValueError(f"{rows} captions do not split evenly over {images_in} images")
        memory = self.encode(images)
        if repeats > 1:
            memory = {name: value.repeat_interleave(repeats, dim=0) for name, value in memory.items()}  # (B*R, ...)
        if lengths is None:
            return self._teacher_force(tokens, memory, [rows] * steps, sample_prob)
        if lengths.shape != (rows,):
            raise ValueError(f"lengths has shape {tuple(lengths.shape)}, expected ({rows},): one per caption row")
        order = torch.argsort(lengths, descending=True, stable=True)  # (B*R,) longest first: running rows, a prefix
        running = (lengths[None, :] > torch.arange(steps, device=lengths.device)[:, None]).sum(dim=1)  # (T,)
        logits, weights = self._teacher_force(
            tokens[order], {name: value[order] for name, value in memory.items()}, running.tolist(), sample_prob
        )
        restore = torch.argsort(order)  # (B*R,): back to the caller's row order
        return logits[restore], {name: value[restore] for name, value in weights.items()}

    def _teacher_force(
        self, tokens: torch.Tensor, memory: Memory, running: list[int], sample_prob: float
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The decoder over tokens (R, T), step t on the first ``running[t]`` rows only (non-increasing counts);
        rows past their count get zero logits and weights. -> logits (R, T, V), weights {name: (R, T, ...)}."""
        rows, steps = tokens.shape
        running = [active for active in running if active]  # steps after every row has ended are not run
        if not running:
            raise ValueError("every caption has length 0: nothing to decode")
        state = self.init_state(memory)
        decoder = self.decoder
        embedded = decoder.embed(tokens) if not sample_prob else None  # (R, T, E): all reference words at once
        outputs: list[torch.Tensor] = []  # step t: logits (n_t, V) when sampling, else h_t (n_t, D)
        words: list[torch.Tensor] = []  # step t: the input words E y_{t-1} (n_t, E) when not sampling
        weights: list[dict[str, torch.Tensor]] = []  # step t: {name: (n_t, ...)}
        for t, active in enumerate(running):
            state = (state[0][:active], state[1][:active])  # (n_t, D): the rows that ended are dropped for good
            now = {name: value[:active] for name, value in memory.items()}
            if embedded is not None:
                words.append(embedded[:active, t])  # (n_t, E)
                state, step_weights = decoder.advance(words[-1], state, now, self.encoder)
                outputs.append(state[0])  # (n_t, D)
            else:
                word = tokens[:active, t]  # (n_t,)
                if t > 0:
                    previous = outputs[-1][:active].detach().float()  # (n_t, V)
                    drawn = torch.multinomial(F.softmax(previous, dim=-1), 1).squeeze(1)  # (n_t,)
                    word = torch.where(torch.rand(word.shape, device=word.device) < sample_prob, drawn, word)
                step_logits, state, step_weights = self.step(word, state, now)  # (n_t, V), ..., {name: (n_t, ...)}
                outputs.append(step_logits)
            weights.append(step_weights)
        if embedded is not None:  # the output layer once, on every (row, step) that ran, packed: (sum_t n_t, V)
            outputs = list(decoder.logits(torch.cat(outputs), torch.cat(words)).split(running))
        stacked = {name: _pad_steps([w[name] for w in weights], rows, steps) for name in weights[0]}
        return _pad_steps(outputs, rows, steps), stacked  # (R, T, V), {name: (R, T, ...)}


def input_rows(inputs: Inputs) -> tuple[int, torch.device]:
    """The number of images and their device, for images (B, 3, H, W) or their features {name: (B, ...)}."""
    first = next(iter(inputs.values())) if isinstance(inputs, dict) else inputs
    return first.shape[0], first.device


def _first_row(inputs: Inputs) -> Inputs:
    return {name: value[:1] for name, value in inputs.items()} if isinstance(inputs, dict) else inputs[:1]


def _pad_steps(outputs: list[torch.Tensor], rows: int, steps: int) -> torch.Tensor:
    """Per-step outputs of the first n_t rows, each (n_t, ...) -> (rows, steps, ...), zeros for the rows that had
    ended and the steps never run. One padding op for the whole loop, not one per step (the per-step ops are what
    a training step's time goes to, see benchmarks/train_step.py)."""
    padded = torch.nn.utils.rnn.pad_sequence(outputs, batch_first=True).transpose(0, 1)  # (n_0, T', ...)
    return _zero_pad(_zero_pad(padded, rows, dim=0), steps, dim=1)  # (rows, steps, ...)


def _zero_pad(x: torch.Tensor, size: int, *, dim: int) -> torch.Tensor:
    """Zeros appended along ``dim`` up to ``size`` (the rows that ended, the steps never run); a no-op when full."""
    if x.shape[dim] == size:
        return x
    shape = list(x.shape)
    shape[dim] = size - x.shape[dim]
    return torch.cat([x, x.new_zeros(shape)], dim=dim)
