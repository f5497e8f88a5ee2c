"""The Python API: :func:`load` a model (a training checkpoint, a folder written by ``captioning export``, or a
Hugging Face Hub repository id), then caption images given as files, PIL images, numpy arrays or tensors.

    import captioning

    model = captioning.load("outputs/shapes/checkpoints/best.ckpt", device="cpu")
    results = model.caption(["a.png", pil_image, array_hwc_uint8, tensor_chw], beam_size=3, attention=True)
    results[0].caption, results[0].words, results[0].score, results[0].attention["layer4"].spatial  # (T, h, w)

Every input becomes the picture the model was trained on: 8-bit RGB (:mod:`captioning.data.images`: EXIF
orientation, transparency over white), resized in uint8 to the model's square input (antialiased bilinear, as the
image cache stores it), then normalized. Arrays and tensors are RGB, uint8 (0..255) or float (0..1, rounded to
8 bits first, so ``x / 255`` captions exactly like ``x``); never ImageNet-normalized: that is the model's own step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from captioning.checkpoints import load_checkpoint
from captioning.data.images import load_resized, normalize_image, to_rgb
from captioning.decoding import DecodingSpec, LengthPenalty, decode_with
from captioning.errors import CaptioningError
from captioning.export import pretrained
from captioning.models.attention.weights import AttentionWeights
from captioning.models.captioner import Captioner
from captioning.models.modes import inference
from captioning.module import CaptioningModule
from captioning.viz.figures import split_generation
from captioning.vocab import Vocabulary

ImageInput = str | Path | Image.Image | np.ndarray | torch.Tensor
HUB_TIMEOUT_S = 2.0  # how long load("org/name") waits for the Hub before saying it cannot be reached
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # the Hub's "namespace/name"


@dataclass(frozen=True)
class LayerAttention:
    """One attended layer's weights over a caption: row t is the attention when the t-th token was generated."""

    spatial: np.ndarray | None  # (T, h, w): over the layer's h x w grid, each row sums to 1; None without one
    channel: np.ndarray | None  # (T, C): SCA-CNN's channel weights (beta); None without a channel step


@dataclass(frozen=True)
class Caption:
    """One image's caption.

    Attributes:
        caption: the text.
        words: its words, then ``<eos>`` where the search generated it: one per attention row.
        score: the beam's ranking score (the summed log-probability, length-penalized as ``length_penalty`` says).
        log_prob: the summed log-probability of the words and ``<eos>``.
        attention: attended layer -> its weights (``final`` for soft attention's single map; an empty dict for a
            model without attention); None unless ``attention=True``.
    """

    caption: str
    words: list[str]
    score: float
    log_prob: float
    attention: dict[str, LayerAttention] | None = None


class CaptioningModel:
    """A captioner ready for inference: weights, vocabulary, input size and default decoding settings.

    Args:
        captioner: the network.
        vocab: its vocabulary.
        image_size: the square input side it was trained on.
        decoding: the default settings of :meth:`caption`.
        config: what ``config.json`` records (specs, provenance, validation scores; :mod:`captioning.export`).
    """

    def __init__(
        self, captioner: Captioner, vocab: Vocabulary, *, image_size: int, decoding: DecodingSpec, config: dict
    ) -> None:
        self.captioner = captioner
        self.vocab = vocab
        self.image_size = image_size
        self.decoding = decoding
        self.config = config

    @classmethod
    def from_module(cls, module: CaptioningModule, *, checkpoint: str | Path | None = None) -> CaptioningModel:
        """The model of a training module (``checkpoint``: the file it was read from, for its provenance)."""
        config = pretrained.module_config(module, checkpoint=checkpoint)
        decoding = pretrained.decoding_spec(config)
        return cls(module.captioner, module.vocab, image_size=config["image_size"], decoding=decoding, config=config)

    @property
    def device(self) -> torch.device:
        return next(self.captioner.parameters()).device

    def to(self, device: str | torch.device) -> CaptioningModel:
        """Moves the weights to ``device``; returns the model."""
        self.captioner.to(device)
        return self

    def fingerprint(self) -> str:
        """A SHA-256 of what decides the captions besides the decoding settings: the weights and buffers (names and
        bytes), the vocabulary, the input size and ``blind``. The same for a checkpoint and its export."""
        settings = {"words": self.vocab.words, "image_size": self.image_size, "blind": self.captioner.blind}
        digest = hashlib.sha256(json.dumps(settings).encode())
        for name, tensor in sorted(self.captioner.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def settings(self, **overrides: object) -> DecodingSpec:
        """The default decoding settings with ``overrides`` (:class:`DecodingSpec` fields) replaced; None keeps the
        default. An unknown name raises ``TypeError`` (from :func:`dataclasses.replace`)."""
        return dataclasses.replace(self.decoding, **{k: v for k, v in overrides.items() if v is not None})

    def prepare(self, image: ImageInput) -> torch.Tensor:
        """One image (a path, a PIL image, an (H, W, 3) array or a (3, H, W) tensor; see the module docstring) ->
        the model's input pixels (3, S, S) uint8. An unreadable file raises a one-line :class:`CaptioningError`."""
        side = self.image_size
        if isinstance(image, str | Path):
            return load_resized(image, side)  # (3, S, S)
        if isinstance(image, Image.Image):
            pixels = v2.functional.pil_to_tensor(to_rgb(image))  # (3, H, W) uint8
        elif isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"an image array must be (H, W, 3) RGB, got shape {image.shape}")
            pixels = _to_uint8(torch.tensor(image).permute(2, 0, 1))  # (3, H, W); a copy: arrays may be read-only
        elif isinstance(image, torch.Tensor):
            if image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(f"an image tensor must be (3, H, W) RGB, got shape {tuple(image.shape)}")
            pixels = _to_uint8(image.detach().cpu())
        else:
            raise TypeError(f"cannot caption a {type(image).__name__}: give a path, PIL image, array or tensor")
        return v2.functional.resize(pixels, [side, side], antialias=True)  # (3, S, S) uint8

    def caption(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        batch_size: int = 32,
        attention: bool = False,
        beam_size: int | None = None,
        max_len: int | None = None,
        min_len: int | None = None,
        length_penalty: LengthPenalty | None = None,
        length_alpha: float | None = None,
        block_trigrams: bool | None = None,
        suppress_unk: bool | None = None,
    ) -> list[Caption]:
        """Captions ``images`` (one image, a list of them, a (B, 3, H, W) tensor or a (B, H, W, 3) array),
        ``batch_size`` at a time; one :class:`Caption` per image, in order (a single image gives a list of one).

        Runs in eval mode under ``torch.inference_mode`` whatever mode the captioner was left in, and puts its
        train/eval flags back (:func:`~captioning.models.modes.inference`).

        Args:
            images: paths, PIL images, arrays or tensors (see the module docstring).
            batch_size: images per forward pass.
            attention: also return each caption's attention weights per attended layer.
            beam_size: beams (1 = greedy); this and the other decoding settings default to :attr:`decoding`.
            max_len: most words per caption.
            min_len: fewest words per caption.
            length_penalty: ``none``, ``average`` or ``gnmt`` (:mod:`captioning.decoding`).
            length_alpha: the ``gnmt`` exponent.
            block_trigrams: forbid repeating a trigram within a caption.
            suppress_unk: never generate ``<unk>``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        decoding = self.settings(
            beam_size=beam_size,
            max_len=max_len,
            min_len=min_len,
            length_penalty=length_penalty,
            length_alpha=length_alpha,
            block_trigrams=block_trigrams,
            suppress_unk=suppress_unk,
        )
        items = _as_list(images)
        out: list[Caption] = []
        for first in range(0, len(items), batch_size):
            pixels = torch.stack([self.prepare(item) for item in items[first : first + batch_size]])  # (B, 3, S, S)
            out += self.caption_pixels(pixels, decoding=decoding, attention=attention)
        return out

    def caption_pixels(
        self, pixels: torch.Tensor, *, decoding: DecodingSpec | None = None, attention: bool = False
    ) -> list[Caption]:
        """Prepared pixels (B, 3, S, S) uint8 (:meth:`prepare`) -> one :class:`Caption` per image."""
        decoding = decoding or self.decoding
        vocab = self.vocab
        with inference(self.captioner):
            images = normalize_image(pixels).to(self.device)  # (B, 3, S, S) float
            generation = decode_with(self.captioner, images, decoding, vocab)  # as training decodes
        captions = [vocab.decode(row) for row in generation.tokens]
        items = split_generation(captions, generation, pixels.permute(0, 2, 3, 1).numpy())  # pixels: (B, S, S, 3)
        return [
            Caption(
                item.caption,
                item.words,
                float(generation.scores[row]),
                float(generation.log_probs[row]),
                _layers(item.attention) if attention else None,
            )
            for row, item in enumerate(items)
        ]


def _to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """(3, H, W) uint8, or float in 0..1 -> uint8 (rounded)."""
    if pixels.dtype == torch.uint8:
        return pixels
    if not pixels.is_floating_point():
        raise ValueError(f"image pixels must be uint8 (0..255) or float (0..1), got {pixels.dtype}")
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"float image pixels must lie in 0..1 (RGB / 255, not normalized), got values from {low:.3g} to {high:.3g}"
        )
    return (pixels.float() * 255.0).round().to(torch.uint8)


def _as_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """One image or a batch of them -> a list of single images."""
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)  # (B, 3, H, W)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)  # (B, H, W, 3)
    if isinstance(images, str | Path | Image.Image | np.ndarray | torch.Tensor):
        return [images]
    return list(images)


def _layers(flat: dict[str, torch.Tensor]) -> dict[str, LayerAttention]:
    """One image's weights by name (:class:`AttentionWeights` flat names, (T, N) and (T, C)) -> per attended layer,
    the spatial maps on their square grid (T, h, w) and the channel weights (T, C)."""
    weights = AttentionWeights.of(flat)
    out = {}
    for layer in [*weights.spatial, *(name for name in weights.channel if name not in weights.spatial)]:
        spatial, channel = weights.spatial.get(layer), weights.channel.get(layer)
        maps = None
        if spatial is not None:
            side = math.isqrt(spatial.shape[-1])  # the input is square, so every attended grid is too
            if side * side != spatial.shape[-1]:
                raise ValueError(f"attention over {spatial.shape[-1]} locations of {layer} is not a square grid")
            maps = spatial.float().reshape(spatial.shape[0], side, side).numpy()  # (T, h, w)
        out[layer] = LayerAttention(maps, None if channel is None else channel.float().numpy())  # (T, C)
    return out


def load(source: str | Path, *, device: str | torch.device = "cpu") -> CaptioningModel:
    """A model from a training checkpoint (``.ckpt``), a folder written by ``captioning export`` (or its Hub
    download), or a Hugging Face Hub repository id (``org/name``: read from the local Hub cache, else downloaded).

    Raises:
        CaptioningError: one line naming ``source``: no such file or folder; not a model; the Hub id is neither
            cached nor reachable.
    """
    path = Path(source)
    if path.is_dir():
        return _from_folder(path, device)
    if path.is_file():
        return CaptioningModel.from_module(load_checkpoint(path, map_location=device), checkpoint=path)
    if isinstance(source, str) and _REPO_ID.fullmatch(source) and path.suffix not in (".ckpt", ".pt", ".json"):
        return _from_folder(hub_snapshot(source), device)
    raise CaptioningError(f"{source}: checkpoint not found (no such .ckpt file or exported model folder)")


def _from_folder(folder: Path, device: str | torch.device) -> CaptioningModel:
    captioner, vocab, config = pretrained.load_pretrained(folder, device=device)
    decoding = pretrained.decoding_spec(config, source=str(folder / pretrained.CONFIG_NAME))
    return CaptioningModel(captioner, vocab, image_size=int(config["image_size"]), decoding=decoding, config=config)


def hub_snapshot(repo_id: str) -> Path:
    """The local folder of Hub model ``repo_id``: from the Hugging Face cache, else downloaded. Offline (or with
    ``HF_HUB_OFFLINE`` set) it fails at once instead of waiting out the Hub client's timeouts and retries."""
    from huggingface_hub import constants, snapshot_download  # only for Hub ids: the import takes a while
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    files = [pretrained.CONFIG_NAME, pretrained.WEIGHTS_NAME, "README.md"]  # what an export holds, nothing else
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=files))
    except LocalEntryNotFoundError:
        pass
    except HFValidationError as e:
        raise CaptioningError(f"{repo_id}: not a file, a folder or a valid Hugging Face Hub id ({e})") from e
    # Through a proxy no direct connection may open even where the Hub answers: then the download's own timeout says.
    proxied = any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))
    if constants.HF_HUB_OFFLINE or not (proxied or _reachable(constants.ENDPOINT, timeout=HUB_TIMEOUT_S)):
        raise CaptioningError(
            f"{repo_id}: model not found locally (no such file or folder, not in the Hugging Face cache) and the "
            f"Hugging Face Hub ({constants.ENDPOINT}) cannot be reached"
        )
    try:
        return Path(snapshot_download(repo_id, etag_timeout=HUB_TIMEOUT_S, allow_patterns=files))
    except RepositoryNotFoundError as e:
        raise CaptioningError(f"{repo_id}: no such model on the Hugging Face Hub (or it is private)") from e
    except (HfHubHTTPError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CaptioningError(f"{repo_id}: download from the Hugging Face Hub failed ({first})") from e


def _reachable(url: str, *, timeout: float) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds, name lookup included (which
    ``socket.create_connection``'s own timeout does not bound: it runs in a thread that is not waited for)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    opened = threading.Event()

    def connect() -> None:
        try:
            with socket.create_connection((parsed.hostname, port), timeout=timeout):
                opened.set()
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return opened.is_set()
