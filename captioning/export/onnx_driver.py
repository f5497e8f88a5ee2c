"""Captions from an exported ONNX folder (:mod:`captioning.export.onnx`) with numpy and onnxruntime only: no torch.

This file imports numpy, onnxruntime, PIL and the standard library, nothing else of ``captioning``, so it can be
copied next to ``encoder.onnx``, ``decoder_step.onnx`` and ``onnx.json`` and run where PyTorch is not installed
(tests/export/test_onnx.py checks that captioning an image leaves ``torch`` unimported).

Decoding is :func:`captioning.decoding.beam_search` written again in numpy, step for step (see that module's
docstring for the scoring): all images x beams advance as one batch per step, beams are ranked by the penalized
score (``none``, ``average``, ``gnmt``; Wu et al. 2016, arXiv 1609.08144, sec. 7), a finished beam stays frozen at
the score it ended with, an image whose beams are all finished is held, and a beam still open after ``max_len``
words is ended there. ``<pad>``, ``<bos>`` (and ``<unk>`` under ``suppress_unk``) are never generated, ``<eos>``
not before ``min_len`` words, and with ``block_trigrams`` no word that would repeat a trigram. Greedy is one beam.
The captions are PyTorch's as long as no two candidates' scores lie within the graphs' float32 gap (about 1e-6).

Image files are read as :func:`captioning.data.images.load_image` reads them (EXIF orientation, 16-bit grey scaled
to 8 bits, transparency over white, RGB) and resized with PIL's bilinear filter, which antialiases when it shrinks,
as :func:`~captioning.data.images.resize_image` does with torchvision (whose uint8 antialiased bilinear kernel is
PIL's own). The two still round a few values differently: at most one level of 255 on under 0.5% of the values, on
PNG and JPEG pictures resized to 32, 96 and 224 px (tests/export/test_onnx.py checks this). The project decodes JPEGs
with torchvision's libjpeg-turbo and this file with PIL's; their pixels agreed in those tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from PIL import Image, ImageOps, UnidentifiedImageError

Arrays = dict[str, np.ndarray]
Step = Callable[[np.ndarray, list[np.ndarray], Arrays], tuple[np.ndarray, list[np.ndarray]]]
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # as captioning.data.images
FORMAT, VERSION = "captioning-onnx", 1  # what captioning.export.onnx writes
_KEYS = ("encoder", "decoder_step", "memory", "state", "vocabulary", "specials", "image_size", "mean", "std")


class OnnxCaptioner:
    """An exported captioner: its two ONNX graphs and ``onnx.json``, run on the CPU with onnxruntime.

    Args:
        folder: the folder :func:`captioning.export.onnx.export_onnx` wrote.
        threads: onnxruntime's intra-op threads (None: its default, one per physical core).

    Raises:
        FileNotFoundError: when ``onnx.json`` or a graph it names is missing (the message names the path).
        ValueError: when ``onnx.json`` is not such a file.
    """

    def __init__(self, folder: str | Path, *, threads: int | None = None) -> None:
        folder = Path(folder)
        path = folder / "onnx.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no onnx.json here; export a model with `captioning export --format onnx`")
        try:
            config = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        missing = [key for key in _KEYS if key not in config] if isinstance(config, dict) else list(_KEYS)
        if missing:
            raise ValueError(f"{path}: not an ONNX captioner config (missing {', '.join(missing)})")
        if config.get("format", FORMAT) != FORMAT or config.get("version", 1) > VERSION:
            raise ValueError(
                f"{path}: format {config.get('format')} version {config.get('version')}; this driver reads "
                f"{FORMAT} up to version {VERSION}"
            )
        self.config: dict[str, Any] = config
        self.words: list[str] = config["vocabulary"]
        specials = config["specials"]
        self.pad, self.bos, self.eos, self.unk = (int(specials[key]) for key in ("pad", "bos", "eos", "unk"))
        self.image_size = int(config["image_size"])
        self.mean = np.asarray(config["mean"], dtype=np.float32)  # (3,)
        self.std = np.asarray(config["std"], dtype=np.float32)  # (3,)
        self.decoding: dict[str, Any] = config.get("decoding", {})
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.encoder, self.decoder_step = (self._session(folder, config[key], options) for key in _KEYS[:2])
        self.memory_names: list[str] = config["memory"]
        self.state_names: list[str] = config["state"]
        self._step_inputs = {node.name for node in self.decoder_step.get_inputs()}  # graphs may drop unused inputs
        self._step_outputs = ["logits", *(f"next_{name}" for name in self.state_names)]

    @staticmethod
    def _session(folder: Path, graph: dict[str, Any], options: Any) -> Any:
        path = folder / graph["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: graph named in onnx.json is missing")
        return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    # -- the graphs ------------------------------------------------------------------------------------------------
    def pixels(self, images: np.ndarray | Sequence[str | Path]) -> np.ndarray:
        """uint8 images (B, S, S, 3), or image files (read and resized, see the module docstring) -> (B, S, S, 3)."""
        size = self.image_size
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
                raise ValueError(f"images must be uint8 (B, {size}, {size}, 3), got {images.dtype} {images.shape}")
            return images
        return np.stack([load_pixels(path, size) for path in images])

    def encode(self, pixels: np.ndarray) -> tuple[Arrays, list[np.ndarray]]:
        """uint8 pixels (B, S, S, 3) -> the memory by name and the initial state, as ``encoder.onnx`` returns them."""
        images = (pixels.astype(np.float32) / np.float32(255.0) - self.mean) / self.std  # (B, S, S, 3)
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))  # (B, 3, S, S)
        graph = self.config["encoder"]
        outputs = self.encoder.run(graph["outputs"], {graph["inputs"][0]: images})
        memory = dict(zip(self.memory_names, outputs[: len(self.memory_names)], strict=True))
        return memory, list(outputs[len(self.memory_names) :])

    def step(self, tokens: np.ndarray, state: list[np.ndarray], memory: Arrays) -> tuple[np.ndarray, list[np.ndarray]]:
        """tokens (R,) -> logits (R, V) and the next state: one word, as ``decoder_step.onnx`` computes it."""
        feeds = {"tokens": tokens.astype(np.int64), **dict(zip(self.state_names, state, strict=True)), **memory}
        logits, *state = self.decoder_step.run(
            self._step_outputs, {name: value for name, value in feeds.items() if name in self._step_inputs}
        )
        return logits, state

    # -- captions --------------------------------------------------------------------------------------------------
    def caption(
        self,
        images: np.ndarray | Sequence[str | Path] | str | Path,
        *,
        beam_size: int | None = None,
        max_len: int | None = None,
    ) -> list[dict[str, Any]]:
        """Captions images with the exported decoding settings (``onnx.json``), ``beam_size``/``max_len`` overriding.

        Args:
            images: uint8 (B, S, S, 3) RGB at the exported image size, or image file paths (or one path).
            beam_size: beams per image (1: greedy).
            max_len: most words per caption.

        Returns:
            One dict an image: ``caption`` (the words joined by spaces), ``words``, ``score`` (the beam's ranking
            score, :func:`captioning.decoding.beam_search`'s ``scores``).
        """
        if isinstance(images, (str, Path)):
            images = [images]
        if len(images) == 0:
            return []
        spec = self.decoding
        memory, state = self.encode(self.pixels(images))
        suppress = (self.pad, self.bos, *((self.unk,) if spec.get("suppress_unk", True) else ()))
        tokens, scores = beam_search(
            self.step,
            memory,
            state,
            bos=self.bos,
            eos=self.eos,
            max_len=max_len or spec.get("max_len", 16),
            beam_size=beam_size or spec.get("beam_size", 1),
            min_len=spec.get("min_len", 0),
            length_penalty=spec.get("length_penalty", "none"),
            length_alpha=spec.get("length_alpha", 0.6),
            block_trigrams=spec.get("block_trigrams", False),
            suppress=suppress,
        )
        results = []
        for row, score in zip(tokens, scores, strict=True):
            words = self.decode(row)
            results.append({"caption": " ".join(words), "words": words, "score": float(score)})
        return results

    def decode(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        """Word ids -> words, up to ``<eos>``, without ``<bos>`` and ``<pad>`` (as :meth:`Vocabulary.decode`)."""
        words = []
        for i in (int(i) for i in ids):
            if i == self.eos:
                break
            if i not in (self.bos, self.pad):
                words.append(self.words[i])
        return words


def beam_search(
    step: Step,
    memory: Arrays,
    state: list[np.ndarray],
    *,
    bos: int,
    eos: int,
    max_len: int,
    beam_size: int = 1,
    min_len: int = 0,
    length_penalty: str = "none",
    length_alpha: float = 0.6,
    block_trigrams: bool = False,
    suppress: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`captioning.decoding.beam_search` in numpy over a ``step`` function; -> the best beam's word ids
    (B, T), ``<eos>``-padded, and its penalized score (B,). A port, not a call: this file must not import torch
    (tests/export/test_onnx.py checks that both searches give the same tokens and scores on the same logits).

    Args:
        step: tokens (R,), the state (each (R, ...)), the memory -> logits (R, V) and the next state.
        memory: batch-first arrays, one row an image (repeated per beam here).
        state: the initial state, one row an image.
        bos, eos, max_len, beam_size, min_len, length_penalty, length_alpha, block_trigrams, suppress: as there.
    """
    suppress = tuple(suppress)
    if beam_size < 1 or max_len < 1 or not 0 <= min_len <= max_len:
        raise ValueError(
            f"need beam_size >= 1, max_len >= 1, 0 <= min_len <= max_len; got {beam_size}, {max_len}, {min_len}"
        )
    if length_penalty not in ("none", "average", "gnmt") or eos in suppress:
        raise ValueError(f"length_penalty must be none, average or gnmt (got {length_penalty!r}); eos unsuppressed")
    b, k = len(state[0]), beam_size
    memory = {name: np.repeat(value, k, axis=0) for name, value in memory.items()}  # (B*K, ...)
    state = [np.repeat(value, k, axis=0) for value in state]  # (B*K, ...)
    tokens = np.full(b * k, bos, dtype=np.int64)  # (B*K,) the last word of each beam
    log_probs = np.full((b, k), -np.inf, dtype=np.float32)
    log_probs[:, 0] = 0.0  # all beams start identical: expand only the first at step 0
    scores = log_probs.copy()  # (B, K) penalized
    lengths = np.zeros((b, k), dtype=np.float32)  # (B, K) scored tokens so far
    finished = np.zeros((b, k), dtype=bool)
    words = np.empty((b * k, 0), dtype=np.int64)  # (B*K, t)
    offsets = np.arange(b)[:, None] * k  # (B, 1) row of each image's first beam
    own = offsets + np.arange(k)  # (B, K) every beam its own parent
    for t in range(max_len + 1):  # at most max_len words, then <eos>
        logits, state = step(tokens, state, memory)  # (B*K, V)
        logp = _log_softmax(logits.astype(np.float32))  # (B*K, V)
        vocab = logp.shape[-1]
        if t == 0 and any(not 0 <= i < vocab for i in suppress):
            raise ValueError(f"suppressed ids must be in [0, {vocab}), got {list(suppress)}")
        banned = np.zeros(vocab, dtype=bool)
        banned[list(suppress)] = True
        banned[eos] = t < min_len
        if block_trigrams:
            banned = banned | _repeated_trigram_ban(words, vocab)  # (B*K, V)
            banned[:, eos] = t < min_len
        if t == max_len:  # out of room: every beam must end here
            banned = np.ones_like(banned)
            banned[..., eos] = False
        logp = np.where(banned, np.float32(-np.inf), logp)
        frozen = np.full(vocab, -np.inf, dtype=np.float32)
        frozen[eos] = 0.0  # a finished beam only repeats <eos>, at no cost
        logp = np.where(finished.reshape(-1, 1), frozen, logp).reshape(b, k, vocab)

        candidate_log_probs = log_probs[..., None] + logp  # (B, K, V)
        candidate_lengths = (lengths + (~finished).astype(np.float32))[..., None]  # (B, K, 1)
        candidates = _penalize(candidate_log_probs, candidate_lengths, length_penalty, length_alpha).reshape(b, -1)
        flat = _top(candidates, k)  # (B, K) best first
        top = np.take_along_axis(candidates, flat, axis=1)  # (B, K)
        beam = flat // vocab  # (B, K) parent beam within the image

        hold = (finished | np.isneginf(log_probs)).all(axis=1, keepdims=True)  # (B, 1) image done: keep it
        scores = np.where(hold, scores, top)
        log_probs = np.where(hold, log_probs, np.take_along_axis(candidate_log_probs.reshape(b, -1), flat, axis=1))
        lengths = np.where(hold, lengths, np.take_along_axis(candidate_lengths[..., 0], beam, axis=1))
        rows = np.where(hold, own, offsets + beam).reshape(-1)  # (B*K,)
        tokens = np.where(hold, eos, flat % vocab).reshape(-1)  # (B*K,) the word each new beam adds
        finished = finished.reshape(-1)[rows].reshape(b, k) | (tokens == eos).reshape(b, k)

        state = [value[rows] for value in state]
        words = np.concatenate([words[rows], tokens[:, None]], axis=1)  # (B*K, t+1)
        if bool((finished | np.isneginf(log_probs)).all()):
            break
    return words[offsets[:, 0]], scores[:, 0]  # beams are sorted: the first of each image is its best


def load_pixels(path: str | Path, image_size: int) -> np.ndarray:
    """An image file -> (S, S, 3) uint8 RGB, read and resized as the module docstring says; a missing or unreadable
    file raises a one-line error naming it (FileNotFoundError, ValueError)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            image.load()
            picture = _to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: cannot read image ({e})") from e
    return np.asarray(picture.resize((image_size, image_size), Image.Resampling.BILINEAR))  # (S, S, 3)


def _to_rgb(image: Image.Image) -> Image.Image:
    """:func:`captioning.data.images.to_rgb`, which this file cannot import (it imports torch)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT:
        values = np.asarray(image, dtype=np.int64)  # 0..65535 -> 0..255: divide by 257 = 65535 / 255
        image = Image.fromarray(np.clip(values // 257, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)  # (R, V)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _penalize(log_probs: np.ndarray, lengths: np.ndarray, kind: str, alpha: float) -> np.ndarray:
    """:func:`captioning.decoding.penalize`, in float32."""
    if kind == "none":
        return log_probs
    if kind == "average":
        return log_probs / lengths
    return log_probs / ((np.float32(5.0) + lengths) / np.float32(6.0)) ** np.float32(alpha)  # gnmt


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """scores (B, M) -> the indices of the k largest per row, best first; ties by index, as a stable sort."""
    if k < scores.shape[1]:
        picked = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # (B, K) in no order
    else:
        picked = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    values = np.take_along_axis(scores, picked, axis=1)
    order = np.lexsort((picked, -values), axis=1)  # by score descending, then index
    return np.take_along_axis(picked, order, axis=1)


def _repeated_trigram_ban(words: np.ndarray, vocab: int) -> np.ndarray:
    """words (R, t) -> (R, V) True for each word that would repeat a trigram already in its row."""
    rows, t = words.shape
    banned = np.zeros((rows, vocab + 1), dtype=bool)  # column V collects the non-matches
    if t >= 3:
        earlier = (words[:, :-2] == words[:, -2:-1]) & (words[:, 1:-1] == words[:, -1:])  # (R, t-2) bigram seen
        followers = np.where(earlier, words[:, 2:], vocab)  # (R, t-2) the word that followed it, or V
        banned[np.arange(rows)[:, None], followers] = True
    return banned[:, :vocab]
