"""Training at scale on CPU: exact resume after SIGKILL, same seed same losses, DDP over 2 gloo processes with exact
validation scores, and the run record."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from pytorch_lightning.callbacks import BaseFinetuning

from captioning.callbacks import EncoderFinetuning
from captioning.config import run_config
from captioning.data.shapes import generate_shapes
from captioning.errors import ConfigError
from captioning.workflows import evaluate

STEPS_PER_EPOCH = 6  # 48 train images, batch 8
EPOCHS = 3


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, train=48, val=8, test=7, seed=5, image_size=64, show_progress=False)
    return root


def _args(shapes: Path, out: Path, *extra: str) -> list[str]:
    return [
        "fit",
        *("--config", str(ROOT / "configs/smoke.yaml"), "--data.root", str(shapes)),
        *("--model.decoder.dropout", "0.2"),  # dropout draws from the RNG: resume must restore its state
        *("--trainer.max_epochs", str(EPOCHS), "--trainer.check_val_every_n_epoch", "100"),
        *("--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(out / "logs")),
        *("--checkpoint.dirpath", str(out / "ckpt")),
        *extra,
    ]


def _losses(out: Path) -> dict[int, float]:
    """step -> train/loss from every metrics.csv under ``out`` (a resumed run writes a new version folder)."""
    losses = {}
    for path in sorted((out / "logs").rglob("metrics.csv")):
        for row in csv.DictReader(path.open()):
            if row.get("train/loss"):
                losses[int(row["step"])] = float(row["train/loss"])
    return losses


@pytest.fixture(scope="module")
def reference(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    cli = run_config(_args(shapes, out))
    return {"out": out, "losses": _losses(out), "steps": cli.trainer.global_step, "cli": cli}


def test_same_seed_gives_the_same_losses_and_a_run_record(shapes, reference, tmp_path):
    assert reference["steps"] == STEPS_PER_EPOCH * EPOCHS
    again = run_config(_args(shapes, tmp_path))
    assert _losses(tmp_path) == reference["losses"] and len(reference["losses"]) == reference["steps"]
    record = json.loads((Path(again.trainer.log_dir) / "run.json").read_text())
    assert record["seed"] == 0 and record["world_size"] == 1
    assert record["versions"]["torch"] == torch.__version__.split("+")[0]
    assert record["git"] is None or len(record["git"]["commit"]) == 40
    assert record["hardware"]["cpu_cores"] == os.cpu_count() and record["hardware"]["gpus"] == []  # CPU-only tests
    assert 0 < record["fit_seconds"] < 600 and record["finished"] >= record["started"]  # fit's own duration
    assert (Path(again.trainer.log_dir) / "config.yaml").is_file()


def test_sigkill_mid_epoch_then_resume_from_last_continues_the_same_run(shapes, reference, tmp_path):
    kill_step = STEPS_PER_EPOCH + 2  # in the middle of the second epoch
    killer = json.dumps({"class_path": "training_helpers.KillAt", "init_args": {"step": kill_step}})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    args = _args(shapes, tmp_path, "--last.every_n_train_steps", "1", f"--trainer.callbacks+={killer}")
    killed = subprocess.run([sys.executable, "-m", "captioning.cli", *args], env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    last = tmp_path / "ckpt" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert 0 < saved["global_step"] < kill_step + 1 and saved["global_step"] % STEPS_PER_EPOCH != 0  # mid-epoch
    resumed = run_config([*_args(shapes, tmp_path, "--last.every_n_train_steps", "1"), "--ckpt_path", str(last)])
    assert resumed.trainer.global_step == STEPS_PER_EPOCH * EPOCHS  # no lost or repeated optimizer steps
    after = {step: loss for step, loss in _losses(tmp_path).items() if step >= saved["global_step"]}
    assert len(after) == STEPS_PER_EPOCH * EPOCHS - saved["global_step"]
    # the same batches, dropout masks and optimizer state as the run that was never killed
    assert after == {step: reference["losses"][step] for step in after}
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, reference["cli"].model.state_dict()[name], rtol=0, atol=0, msg=name)


def test_ddp_on_two_cpu_processes_trains_and_validates_with_exact_scores(shapes, tmp_path):
    args = [
        "fit",
        *("--config", str(ROOT / "configs/smoke.yaml"), "--data.root", str(shapes)),
        *("--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"),
        *("--trainer.max_epochs", "2", "--trainer.default_root_dir", str(tmp_path)),
        *("--checkpoint.dirpath", str(tmp_path / "ckpt")),
    ]
    run = subprocess.run([sys.executable, "-m", "captioning.cli", *args], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    best = tmp_path / "ckpt" / "best.ckpt"
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] > 0
    state = next(v for k, v in checkpoint["callbacks"].items() if "val/CIDEr" in k)
    scores = evaluate(best, shapes, "val", tmp_path / "eval")  # one process, the whole split
    assert float(state["best_model_score"]) == pytest.approx(scores["CIDEr"], abs=1e-6)


def test_bf16_mixed_precision_config_trains_and_validates_on_cpu(shapes, tmp_path):
    args = ["fit", "--config", str(ROOT / "configs/smoke.yaml"), "--config", str(ROOT / "configs/trainer/bf16.yaml")]
    args += ["--data.root", str(shapes), "--trainer.max_epochs", "1", "--checkpoint.dirpath", str(tmp_path)]
    args += ["--trainer.default_root_dir", str(tmp_path)]
    cli = run_config(args)
    assert cli.trainer.precision == "bf16-mixed" and cli.trainer.global_step == STEPS_PER_EPOCH
    assert torch.isfinite(cli.trainer.callback_metrics["val/CIDEr"])
    assert all(p.dtype == torch.float32 for p in cli.model.parameters())  # autocast: the weights stay float32


def test_encoder_frozen_first_then_chosen_stages_train_with_their_own_learning_rate(shapes, tmp_path):
    base = ["--config", str(ROOT / "configs/smoke.yaml"), "--data.root", str(shapes)]
    twin = run_config(["validate", *base, "--trainer.limit_val_batches", "0"])  # the same seed: the initial weights
    initial = {k: v.clone() for k, v in twin.model.captioner.encoder.state_dict().items()}
    args = ["fit", *base, "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "100"]
    args += ["--finetuning.frozen_epochs", "1", "--finetuning.unfreeze", "[layer4]"]
    args += ["--model.optimization.encoder_lr", "0.003"]
    args += ["--checkpoint.dirpath", str(tmp_path), "--trainer.default_root_dir", str(tmp_path)]
    cli = run_config(args)
    assert isinstance(next(c for c in cli.trainer.callbacks if isinstance(c, BaseFinetuning)), EncoderFinetuning)
    groups = cli.trainer.optimizers[0].param_groups
    assert [g["initial_lr"] for g in groups] == [0.01, 0.003]  # decoder (smoke config's lr), encoder
    trained = cli.model.captioner.encoder.state_dict()
    for name, value in trained.items():
        # layer4 trained in the second epoch (weights and BN statistics); everything below it never moved
        assert (not torch.equal(value, initial[name])) == name.startswith("backbone.layer4"), name


def test_encoder_finetuning_refuses_an_unknown_stage_before_training(shapes, tmp_path):
    args = ["fit", "--config", str(ROOT / "configs/smoke.yaml"), "--data.root", str(shapes)]
    args += ["--finetuning.frozen_epochs", "1", "--finetuning.unfreeze", "[layer9]"]
    args += ["--checkpoint.dirpath", str(tmp_path), "--trainer.default_root_dir", str(tmp_path)]
    with pytest.raises(ConfigError, match=r"finetuning.unfreeze: unknown stages \['layer9'\]"):
        run_config(args)
