"""Writes ``sca_89373c1.ckpt`` and ``sca_89373c1.json`` into the folder given, with whatever ``captioning`` is on the
path: run once with the code of commit 89373c1 (``PYTHONPATH=<its checkout>``) to make tests/test_old_checkpoint.py's
files."""

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

import captioning
from captioning.models.captioner import DecoderSpec, EncoderSpec
from captioning.module import CaptioningModule

WORDS = ["<pad>", "<bos>", "<eos>", "<unk>", "a", "red", "blue", "circle", "square", "left", "of"]


def moment(weights: torch.Tensor) -> float:
    """sum of w * position over the last dimension: a number that moves with where the weights sit, not only with
    their total (each map sums to 1)."""
    return float((weights * torch.linspace(0, 1, weights.shape[-1])).sum())


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    print("captioning from", captioning.__file__)
    torch.manual_seed(0)
    module = CaptioningModule(
        WORDS,
        encoder=EncoderSpec(depth=18, attention="cbam", width=8),
        decoder=DecoderSpec(attention="sca", embed_dim=8, hidden_dim=16, attn_dim=8, dropout=0.0),
        image_size=64,
        max_len=6,
        beam_size=2,
        metrics=("Bleu", "CIDEr"),
        vocabulary_rule={"counted": "train", "min_count": 1},
    )
    with torch.no_grad():  # captions that differ between images: a stronger image-to-state path, a peaky output
        for weight in (module.captioner.decoder.init_h.weight, module.captioner.decoder.output.weight):
            weight.mul_(8.0)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(out / "sca_89373c1.ckpt")
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    captions, generation = module.eval().generate(images)
    expected = {
        "captions": captions,
        "log_probs": generation.nbest_log_probs.tolist(),
        "attention_moments": {name: moment(w) for name, w in sorted(generation.attention.items())},
    }
    (out / "sca_89373c1.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(expected)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
