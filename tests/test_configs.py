"""The COCO configs (the paper's recipe and the project's three stages) load and train a few steps on a tiny COCO
Karpathy layout (dataset_coco.json with train / restval / val / test, images under train2014/ and val2014/), at
tiny sizes: random weights (nothing can be downloaded here), a ResNet-50 at width 4, 64 px images."""

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from captioning.cli.extract import main as extract
from captioning.config import run_config
from captioning.data.shapes import generate_shapes
from captioning.errors import ConfigError
from captioning.scst import SelfCritical

MODEL = [  # what extract reads too
    # Random weights (nothing downloads here); depth 50 keeps every layer name of the configs, and a random
    # ResNet-152 with BN on its initial statistics grows activations to about 1e6 (NaN gradients by stage 2).
    *("--model.encoder.weights", "null", "--model.encoder.depth", "50", "--model.encoder.width", "4"),
    *("--model.decoder.hidden_dim", "32", "--model.decoder.attn_dim", "16", "--model.decoder.embed_dim", "16"),
    *(
        "--model.evaluation.metrics",
        "[Bleu,CIDEr]",
        "--model.evaluation.tokenizer",
        "python",
        "--model.decoding.max_len",
        "6",
    ),
    *("--data.image_size", "64", "--data.batch_size", "4", "--data.num_workers", "0", "--data.min_count", "1"),
    *("--model.decoding.beam_size", "2"),
]
TINY = [
    *MODEL,
    *("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"),
    *("--trainer.logger", "false", "--trainer.enable_progress_bar", "false"),
]


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    """A shapes set rewritten in the COCO Karpathy layout: half the train images as restval in val2014/."""
    shapes = tmp_path_factory.mktemp("shapes")
    generate_shapes(shapes, train=16, val=4, test=4, seed=2, image_size=64, show_progress=False)
    root = tmp_path_factory.mktemp("coco")
    karpathy = json.loads((shapes / "dataset_shapes.json").read_text())
    for k, image in enumerate(karpathy["images"]):
        if image["split"] == "train" and k % 2:
            image["split"] = "restval"
        folder = "train2014" if image["split"] == "train" else "val2014"
        (root / folder).mkdir(exist_ok=True)
        shutil.copy(shapes / "images" / image["filepath"] / image["filename"], root / folder / image["filename"])
        image["filepath"] = folder
    (root / "dataset_coco.json").write_text(json.dumps(karpathy))
    return root


def _fit(configs: list[str], coco: Path, run: Path, *extra: str):
    args = ["fit", *(a for c in configs for a in ("--config", str(ROOT / "configs" / c))), "--data.root", str(coco)]
    return run_config([*args, *TINY, "--trainer.default_root_dir", str(run), "--checkpoint.dirpath", str(run), *extra])


@pytest.mark.parametrize(
    ("configs", "expected"),
    [
        (["coco_resnet152_sca_paper.yaml"], ["optimizer: adadelta", "output: deep", "first_input: zero"]),
        (["coco_resnet152_sca_stage1_xe.yaml"], ["references_per_image: 5", "- layer4.2.conv3"]),
        (["coco_resnet152_sca_stage1_xe.yaml", "coco_resnet152_sca_stage2_finetune.yaml"], ["- layer4\n"]),
        (["coco_resnet152_sca_stage1_xe.yaml", "coco_resnet152_sca_stage3_scst.yaml"], ["samples: 5"]),
        (["coco_resnet152_sca.yaml"], ["depth: 152"]),
        (["coco_resnet152_cbam_sca.yaml"], ["attention: cbam"]),
        (["coco_resnet152_soft.yaml"], ["attention: soft"]),
        (["coco_vgg19_sca.yaml"], ["arch: vgg"]),
    ],
)
def test_coco_configs_print(configs, expected):
    args = ["fit", *(a for c in configs for a in ("--config", str(ROOT / "configs" / c))), "--print_config"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        run_config(args)
    assert exit_.value.code in (0, None)
    assert all(e in out.getvalue() for e in expected), out.getvalue()[:2000]


def test_the_paper_recipe_trains_on_features_with_only_the_official_parameters(coco, tmp_path):
    features = tmp_path / "features"
    paper = ["--config", str(ROOT / "configs/coco_resnet152_sca_paper.yaml"), "--data.root", str(coco), *MODEL]
    written = extract([*paper, "--out", str(features), "--num-workers", "0", "--batch-size", "4"])
    assert written == {"train": 8, "val": 4, "test": 4}  # restval left out, as the official preprocessing does
    cli = _fit(["coco_resnet152_sca_paper.yaml"], coco, tmp_path / "run", "--data.features", str(features))
    module = cli.model
    trained = {n for n, p in module.captioner.encoder.named_parameters() if p.requires_grad}
    assert trained == {"backbone.layer4.2.conv3.weight"}
    assert isinstance(cli.trainer.optimizers[0], torch.optim.Adadelta)
    assert module.captioner.decoder.deep is not None and module.captioner.decoder.embed.padding_idx == 1
    assert cli.trainer.global_step == 2 and (tmp_path / "run" / "best.ckpt").is_file()


def test_the_three_stages_chain_through_their_checkpoints(coco, tmp_path):
    stage1 = ["coco_resnet152_sca_stage1_xe.yaml"]
    features = tmp_path / "features1"
    config1 = [a for c in stage1 for a in ("--config", str(ROOT / "configs" / c))]
    extract([*config1, "--data.root", str(coco), *MODEL, "--out", str(features), "--num-workers", "0"])
    one = _fit(stage1, coco, tmp_path / "one", "--data.features", str(features))
    assert len(one.datamodule.records("train")) == 16  # train + restval
    start = ["--model.init_weights", str(tmp_path / "one" / "best.ckpt")]
    two = _fit([*stage1, "coco_resnet152_sca_stage2_finetune.yaml"], coco, tmp_path / "two", *start)
    # stage 2 starts from stage 1 and trains layer4 (BN fixed) at the encoder's own learning rate
    assert two.trainer.optimizers[0].param_groups[1]["lr"] < two.trainer.optimizers[0].param_groups[0]["lr"]
    layer4, before = two.model.captioner.encoder.backbone.layer4, one.model.captioner.encoder.backbone.layer4
    assert all(p.requires_grad for p in layer4.parameters())
    assert not torch.equal(layer4[0].conv1.weight, before[0].conv1.weight)  # trained ...
    assert torch.isfinite(layer4[0].conv1.weight).all()
    torch.testing.assert_close(layer4[0].bn1.running_mean, before[0].bn1.running_mean)  # ... with BN fixed
    stage3 = [*stage1, "coco_resnet152_sca_stage3_scst.yaml"]
    init = ["--model.init_weights", str(tmp_path / "two" / "best.ckpt")]
    config = [a for c in stage3 for a in ("--config", str(ROOT / "configs" / c))]
    features3 = tmp_path / "features2"
    extract([*config, "--data.root", str(coco), *MODEL, *init, "--out", str(features3), "--num-workers", "0"])
    three = _fit(stage3, coco, tmp_path / "three", *init, "--data.features", str(features3))
    assert isinstance(three.model.scst_spec, SelfCritical) and three.trainer.global_step == 2
    with pytest.raises(ConfigError, match="features made for another model"):  # stage 1's CNN is not stage 2's
        _fit(stage3, coco, tmp_path / "refused", *init, "--data.features", str(features))
