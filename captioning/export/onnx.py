"""ONNX export of a captioner: the encoder and one decoder step as two graphs, and ``onnx.json`` to drive them.

The split follows :meth:`Captioner.encode` / :meth:`Captioner.step`: ``encoder.onnx`` runs the CNN once per image
and also returns the LSTM's initial state (``init_state`` is part of the model, so no caller reimplements it);
``decoder_step.onnx`` is one word for any number of rows (images x beams), attention included. For multi-layer
SCA-CNN (Chen et al. 2017, arXiv 1611.05594, sec. 3) that step graph holds the last block's layers between the
attended maps, recomputed at every word, exactly as :class:`~captioning.models.attention.multilayer.MultiLayerSCA`
runs them. Beam search stays outside the graphs: :mod:`captioning.export.onnx_driver` reproduces
:func:`~captioning.decoding.beam_search` in numpy.

Files written into the output folder:

- ``encoder.onnx``: ``images`` (B, 3, S, S), normalized float32 -> the memory tensors by name (``pooled`` (B, C),
  and per attention ``features``/``projected`` or ``block_input``/``low``), then the initial state.
- ``decoder_step.onnx``: ``tokens`` (B,) int64, the state, the memory -> ``logits`` (B, V), the next state
  (``next_`` + its name), and the step's attention weights by name (``alpha``, ``alpha.<layer>``, ``beta.<layer>``).
- ``onnx.json``: those names in order, the vocabulary and its special ids, the image size and normalization, the
  decoding defaults (:class:`~captioning.decoding.DecodingSpec`), and which weights are spatial or channel.

Every tensor is batch-first with a dynamic batch. After writing, both graphs are checked with ``onnx.checker`` and
run with onnxruntime against PyTorch at batch sizes other than the traced one (3 images, 33 decoder rows): an
exporter that specializes a shape silently (see :func:`_export_graph`) fails the export instead of a later caption.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from captioning.data.images import IMAGENET_MEAN, IMAGENET_STD
from captioning.decoding import DecodingSpec
from captioning.errors import CaptioningError
from captioning.models.attention.weights import AttentionWeights
from captioning.models.captioner import Captioner
from captioning.vocab import Vocabulary

FORMAT = "captioning-onnx"
FORMAT_VERSION = 1
ENCODER_FILE, STEP_FILE, CONFIG_FILE = "encoder.onnx", "decoder_step.onnx", "onnx.json"
EXAMPLE_IMAGES = 2  # traced batch; torch.export specializes sizes 0 and 1, so the example needs two rows
CHECK_IMAGES, CHECK_BEAMS = 3, 11  # the parity check runs other batch sizes: 3 images, 33 decoder rows
# onnxruntime vs PyTorch, float32: max |difference| <= ATOL + RTOL * max |PyTorch| per output. Scaled by the output's
# largest entry, not each entry's own: float32 rounding grows with the magnitudes summed (a random ResNet-50's final
# map, entries up to 242, differs by up to 3e-4, also where an entry is near 0). Seen on the demo's logits: 3e-6.
RTOL, ATOL = 1e-3, 1e-4


def export_onnx(
    captioner: Captioner,
    vocab: Vocabulary,
    *,
    image_size: int,
    decoding: DecodingSpec,
    out: str | Path,
    opset: int | None = None,
) -> list[Path]:
    """Writes ``encoder.onnx``, ``decoder_step.onnx`` and ``onnx.json`` into the folder ``out`` (made if missing).

    The captioner runs in eval mode while it is traced, and gets every submodule's train/eval flag and every
    parameter's ``requires_grad`` back afterwards.

    Args:
        captioner: the model (on any device; the graphs are traced where it lies).
        vocab: its vocabulary (words and special ids go into ``onnx.json``).
        image_size: the square input side S the model expects.
        decoding: the decoding defaults the driver uses when a call does not override them.
        out: the output folder.
        opset: the ONNX opset; None: the exporter's default.

    Returns:
        The paths written: the two graphs, then ``onnx.json``.

    Raises:
        CaptioningError: when onnx or onnxruntime is not installed (the ``onnx`` extra).
        ValueError: on a bad ``image_size`` or names that collide.
        RuntimeError: when an exported graph does not reproduce PyTorch.
    """
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise CaptioningError(f"ONNX export needs the onnx extra (pip install 'captioning[onnx]'): {e}") from e
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    flags = [(module, module.training) for module in captioner.modules()]
    grads = [(parameter, parameter.requires_grad) for parameter in captioner.parameters()]
    captioner.eval()
    try:
        graphs = _Graphs(captioner, vocab, image_size=image_size)
        encoder_exporter = _export_graph(
            graphs.encoder,
            (graphs.images,),
            folder / ENCODER_FILE,
            inputs=["images"],
            outputs=graphs.encoder_outputs,
            opset=opset,
        )
        # SCA-CNN's channel energies (captioning.models.attention.sca.channel_scores) take one of two exact paths:
        # without autograd a Python loop over blocks of channels sized from the batch (1 << 16 floats a block), with
        # autograd one (B, C, k) expression. torch.export records the block's bound as a symbol of the batch but
        # unrolls the loop at the example's size, so that graph leaves channels unwritten once B*k*C passes the
        # block (demo model: more than 8 rows; the TorchScript tracer does the same). Tracing with gradients on
        # records the loop-free path; the graph holds only its forward computation.
        for parameter, _ in grads:
            parameter.requires_grad_(True)
        with torch.enable_grad():
            step_exporter = _export_graph(
                graphs.step,
                graphs.step_example(),
                folder / STEP_FILE,
                inputs=graphs.step_inputs,
                outputs=graphs.step_outputs,
                opset=opset,
            )
        for name in (ENCODER_FILE, STEP_FILE):
            onnx.checker.check_model(str(folder / name), full_check=True)
        with torch.no_grad():
            graphs.check(folder, onnxruntime)
    finally:
        for module, training in flags:
            module.training = training
        for parameter, requires_grad in grads:
            parameter.requires_grad_(requires_grad)
    config = graphs.config(decoding, exporters={"encoder": encoder_exporter, "decoder_step": step_exporter})
    config["opset"] = max(
        entry.version for entry in onnx.load(str(folder / STEP_FILE)).opset_import if entry.domain in ("", "ai.onnx")
    )
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
    return [folder / ENCODER_FILE, folder / STEP_FILE, folder / CONFIG_FILE]


def _export_graph(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    *,
    inputs: Sequence[str],
    outputs: Sequence[str],
    opset: int | None,
) -> str:
    """Exports ``module(*args)`` to ``path`` with dim 0 of every input and output dynamic; -> the exporter used.

    The torch.export-based exporter (``dynamo=True``) first: it is PyTorch's default and the maintained one, and it
    exports both graphs of every built-in attention. Should it fail on a graph (a model whose Python code
    torch.export cannot capture), the TorchScript tracer (``dynamo=False``) takes over: it follows the Python code
    the example runs, control flow included, and :meth:`_Graphs.check` then tests the result at other batch sizes.
    """
    module.eval()
    batch = torch.export.Dim("batch", min=1)
    try:
        with warnings.catch_warnings():
            # every input shares the one batch Dim; the exporter warns once per input after the first that the name
            # is taken (torch/onnx/_internal/exporter/_dynamic_shapes.py), which is the intent here
            warnings.filterwarnings("ignore", message=r"# The axis name: batch will not be used")
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=list(inputs),
                output_names=list(outputs),
                opset_version=opset,
                dynamo=True,
                external_data=False,  # one file a graph (the 2 GB protobuf limit is far above ResNet-152's 240 MB)
                dynamic_shapes=(tuple({0: batch} for _ in args),),  # forward(*inputs): one tuple of every input
                verbose=False,
            )
        return "dynamo"
    except Exception as error:  # any failure of torch.export or the ONNX translation: fall back, the check still runs
        path.unlink(missing_ok=True)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        warnings.warn(
            f"{path.name}: the dynamo ONNX exporter failed ({reason}); using the TorchScript exporter", stacklevel=3
        )
    with torch.no_grad():  # the tracer cannot record autograd.Function (no ONNX symbolic): the plain path
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            opset_version=opset,
            dynamo=False,
            dynamic_axes={name: {0: "batch"} for name in (*inputs, *outputs)},
        )
    return "torchscript"


class _Graphs:
    """The two traced modules of one captioner, their input and output names, and their parity check."""

    def __init__(self, captioner: Captioner, vocab: Vocabulary, *, image_size: int) -> None:
        parameter = next(captioner.parameters())
        generator = torch.Generator().manual_seed(0)
        self.captioner, self.vocab, self.image_size = captioner, vocab, image_size
        self.images = torch.randn(EXAMPLE_IMAGES, 3, image_size, image_size, generator=generator).to(parameter)
        with torch.no_grad():
            memory = captioner.encode(self.images)  # {name: (B, ...)}
            self.template = captioner.init_state(memory)
            tokens = torch.full((EXAMPLE_IMAGES,), vocab.bos, dtype=torch.long, device=parameter.device)  # (B,)
            logits, _, weights = captioner.step(tokens, self.template, memory)
            self.grid = tuple(captioner.encoder(self.images[:1]).shape[-2:])  # (h, w) of the final map
        if logits.shape != (EXAMPLE_IMAGES, len(vocab)):
            raise ValueError(f"the model scores {logits.shape[-1]} words but the vocabulary has {len(vocab)}")
        self.memory_names = list(memory)
        self.state_names = list(_state_names(self.template, "state"))
        self.weight_names = list(weights)
        self.encoder_outputs = [*self.memory_names, *self.state_names]
        self.step_inputs = ["tokens", *self.state_names, *self.memory_names]
        self.step_outputs = ["logits", *(f"next_{name}" for name in self.state_names), *self.weight_names]
        names = [*self.step_inputs, *self.step_outputs]
        if len(set(names)) != len(names) or "images" in self.encoder_outputs:
            raise ValueError(f"the decoder step's input and output names collide: {names}")
        self.memory, self.tokens = memory, tokens
        self.encoder = _Encoder(captioner, self.memory_names)
        self.step = _Step(captioner, self.template, self.memory_names, self.weight_names)

    def step_example(self) -> tuple[torch.Tensor, ...]:
        return (self.tokens, *_flatten(self.template), *(self.memory[name] for name in self.memory_names))

    def check(self, folder: Path, onnxruntime: Any) -> None:
        """Runs both graphs with onnxruntime on batch sizes other than the traced one; raises RuntimeError where an
        output differs from PyTorch's by more than ``ATOL + RTOL * max |torch|``."""
        parameter = next(self.captioner.parameters())
        generator = torch.Generator().manual_seed(1)
        size = self.image_size
        images = torch.randn(CHECK_IMAGES, 3, size, size, generator=generator).to(parameter)  # (B, 3, S, S)
        expected = self.encoder(images)
        _compare(folder / ENCODER_FILE, onnxruntime, {"images": images}, self.encoder_outputs, expected)
        rows = CHECK_IMAGES * CHECK_BEAMS
        memory = [value.repeat_interleave(CHECK_BEAMS, dim=0) for value in expected[: len(self.memory_names)]]
        state = [value.repeat_interleave(CHECK_BEAMS, dim=0) for value in expected[len(self.memory_names) :]]
        state = [
            value + 0.1 * torch.randn(value.shape, generator=generator).to(value) for value in state
        ]  # rows differ
        tokens = torch.randint(0, len(self.vocab), (rows,), generator=generator).to(parameter.device)  # (B*K,)
        feeds = dict(zip(self.step_inputs, (tokens, *state, *memory), strict=True))
        _compare(folder / STEP_FILE, onnxruntime, feeds, self.step_outputs, self.step(*feeds.values()))

    def config(self, decoding: DecodingSpec, *, exporters: dict[str, str]) -> dict[str, Any]:
        """What ``onnx.json`` holds (see the module docstring)."""
        vocab = self.vocab
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "encoder": {"file": ENCODER_FILE, "inputs": ["images"], "outputs": self.encoder_outputs},
            "decoder_step": {"file": STEP_FILE, "inputs": self.step_inputs, "outputs": self.step_outputs},
            "memory": self.memory_names,
            "state": self.state_names,  # encoder outputs and step inputs; the step returns them as next_<name>
            "attention": {
                "spatial": [name for name in self.weight_names if _kind(name) == "spatial"],
                "channel": [name for name in self.weight_names if _kind(name) == "channel"],
                "grid": list(self.grid),  # (h, w): a spatial weight (B, N) is a (B, h, w) map
            },
            "vocabulary": vocab.words,
            "specials": {"pad": vocab.pad, "bos": vocab.bos, "eos": vocab.eos, "unk": vocab.unk},
            "image_size": self.image_size,
            "resize": "bilinear, antialiased",  # captioning.data.images.resize_image
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "decoding": dataclasses.asdict(decoding),
            "exporter": exporters,
            "torch": torch.__version__,
        }


class _Encoder(nn.Module):
    """images (B, 3, S, S) -> the memory tensors, then the initial state, flat."""

    def __init__(self, captioner: Captioner, memory_names: list[str]) -> None:
        super().__init__()
        self.captioner, self.memory_names = captioner, memory_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        (images,) = inputs  # *inputs, as the step's: one dynamic_shapes layout for both graphs
        memory = self.captioner.encode(images)  # {name: (B, ...)}
        return (*(memory[name] for name in self.memory_names), *_flatten(self.captioner.init_state(memory)))


class _Step(nn.Module):
    """tokens (B,), the state and the memory, flat -> logits (B, V), the next state and the weights, flat."""

    def __init__(self, captioner: Captioner, template: Any, memory_names: list[str], weight_names: list[str]) -> None:
        super().__init__()
        self.captioner, self.template = captioner, template
        self.memory_names, self.weight_names = memory_names, weight_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tokens, rest = inputs[0], iter(inputs[1:])
        state = _unflatten(self.template, rest)
        memory = dict(zip(self.memory_names, rest, strict=True))
        logits, state, weights = self.captioner.step(tokens, state, memory)  # (B, V), state, {name: (B, ...)}
        return (logits, *_flatten(state), *(weights[name] for name in self.weight_names))


def _compare(
    path: Path, onnxruntime: Any, feeds: dict[str, torch.Tensor], names: list[str], expected: Sequence[torch.Tensor]
) -> None:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wanted = {node.name for node in session.get_inputs()}  # the TorchScript exporter drops unused inputs
    arrays = {name: value.detach().cpu().numpy() for name, value in feeds.items() if name in wanted}
    for name, got, want in zip(names, session.run(names, arrays), expected, strict=True):
        want = want.detach().float().cpu()
        rows = len(next(iter(feeds.values())))
        if got.shape != tuple(want.shape):
            raise RuntimeError(
                f"{path.name}: output {name} has shape {got.shape} at batch {rows}, PyTorch's is {tuple(want.shape)}"
            )
        gap = (torch.from_numpy(got).float() - want).abs().max().item()
        if gap > ATOL + RTOL * want.abs().max().item():
            raise RuntimeError(f"{path.name}: output {name} differs from PyTorch at batch {rows} by up to {gap:.3g}")


def _kind(name: str) -> str:
    """``spatial`` for ``alpha`` and ``alpha.<layer>``, ``channel`` for ``beta.<layer>`` (parsed in one place)."""
    return "spatial" if AttentionWeights.of({name: torch.empty(0)}).spatial else "channel"


def _state_names(state: Any, prefix: str) -> Iterator[str]:
    """The names of a state's tensors in :func:`_flatten` order: ``state`` for a tensor, ``state.0``, ``state.1``
    for a tuple (the LSTM's h and c), ``state.<key>`` for a dict."""
    if isinstance(state, torch.Tensor):
        yield prefix
    elif isinstance(state, dict):
        for key, part in state.items():
            yield from _state_names(part, f"{prefix}.{key}")
    else:
        for index, part in enumerate(state):
            yield from _state_names(part, f"{prefix}.{index}")


def _flatten(state: Any) -> list[torch.Tensor]:
    """A state (a tensor, or tuples, lists and dicts of them) -> its tensors, depth first in order."""
    if isinstance(state, torch.Tensor):
        return [state]
    parts = state.values() if isinstance(state, dict) else state
    return [tensor for part in parts for tensor in _flatten(part)]


def _unflatten(template: Any, tensors: Iterator[torch.Tensor]) -> Any:
    """The inverse of :func:`_flatten`: the next tensors of ``tensors`` in the structure of ``template``."""
    if isinstance(template, torch.Tensor):
        return next(tensors)
    if isinstance(template, dict):
        return {key: _unflatten(part, tensors) for key, part in template.items()}
    return type(template)(_unflatten(part, tensors) for part in template)
