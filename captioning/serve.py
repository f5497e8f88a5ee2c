"""``captioning serve``: a web page and an HTTP API over a :class:`~captioning.api.CaptioningModel`, built with Gradio.

The page: upload, paste or drop an image, pick the beam size, press **Caption**; it shows the caption, each word over
its attention map for every attended layer (one figure per layer, as ``captioning visualize`` draws them; Xu et al.
2015, arXiv 1502.03044, Fig. 2-3), SCA-CNN's channel weights (Chen et al. 2017, arXiv 1611.05594, eq. 6-7) when the
model has a channel step, and a line on the model (attention, input size, checkpoint).

The API is Gradio's own (``/gradio_api/...``): endpoint ``/caption`` takes the image and the beam size and returns
``{"caption", "words", "score", "log_prob", "beam_size"}`` (:func:`caption_json`)::

    from gradio_client import Client, handle_file

    result = Client("http://127.0.0.1:7860/").predict(handle_file("photo.jpg"), 3, api_name="/caption")

Uploads follow the project's bad-data policy (:mod:`captioning.data.images`: EXIF orientation applied; CMYK, grey,
palette and 16-bit images converted to 8-bit RGB; transparency over white); a file that is not an image, a truncated
one, or one over ``max_pixels`` (default 40 megapixels, checked from the header before anything is decoded, so a
decompression bomb is refused without allocating its pixels) gets a one-line message on the page (a
:class:`gradio.Error`; over the API, the client's error), and the server goes on serving.

Requests queue: one runs at a time (``default_concurrency_limit=1``), since the model runs on the CPU, where two
captions at once would each take twice as long and compete for memory; at most :data:`QUEUE_SIZE` wait, later ones
are told the queue is full. Gradio is an optional extra (``pip install -e '.[serve]'``): it is imported only when an
app is built, so the rest of the library and CLI work without it.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image, UnidentifiedImageError

from captioning.api import Caption, CaptioningModel
from captioning.data.images import load_image
from captioning.errors import CaptioningError
from captioning.viz.attention import plot_word_attention
from captioning.viz.channels import plot_channel_attention

if TYPE_CHECKING:
    import gradio

MAX_PIXELS = 40_000_000  # 40 megapixels: a 7,300 x 5,500 photo; a 16-bit RGBA one decodes to 320 MB
MAX_BEAM = 5  # the slider's top (the model's own default, when larger, raises it)
MAX_FILE_SIZE = "50mb"  # Gradio refuses larger uploads before they are written to disk
QUEUE_SIZE = 16  # requests that may wait for the model; more are refused with "queue is full"
_UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError)  # what PIL raises on bad files


def import_gradio() -> Any:
    """The ``gradio`` module; without it, a one-line :class:`CaptioningError` naming the extra that installs it."""
    try:
        import gradio
    except ImportError as e:
        raise CaptioningError(
            "captioning serve needs Gradio, an optional extra: pip install -e '.[serve]' (or pip install 'gradio>=6')"
        ) from e
    return gradio


def read_upload(path: str | Path, *, name: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An uploaded file -> 8-bit RGB per :mod:`captioning.data.images`, refused above ``max_pixels``.

    Args:
        path: the file on the server.
        name: the file's name for messages (the user's name for it, not the server's temporary path).
        max_pixels: width x height above which the image is refused, read from the header before decoding.

    Raises:
        CaptioningError: one line naming ``name``: not an image, truncated or corrupt, or too large.
    """
    try:
        with Image.open(path) as header:  # reads the header only: the size of a bomb costs nothing
            width, height = header.size
    except Image.DecompressionBombError as e:  # PIL refuses above twice its own limit at open already
        raise CaptioningError(f"{name}: refused, over this server's limit of {_megapixels(max_pixels)} ({e})") from e
    except _UNREADABLE:
        width = height = 0  # load_image says why it cannot be read, in the project's words
    if width * height > max_pixels:
        raise CaptioningError(
            f"{name}: {width} x {height} pixels ({_megapixels(width * height)}) is over this server's limit of "
            f"{_megapixels(max_pixels)}; resize it and try again"
        )
    try:
        return load_image(path)
    except CaptioningError as e:  # its message names the server's temporary file: name the upload instead
        raise CaptioningError(str(e).replace(str(path), name)) from e


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.3g} megapixels"


def caption_json(result: Caption, *, beam_size: int) -> dict:
    """What the ``/caption`` endpoint returns: the caption, its words (``<eos>`` last where the search generated
    it), its ranking score and summed log-probability, and the beam size used."""
    return {
        "caption": result.caption,
        "words": list(result.words),
        "score": result.score,
        "log_prob": result.log_prob,
        "beam_size": beam_size,
    }


def attention_figures(result: Caption, pixels: torch.Tensor) -> dict[str, Image.Image]:
    """Attended layer -> its figure: each word over its spatial map, on the image as the model saw it (``pixels``
    (3, S, S) uint8). Layers without a spatial map (a channel-only step) have none."""
    image = pixels.permute(1, 2, 0).numpy()  # (S, S, 3)
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        for index, (layer, weights) in enumerate((result.attention or {}).items()):
            if weights.spatial is not None:
                alphas = torch.from_numpy(weights.spatial).flatten(1)  # (T, h * w)
                path = plot_word_attention(image, result.words, {layer: alphas}, Path(folder) / f"{index}.png")
                out[layer] = _read_png(path)
    return out


def channel_figure(result: Caption) -> Image.Image | None:
    """SCA-CNN's channel weights over words x channels, every attended layer; None without a channel step."""
    betas = {
        layer: torch.from_numpy(weights.channel)  # (T, C)
        for layer, weights in (result.attention or {}).items()
        if weights.channel is not None
    }
    if not betas:
        return None
    with tempfile.TemporaryDirectory() as folder:
        return _read_png(plot_channel_attention(result.words, betas, Path(folder) / "channels.png"))


def _read_png(path: Path) -> Image.Image:
    """A figure written by :mod:`captioning.viz`, decoded now (its temporary folder goes next)."""
    with Image.open(path) as figure:
        return figure.convert("RGB")


def model_info(model: CaptioningModel, *, source: str | None = None) -> str:
    """One line on the model: encoder, decoder attention, input size, vocabulary, default beam, and ``source`` (else
    the checkpoint recorded in its config) with its epoch and validation score where known."""
    config = model.config
    encoder, decoder = config.get("encoder") or {}, config.get("decoder") or {}
    attention = decoder.get("attention", "?")
    if attention == "sca" and decoder.get("sca_order"):
        attention = f"sca (order {decoder['sca_order']})"
    recorded = config.get("source") or {}
    checkpoint = source or (Path(recorded["checkpoint"]).name if recorded.get("checkpoint") else "not from a file")
    parts = [
        f"encoder: {_encoder_name(encoder)}",
        f"decoder attention: {attention}",
        f"input: {model.image_size} x {model.image_size} px",
        f"vocabulary: {len(model.vocab.words)} words",
        f"default beam: {model.decoding.beam_size}",
        f"checkpoint: {checkpoint}",
    ]
    if recorded.get("epoch") is not None:
        parts.append(f"epoch {recorded['epoch']}")
    validation = config.get("validation") or {}
    if validation.get("score") is not None:
        parts.append(f"{validation.get('monitor', 'validation')} {validation['score']:.3f}")
    return " · ".join(parts)


def _encoder_name(encoder: dict) -> str:
    """``resnet`` depth 18 with CBAM -> ``ResNet-18 + cbam``; ``vgg_bn`` 16 -> ``VGG-16 (BN)``."""
    arch, depth = encoder.get("arch", "resnet"), encoder.get("depth", "?")
    name = f"ResNet-{depth}" if arch == "resnet" else f"VGG-{depth}" + (" (BN)" if arch == "vgg_bn" else "")
    attention = encoder.get("attention", "none")
    return name if attention == "none" else f"{name} + {attention}"


def _attended(model: CaptioningModel) -> tuple[list[str], bool]:
    """The layers with spatial maps and whether there are channel weights: one greedy step on a grey image tells
    (and warms the model up), whatever attention the config names."""
    side = model.image_size
    grey = torch.full((1, 3, side, side), 128, dtype=torch.uint8)
    (probe,) = model.caption_pixels(grey, decoding=model.settings(beam_size=1, max_len=2, min_len=0), attention=True)
    layers = probe.attention or {}
    return [name for name, w in layers.items() if w.spatial is not None], any(
        w.channel is not None for w in layers.values()
    )


def _upload_file(upload: Any, folder: Path) -> tuple[Path, str]:
    """The image input as Gradio sends it unprocessed (a dict with the uploaded file's ``path``, its ``orig_name``,
    or a base64 ``data:`` ``url``) -> the file and its name for messages."""
    if not isinstance(upload, dict):
        raise CaptioningError("no image: upload or paste one, then press Caption")
    name = str(upload.get("orig_name") or "the image")
    if upload.get("path"):
        return Path(upload["path"]), name
    url = str(upload.get("url") or "")
    if url.startswith("data:") and "," in url:
        try:
            data = base64.b64decode(url.split(",", 1)[1], validate=True)
        except binascii.Error as e:
            raise CaptioningError(f"{name}: not valid base64 image data") from e
        path = folder / "upload"
        path.write_bytes(data)
        return path, name
    raise CaptioningError("no image: upload or paste one, then press Caption")


def build_app(model: CaptioningModel, *, max_pixels: int = MAX_PIXELS, source: str | None = None) -> gradio.Blocks:
    """The page and its API (see the module docstring), queued but not launched (:func:`serve` launches it).

    Args:
        model: the captioner, run where its weights are (in eval mode whatever mode it is in, as the API runs it).
        max_pixels: the largest image accepted, width x height (PIL itself refuses above ``2 *
            PIL.Image.MAX_IMAGE_PIXELS``, 179 megapixels by default, whatever this says).
        source: what the model was loaded from, for the model-info line (default: the checkpoint its config names).
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    gr = import_gradio()
    layers, channel = _attended(model)
    top = max(MAX_BEAM, model.decoding.beam_size)

    def run(upload: Any, beam_size: Any) -> tuple[Caption, torch.Tensor, int]:
        """The caption of one upload, its pixels as the model saw them (3, S, S) uint8, and the beam size."""
        try:
            beam = int(beam_size)
            if not 1 <= beam <= top:
                raise CaptioningError(f"beam size must be 1..{top}, got {beam}")
            with tempfile.TemporaryDirectory() as folder:
                path, name = _upload_file(upload, Path(folder))
                image = read_upload(path, name=name, max_pixels=max_pixels)
        except (CaptioningError, TypeError, ValueError) as e:
            raise gr.Error(str(e).splitlines()[0], title="Cannot caption this", print_exception=False) from e
        pixels = model.prepare(image)  # (3, S, S) uint8
        (result,) = model.caption_pixels(pixels[None], decoding=model.settings(beam_size=beam), attention=True)
        return result, pixels, beam

    def caption(upload: Any, beam_size: Any) -> dict:
        result, _, beam = run(upload, beam_size)
        return caption_json(result, beam_size=beam)

    def page(upload: Any, beam_size: Any) -> list:
        result, pixels, beam = run(upload, beam_size)
        figures = attention_figures(result, pixels)
        figures = [figures.get(layer) for layer in layers]
        return [caption_json(result, beam_size=beam), result.caption, *figures, channel_figure(result)]

    with gr.Blocks(title="captioning: SCA-CNN demo", analytics_enabled=False) as app:
        gr.Markdown("## Image captioning with spatial and channel-wise attention (SCA-CNN)")
        gr.Markdown(model_info(model, source=source), elem_id="model-info")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(
                    label=f"Image (up to {_megapixels(max_pixels)})",
                    type="filepath",
                    sources=["upload", "clipboard"],
                    elem_id="image",
                )
                beam = gr.Slider(1, top, value=model.decoding.beam_size, step=1, label="Beam size", elem_id="beam")
                button = gr.Button("Caption", variant="primary", elem_id="caption-button")
            with gr.Column(scale=2):
                text = gr.Textbox(label="Caption", interactive=False, elem_id="caption")
                with gr.Accordion("What the /caption API returns", open=False):
                    details = gr.JSON(show_label=False, elem_id="result")
        maps = [
            gr.Image(
                label=f"{layer}: each word over its attention map",  # "final": soft attention's one map
                type="pil",
                interactive=False,
                elem_id=f"attention-{index}",
            )
            for index, layer in enumerate(layers)
        ]
        with gr.Column(visible=channel):  # the figure's own titles sit where Gradio's label would
            gr.Markdown("SCA-CNN's channel weights (beta) per word, each attended layer")
            channels = gr.Image(show_label=False, type="pil", interactive=False, elem_id="channels")
        outputs = [details, text, *maps, channels]
        # preprocess=False: the handlers get the upload as sent (Gradio still checks that its path is one Gradio
        # wrote) and read it under the project's policy; Gradio's own preprocessing would open it with PIL first and
        # fail on bad files with PIL's message. One concurrency group: the page and the API share the one model.
        queued = {"preprocess": False, "concurrency_id": "model", "concurrency_limit": 1}
        button.click(page, inputs=[image, beam], outputs=outputs, api_visibility="private", **queued)
        # The API endpoint returns the JSON alone: a trigger the page never shows, so API callers skip the figures.
        gr.Button(visible=False).click(caption, inputs=[image, beam], outputs=details, api_name="caption", **queued)
        image.change(lambda: [None, "", *[None] * len(maps), None], outputs=outputs, api_visibility="private")
    return app.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)


def serve(
    model: CaptioningModel,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_pixels: int = MAX_PIXELS,
    source: str | None = None,
    block: bool = True,
) -> gradio.Blocks:
    """Builds the app (:func:`build_app`) and serves it at ``http://host:port/`` until interrupted.

    Args:
        model: the captioner.
        host: the interface to listen on: only this machine by default; ``0.0.0.0`` opens it to the network (no
            authentication: put it behind one).
        port: the TCP port.
        max_pixels: the largest image accepted, width x height.
        source: what the model was loaded from, for the page.
        block: wait here until interrupted; False returns the running app at once (``app.close()`` stops it).
    """
    app = build_app(model, max_pixels=max_pixels, source=source)
    try:
        app.launch(
            server_name=host,
            server_port=port,
            share=False,
            max_file_size=MAX_FILE_SIZE,
            prevent_thread_lock=not block,
            ssr_mode=False,
            quiet=not block,
        )
    except OSError as e:  # Gradio's "Cannot find empty port in range: ..." and the socket's own errors
        raise CaptioningError(
            f"cannot serve on {host}:{port}: the port is in use or the host is not an address of this machine"
        ) from e
    return app
