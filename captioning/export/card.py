"""The model card (``README.md``) of an exported model: YAML front matter as the Hugging Face Hub reads it
(``library_name``, ``license``, ``pipeline_tag``, ``tags``, and the validation score as ``model-index``), rendered by
huggingface_hub's :class:`~huggingface_hub.ModelCardData`, then sections written from ``config.json``: the model,
its data, validation scores, decoding settings, training, usage and citations.

The body is plain f-strings rather than ``ModelCard.from_template``'s Jinja template: every value comes from the
config, and the text reads top to bottom here.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

UNKNOWN = "unknown"

CITATIONS = {
    "sca": """@inproceedings{chen2017sca,
  title = {{SCA-CNN}: Spatial and Channel-Wise Attention in Convolutional Networks for Image Captioning},
  author = {Chen, Long and Zhang, Hanwang and Xiao, Jun and Nie, Liqiang and Shao, Jian and Liu, Wei and
            Chua, Tat-Seng},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages = {5659--5667},
  year = {2017}
}""",
    "show-attend-tell": """@inproceedings{xu2015show,
  title = {Show, Attend and Tell: Neural Image Caption Generation with Visual Attention},
  author = {Xu, Kelvin and Ba, Jimmy and Kiros, Ryan and Cho, Kyunghyun and Courville, Aaron and
            Salakhutdinov, Ruslan and Zemel, Richard and Bengio, Yoshua},
  booktitle = {International Conference on Machine Learning (ICML)},
  pages = {2048--2057},
  year = {2015}
}""",
    "cbam": """@inproceedings{woo2018cbam,
  title = {{CBAM}: Convolutional Block Attention Module},
  author = {Woo, Sanghyun and Park, Jongchan and Lee, Joon-Young and Kweon, In So},
  booktitle = {European Conference on Computer Vision (ECCV)},
  pages = {3--19},
  year = {2018}
}""",
    "se": """@inproceedings{hu2018squeeze,
  title = {Squeeze-and-Excitation Networks},
  author = {Hu, Jie and Shen, Li and Sun, Gang},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages = {7132--7141},
  year = {2018}
}""",
}

_DECODER_ATTENTION = {
    "sca": "SCA-CNN's spatial and channel-wise attention (Chen et al. 2017)",
    "soft": "soft spatial attention over the final feature map (Show, Attend and Tell; Xu et al. 2015)",
    "none": "no attention (the mean of the final feature map at every word)",
}
_ENCODER_ATTENTION = {
    "cbam": "CBAM channel and spatial gates in every block (Woo et al. 2018)",
    "se": "squeeze-and-excitation gates in every block (Hu et al. 2018)",
    "none": "no attention gates",
}
_SCA_ORDER = {"cs": "channel then spatial", "sc": "spatial then channel", "c": "channel only", "s": "spatial only"}


def model_name(config: dict) -> str:
    """A short name from the architecture: ``resnet18-cbam-sca``."""
    encoder, decoder = config["encoder"], config["decoder"]
    arch = encoder.get("arch", "resnet")
    return f"{arch}{encoder['depth']}-{encoder.get('attention', 'none')}-{decoder['attention']}".replace("_", "-")


def architecture(config: dict, *, parameters: int) -> str:
    """The model in words."""
    encoder, decoder = config["encoder"], config["decoder"]
    arch = {"resnet": "ResNet", "vgg": "VGG", "vgg_bn": "VGG (batch norm)"}.get(encoder.get("arch", "resnet"))
    gates = _ENCODER_ATTENTION.get(encoder.get("attention", "none"), f"{encoder.get('attention')} gates")
    attention = _DECODER_ATTENTION.get(decoder["attention"], f"the {decoder['attention']!r} attention")
    if decoder["attention"] == "sca":
        layers = ", ".join(decoder.get("sca_layers") or ()) or "the paper's two layers"
        attention += f", {_SCA_ORDER.get(decoder.get('sca_order', 'cs'), decoder.get('sca_order'))}, over {layers}"
    start = f"from {encoder['weights']} ImageNet weights" if encoder.get("weights") else "trained from scratch"
    blind = " Blind baseline: the image features are zeroed (a language model only)." if config.get("blind") else ""
    return (
        f"A {arch}-{encoder['depth']} encoder (width {encoder.get('width', 64)}, {gates}; {start}) and an LSTM "
        f"decoder (embedding {decoder['embed_dim']}, hidden size {decoder['hidden_dim']}, attention size "
        f"{decoder['attn_dim']}, {decoder.get('output', 'linear')} output layer) with {attention}. "
        f"{parameters:,} parameters; input {config['image_size']} x {config['image_size']} RGB; vocabulary of "
        f"{len(config['vocabulary']['words'])} words (4 special tokens included).{blind}"
    )


def _citations(config: dict) -> list[str]:
    keys = ["show-attend-tell"]  # the decoder, its loss and soft attention, whatever the attention
    if config["decoder"]["attention"] == "sca":
        keys.insert(0, "sca")
    if config["encoder"].get("attention") in ("cbam", "se"):
        keys.append(config["encoder"]["attention"])
    return [CITATIONS[key] for key in keys]


def _table(rows: dict) -> str:
    lines = ["| setting | value |", "| --- | --- |"]
    lines += [f"| {key} | {UNKNOWN if value is None else value} |" for key, value in rows.items()]
    return "\n".join(lines)


def _data_section(config: dict) -> str:
    data = config.get("data")
    if not data:
        return f"Training data: {UNKNOWN} (no run folder with a `config.yaml` was found beside the checkpoint)."
    rows = {key: data.get(key) for key in ("root", "annotations", "annotation_file", "image_size", "min_count")}
    vocabulary_rule = config["vocabulary"].get("rule") or {}
    rows["vocabulary counted on"] = vocabulary_rule.get("counted")
    return "From the training run's `config.yaml`:\n\n" + _table(rows)


def _validation_section(config: dict) -> str:
    validation = config.get("validation")
    if not validation:
        return f"{UNKNOWN.capitalize()}: the checkpoint holds no score of a checkpoint callback."
    direction = {"max": "higher is better", "min": "lower is better"}.get(validation.get("mode"), "")
    rows = {
        "metric": f"`{validation['monitor']}`" + (f" ({direction})" if direction else ""),
        "score": f"{validation['score']:.4f}",
        "of": validation["of"],
    }
    if validation.get("best") is not None:
        rows["the run's best"] = f"{validation['best']:.4f}"
    source = config.get("source") or {}
    rows["checkpoint"] = f"`{Path(source['checkpoint']).name}`" if source.get("checkpoint") else None
    return "What the checkpoint callback recorded (pycocoevalcap's scale: CIDEr 0..10):\n\n" + _table(rows)


def _training_section(config: dict) -> str:
    training = config.get("training") or {}
    source = config.get("source") or {}
    devices = training.get("devices")
    accelerator = training.get("accelerator")
    hardware = f"{accelerator} x {devices}" if accelerator else None
    machine = training.get("machine") or {}
    if machine.get("gpus") or machine.get("cpu"):
        found = machine.get("gpus") or [f"{machine.get('cpu')} ({machine.get('cpu_cores')} cores)"]
        hardware = f"{hardware or 'trained'} on {', '.join(sorted(set(found)))}"
    seconds = training.get("seconds")
    git = training.get("git") or {}
    rows = {
        "hardware": hardware,
        "processes (world size)": training.get("world_size"),
        "platform": training.get("platform"),
        "precision": training.get("precision"),
        "epochs": training.get("epochs"),
        "optimizer steps": training.get("steps", source.get("global_step")),
        "started": training.get("started"),
        "training time": None if seconds is None else f"{seconds / 3600:.2f} h",
        "seed": training.get("seed"),
        "git commit": git.get("commit") and git["commit"] + (" (with local changes)" if git.get("dirty") else ""),
        "PyTorch Lightning": source.get("pytorch_lightning"),
    }
    return "From the checkpoint and its run folder (`run.json`, `config.yaml`):\n\n" + _table(rows)


def _usage(name: str) -> str:
    return f"""```python
import captioning

model = captioning.load("path/to/this/folder")  # or the Hub repository id, e.g. "your-name/{name}"
result = model.caption("image.jpg", beam_size=3, attention=True)[0]
print(result.caption, result.score)
```

From the command line:

```
captioning caption image.jpg photos/ --ckpt path/to/this/folder [--out captions.jsonl]
```"""


def model_card(config: dict, *, parameters: int, license: str = "mit") -> ModelCard:
    """The card of an exported model with ``config`` (its ``config.json``) and ``parameters`` parameters."""
    name = model_name(config)
    validation, data = config.get("validation"), config.get("data") or {}
    metric = validation["monitor"].rpartition("/")[2].lower() if validation else None  # val/CIDEr -> cider
    results = None
    if validation and data.get("root"):
        dataset = Path(str(data["root"])).name
        results = [
            EvalResult(
                task_type="image-to-text",
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_split="validation",
                metric_type=metric,
                metric_name=validation["monitor"],
                metric_value=round(validation["score"], 6),
            )
        ]
    tags = ["image-captioning", "pytorch", "pytorch-lightning", "safetensors"]
    tags += {"sca": ["sca-cnn"], "soft": ["show-attend-tell"]}.get(config["decoder"]["attention"], [])
    tags += [config["encoder"]["attention"]] if config["encoder"].get("attention") in ("cbam", "se") else []
    card_data = ModelCardData(
        library_name="captioning",
        license=license,
        pipeline_tag="image-to-text",
        tags=tags,
        metrics=[metric] if metric else None,
        model_name=name,
        eval_results=results,
    )
    decoding = _table(config["decoding"])
    citations = "\n\n".join(f"```bibtex\n{entry}\n```" for entry in _citations(config))
    body = f"""
# {name}

An image captioner of the `captioning` library (SCA-CNN style: a CNN encoder, an attention LSTM decoder). The
weights are `model.safetensors`; `config.json` holds everything else needed to caption.

## Model

{architecture(config, parameters=parameters)}

Preprocessing: RGB, resized (antialiased bilinear) to {config["image_size"]} x {config["image_size"]} pixels without
keeping the aspect ratio, scaled to 0..1 and normalized with the ImageNet mean and standard deviation.

## Data

{_data_section(config)}

## Validation scores

{_validation_section(config)}

## Decoding

The defaults of `caption()` (each can be overridden per call):

{decoding}

## Training

{_training_section(config)}

## Usage

{_usage(name)}

## Citations

{citations}
"""
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")
