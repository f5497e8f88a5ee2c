"""LightningModule: cross-entropy training with the doubly stochastic attention term, generation-based evaluation.

Loss (Xu et al. 2015, eq. 14):  L = -sum_t log p(y_t) + lambda * sum_i (1 - sum_t alpha_ti)^2
The cross-entropy is averaged over non-pad target tokens; the attention term over images. Validation and test
*generate* captions (beam search, greedy at beam size 1) and score the whole split with the COCO metrics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightning_fabric.utilities.data import AttributeDict

from captioning.data.dataset import Batch
from captioning.data.images import IMAGENET_MEAN, IMAGENET_STD
from captioning.decoding import DecodingSpec, Generation, beam_search
from captioning.errors import CaptioningError, ConfigError
from captioning.metrics.evaluator import CaptionEvaluator, EvaluationSpec
from captioning.metrics.tokenize import ptb_tokenize
from captioning.models.attention.weights import AttentionWeights
from captioning.models.captioner import Captioner, DecoderSpec, EncoderSpec, Inputs
from captioning.rng import rng_states, set_rng_states
from captioning.scst import CiderReward, SelfCritical, SelfCriticalLoss
from captioning.vocab import Vocabulary


def caption_loss(
    logits: torch.Tensor,
    alphas: list[torch.Tensor],
    targets: torch.Tensor,
    *,
    pad: int,
    attention_reg: float,
) -> dict[str, torch.Tensor]:
    """Xu et al. eq. 14 over a padded batch, divided by the batch's word count: logits (B, T, V), targets (B, T),
    and the spatial attention maps (each (B, T, N); one per attended layer, none for the ``none`` attention), whose
    terms are summed.

    Eq. 14 sums the caption's negative log-likelihood over its words and adds lambda * sum_i (1 - sum_t alpha_ti)^2
    once per caption. Divided by the number of words W in the batch, that is the mean cross-entropy per word plus
    lambda * (sum over captions of the term) / W: so ``attention_reg`` weighs the term against the likelihood as
    Xu et al.'s lambda does. (Until issue 15 the term was averaged per caption, which weighed lambda about 11x more on
    COCO's 11-word captions.) Positions whose target is ``pad`` count nowhere.
    """
    xe = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad)
    mask = (targets != pad).to(logits.dtype)  # (B, T)
    words = mask.sum().clamp(min=1.0)  # W
    reg = logits.new_zeros(())
    for alpha in alphas:
        coverage = (alpha * mask[..., None]).sum(dim=1)  # (B, N): sum_t alpha_ti over real words
        reg = reg + ((1.0 - coverage) ** 2).sum() / words  # sum over captions and regions, per word
    return {"loss": xe + attention_reg * reg, "xe": xe, "attention_reg": reg}


@dataclass(frozen=True)
class CrossEntropy:
    """The cross-entropy objective (the module's ``loss``): teacher forcing with Xu et al.'s eq. 14
    (:func:`caption_loss`), optionally with scheduled sampling. What training minimizes unless ``scst`` is set; the
    validation loss either way.

    Args:
        attention_reg: lambda of the doubly stochastic attention term, weighed as in Xu et al. eq. 14 (0 disables
            it, as the official SCA-CNN code does).
        sample_prob: scheduled sampling (Bengio et al. 2015, arXiv 1506.03099): the largest probability of feeding
            the model its own previous word instead of the reference one, reached linearly over
            ``sample_ramp_epochs`` (0 disables).
        sample_ramp_epochs: epochs over which the scheduled-sampling probability rises from 0.
    """

    attention_reg: float = 1.0
    sample_prob: float = 0.0
    sample_ramp_epochs: int = 1


@dataclass(frozen=True)
class OptimizationSpec:
    """The optimizer and its learning-rate schedule.

    Args:
        optimizer: ``adamw`` (the project's) or ``adadelta`` (the official SCA-CNN code's: rho 0.95, eps 1e-6, as in
            arctic-captions' ``adadelta``, which it builds on).
        lr: the learning rate (Adadelta: its scale, 1.0 in Zeiler's method and the official code).
        weight_decay: AdamW's decoupled weight decay, on every parameter; for ``adadelta`` the coefficient of the
            official code's L2 term ``weight_decay * sum w^2`` in the loss, on the decoder's parameters only.
        lr_schedule: ``cosine`` decays the learning rate to 0 over the run, per step; ``constant`` keeps it.
        warmup_steps: optimizer steps of linear learning-rate warmup before the schedule.
        encoder_lr: the CNN's learning rate (None: ``lr``), e.g. lower for a pretrained encoder. (Freezing the CNN
            for the first epochs is the :class:`~captioning.callbacks.EncoderFinetuning` callback.)
    """

    optimizer: Literal["adamw", "adadelta"] = "adamw"
    lr: float = 4e-4
    weight_decay: float = 1e-4
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = 0
    encoder_lr: float | None = None


class CaptioningModule(pl.LightningModule):
    """Trains and evaluates a :class:`Captioner`.

    Args:
        vocabulary: the word list (linked from the data module by the CLI); checkpoints carry it.
        encoder: CNN encoder settings.
        decoder: LSTM decoder settings.
        blind: zero the image features (the language-prior baseline).
        image_size: the square input side the model is trained on (linked from the data module; ``caption`` uses it).
        optimization: optimizer, learning rates and schedule.
        loss: the cross-entropy objective's settings (doubly stochastic term, scheduled sampling).
        scst: train with self-critical sequence training instead (:mod:`captioning.scst`: samples per image,
            baseline); start it from a cross-entropy model with ``init_weights``. None: cross-entropy.
        decoding: how validation, test, predict and ``caption`` generate (beam size, lengths, penalties).
        evaluation: the metrics validation and test compute, and their tokenizer.
        init_weights: a checkpoint whose weights a new run starts from (not its optimizer or loop state: that is
            ``--ckpt_path``, resuming); e.g. the cross-entropy model an SCST run fine-tunes.
        vocabulary_rule: how ``vocabulary`` was chosen (linked from the data module: ``counted`` splits,
            ``min_count``), recorded so that ``evaluate`` can write it into ``scores.json``; None where unknown.
    """

    def __init__(
        self,
        vocabulary: list[str],
        *,
        encoder: EncoderSpec = EncoderSpec(),  # noqa: B008 - frozen dataclasses: immutable defaults
        decoder: DecoderSpec = DecoderSpec(),  # noqa: B008
        blind: bool = False,
        image_size: int = 224,
        optimization: OptimizationSpec = OptimizationSpec(),
        loss: CrossEntropy = CrossEntropy(),
        scst: SelfCritical | None = None,
        decoding: DecodingSpec = DecodingSpec(),  # noqa: B008
        evaluation: EvaluationSpec = EvaluationSpec(),  # noqa: B008
        init_weights: str | None = None,
        vocabulary_rule: dict[str, str | int] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.vocab = Vocabulary(vocabulary, rule=vocabulary_rule)
        self.captioner = Captioner.build(len(self.vocab), encoder, decoder, blind=blind, bos=self.vocab.bos)
        self.evaluator = CaptionEvaluator(evaluation.metrics, tokenizer=evaluation.tokenizer)
        self.loss_spec, self.scst_spec, self.decoding, self.optimization = loss, scst, decoding, optimization
        self.self_critical: SelfCriticalLoss | None = None  # built when an SCST run starts (it reads the data)
        self._rng_to_restore: dict | None = None  # a resumed run's RNG states, applied at its first batch
        self._features_checked = None  # the feature store (--data.features) last checked against this model

    @property
    def suppressed(self) -> tuple[int, ...]:
        """Word ids never generated: ``<pad>``, ``<bos>`` and, with ``decoding.suppress_unk``, ``<unk>``."""
        vocab = self.vocab
        return (vocab.pad, vocab.bos, *((vocab.unk,) if self.decoding.suppress_unk else ()))

    # -- training -------------------------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        inputs, targets = batch.tokens[:, :-1], batch.tokens[:, 1:]  # (B, T) each
        sample_prob = self.scheduled_sample_prob() if self.training else 0.0
        lengths = (targets != self.vocab.pad).sum(dim=1)  # (B,): steps up to the end token; the padding is not run
        logits, weights = self.captioner(batch.images, inputs, lengths=lengths, sample_prob=sample_prob)  # (B, T, V)
        alphas = list(AttentionWeights.of(weights).spatial.values())  # each attended layer's maps (B, T, N)
        return caption_loss(logits, alphas, targets, pad=self.vocab.pad, attention_reg=self.loss_spec.attention_reg)

    def _count_skipped(self, batch: Batch, stage: str) -> bool:
        """Logs the batch's unreadable images (summed over the epoch and the ranks); True when none is left."""
        self.log(
            f"{stage}/skipped_images",
            float(batch.skipped),
            reduce_fx="sum",
            on_step=False,
            on_epoch=True,
            sync_dist=True,
            batch_size=1,
        )
        return not batch.image_ids

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        if self._count_skipped(batch, "train"):
            if self.trainer.world_size == 1:
                return None  # every image of the batch was unreadable: Lightning skips the step
            # DDP cannot skip a step on one process only: a zero loss keeps the gradient all-reduce in step
            return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        if self.self_critical is not None:
            losses = self.self_critical(self.captioner, batch.images, batch.image_ids)
        else:
            losses = self.loss(batch)
        size = len(batch.image_ids)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=size)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=size)
        self.log("loss", losses["loss"], prog_bar=True, logger=False, batch_size=size)
        return losses["loss"]

    # -- the start of a run: initial weights, features, the SCST reward ---------------------------------------------
    def on_fit_start(self) -> None:
        if self.hparams.init_weights and self.trainer.ckpt_path is None:  # a new run; a resumed one has its own
            self.load_init_weights()
        self._check_features()
        if self.scst_spec is not None:
            # Rewards use document frequencies of the *training* references (as in Rennie et al.'s CIDEr-D
            # optimization, arXiv 1612.00563; the reported val/test CIDEr-D uses the split's own references).
            train = self.trainer.datamodule.records("train")
            tokenized = ptb_tokenize({r.image_id: list(r.captions) for r in train}, backend="python")
            self.self_critical = SelfCriticalLoss(
                self.scst_spec,
                CiderReward(tokenized),
                bos=self.vocab.bos,
                eos=self.vocab.eos,
                max_len=self.decoding.max_len,
                suppress=self.suppressed,
                decode=self.vocab.decode,
                greedy=lambda images: self.generate(images, beam_size=1)[0],
            )

    def load_init_weights(self) -> None:
        """Loads the weights of ``init_weights`` (one-line errors for a bad file or another model's weights)."""
        start = load_checkpoint(self.hparams.init_weights, map_location=self.device)
        try:
            self.load_state_dict(start.state_dict())
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise CaptioningError(f"{self.hparams.init_weights}: its model differs from this run's ({first})") from e

    # -- pre-extracted features (captioning extract, --data.features) ----------------------------------------------
    def feature_identity(self) -> dict:
        """What a feature folder must have been made with for this model to read it instead of the images: the
        encoder, a checksum of the weights the stored maps depend on, the input size and transform, the attention
        and the stored maps' shapes. Refuses (:class:`ConfigError`) a model whose encoder trains a parameter below
        the stored maps: they could not stand for its CNN."""
        spec = self.hparams.encoder
        spec = spec if isinstance(spec, dict) else dataclasses.asdict(spec)
        decoder = self.hparams.decoder
        decoder = decoder if isinstance(decoder, dict) else dataclasses.asdict(decoder)
        shapes, checksum = frozen_features(self.captioner, self.hparams.image_size)
        attention = self.captioner.decoder.attention
        return {
            "encoder": {k: spec[k] for k in ("arch", "depth", "attention", "width", "output_stride", "weights")},
            "frozen_weights_sha256": checksum,
            "image_size": self.hparams.image_size,
            "transform": {"resize": "antialiased bilinear", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            "attention": decoder["attention"],
            "lowest_attended": attention.names[0] if hasattr(attention, "names") else None,
            "features": shapes,
        }

    def _check_features(self) -> None:
        """With ``--data.features``: refuses features made for another model (once per run and stage)."""
        store = getattr(getattr(self._trainer, "datamodule", None), "feature_store", None)
        if store is not None and self._features_checked is not store:
            store.check(self.feature_identity())
            self._features_checked = store

    def on_validation_start(self) -> None:
        self._check_features()

    def on_test_start(self) -> None:
        self._check_features()

    def on_predict_start(self) -> None:
        self._check_features()

    # -- checkpoints: the RNG states travel with the training state, so a resumed run draws what it would have --------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Applied at the first training batch, not now: between here and that batch Lightning builds the loader
        # iterator, which draws from the global RNG (the run being resumed drew that at its epoch start, before the
        # state was saved). (Checkpoints from before this key existed resume with fresh draws.)
        self._rng_to_restore = checkpoint.get("rng_states")

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        if self._rng_to_restore is not None:
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    def scheduled_sample_prob(self) -> float:
        spec = self.loss_spec
        if not spec.sample_prob or self._trainer is None:
            return 0.0
        return spec.sample_prob * min(1.0, self.trainer.current_epoch / max(1, spec.sample_ramp_epochs))

    def on_train_epoch_start(self) -> None:
        # Lightning puts back the train/eval flags that each module had before its sanity-check validation by setting
        # them one by one, not through Encoder.train: that would leave a frozen backbone's BN in train mode (updating
        # its running statistics) for the whole run. Encoder.train keeps frozen parts (for good, or for the first
        # epochs: EncoderFinetuning, which runs before this hook) in eval mode.
        self.captioner.encoder.train(self.training)

    def configure_optimizers(self) -> dict:
        hp = self.optimization
        cnn = list(self.captioner.encoder.parameters())
        cnn_ids = {id(p) for p in cnn}
        groups = [{"params": [p for p in self.parameters() if id(p) not in cnn_ids]}]
        groups.append({"params": cnn, "lr": hp.encoder_lr if hp.encoder_lr is not None else hp.lr})
        if hp.optimizer == "adadelta":
            # torch adds weight_decay * w to the gradient: the gradient of the official (weight_decay / 2) * sum w^2,
            # so the official weight_decay * sum w^2 is 2 * weight_decay here; the CNN has none (decoder only).
            groups[0]["weight_decay"], groups[1]["weight_decay"] = 2 * hp.weight_decay, 0.0
            optimizer = torch.optim.Adadelta(groups, lr=hp.lr, rho=0.95, eps=1e-6, foreach=True)
            return self._with_schedule(optimizer)
        # The fused AdamW kernel (CPU and CUDA): one pass per parameter tensor instead of about ten elementwise ops;
        # 10x faster than the default per-tensor loop on the CPU here. Lightning refuses fused optimizers under
        # mixed precision with clipping (they may unscale internally), so mixed precision gets the foreach kernels.
        mixed = self._trainer is not None and "mixed" in str(self.trainer.precision)
        kernel = {"foreach": True} if mixed else {"fused": True}
        return self._with_schedule(torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay, **kernel))

    def _with_schedule(self, optimizer: torch.optim.Optimizer) -> dict:
        if self.optimization.lr_schedule == "constant" and not self.optimization.warmup_steps:
            return {"optimizer": optimizer}
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self._lr_factor(step))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def _lr_factor(self, step: int) -> float:
        """The learning rate at optimizer step ``step`` as a fraction of ``lr``: linear warmup over ``warmup_steps``,
        then constant or a cosine decay to 0 at the run's last step (SGDR's schedule without restarts, Loshchilov &
        Hutter 2017). The run's length is read on the first step after warmup, not when the optimizer is built:
        asking Lightning for it then would build the training loader before a resumed run has restored its loop and
        loader state."""
        warmup = self.optimization.warmup_steps
        if step < warmup:
            return (step + 1) / warmup
        if self.optimization.lr_schedule == "constant" or step == 0:
            return 1.0
        total = max(1, int(self.trainer.estimated_stepping_batches) - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, total) / total))

    # -- generation -------------------------------------------------------------------------------------------------
    def generate(self, images: Inputs, *, beam_size: int | None = None) -> tuple[list[str], Generation]:
        """images (B, 3, H, W) -> captions and the raw generation (tokens, scores, attention maps).

        Decodes in eval and inference mode whatever mode the model is in, and puts its train/eval flags back
        (:func:`~captioning.decoding.beam_search`)."""
        spec = self.decoding
        generation = beam_search(
            self.captioner,
            images,
            bos=self.vocab.bos,
            eos=self.vocab.eos,
            max_len=spec.max_len,
            beam_size=beam_size or spec.beam_size,
            min_len=spec.min_len,
            length_penalty=spec.length_penalty,
            length_alpha=spec.length_alpha,
            block_trigrams=spec.block_trigrams,
            suppress=self.suppressed,
        )
        return [self.vocab.decode(row) for row in generation.tokens], generation

    def evaluation_settings(self) -> dict[str, dict]:
        """What a score depends on besides the weights, for ``scores.json``: the decoding settings :meth:`generate`
        uses, and the vocabulary (its size and, where known, how its words were chosen)."""
        rule = self.vocab.rule or {}
        vocabulary = {"size": len(self.vocab), "counted": rule.get("counted"), "min_count": rule.get("min_count")}
        return {"decoding": dataclasses.asdict(self.decoding), "vocabulary": vocabulary}

    # -- evaluation -------------------------------------------------------------------------------------------------
    def _eval_step(self, batch: Batch, stage: str) -> None:
        if self._count_skipped(batch, stage):
            return
        self.log(f"{stage}/loss", self.loss(batch)["xe"], batch_size=len(batch.image_ids), sync_dist=True)
        captions, generation = self.generate(batch.images)
        self.evaluator.add(batch.image_ids, captions, batch.references, generation.attention)

    def _eval_epoch_end(self, stage: str) -> None:
        if self.trainer.sanity_checking:  # a 2-batch sanity run would log meaningless split scores
            self.evaluator.reset()
            return
        evaluation = self.evaluator.evaluate()  # kept as self.evaluator.last (what `evaluate` writes)
        # Every rank holds the same broadcast scores; sync_dist averages identical values (and keeps Lightning quiet).
        measured = {k: v for k, v in {**evaluation.scores, **evaluation.grounding}.items() if v is not None}
        scores = {f"{stage}/{k}": v for k, v in measured.items()}
        self.log_dict(scores, prog_bar=stage == "val", sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self.evaluator.reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self.evaluator.reset()

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: Batch, batch_idx: int) -> list[dict]:
        if not batch.image_ids:
            return []
        captions, _ = self.generate(batch.images)
        return [{"image_id": i, "caption": c} for i, c in zip(batch.image_ids, captions, strict=True)]


#: The settings classes a checkpoint's hyperparameters may hold: all that weights-only unpickling accepts besides
#: tensors and containers (AttributeDict: Lightning's hparams container in checkpoints of older releases).
SETTINGS_CLASSES = (
    EncoderSpec,
    DecoderSpec,
    OptimizationSpec,
    CrossEntropy,
    SelfCritical,
    DecodingSpec,
    EvaluationSpec,
    AttributeDict,
)

#: Flat hyperparameters of checkpoints written before the settings were grouped (commit 79acff5 and earlier) -> the
#: group and field they moved to. ``encoder_frozen_epochs`` / ``encoder_unfreeze`` (now the EncoderFinetuning
#: callback), the cross-entropy settings (now ``loss``) and ``scst*`` (now ``scst``) are handled in
#: :func:`upgrade_hyperparameters`.
_FLAT_SETTINGS = {
    "optimization": {f.name: f.name for f in dataclasses.fields(OptimizationSpec)},
    "decoding": {f.name: f.name for f in dataclasses.fields(DecodingSpec)},
    "evaluation": {f.name: f.name for f in dataclasses.fields(EvaluationSpec)},
}


def upgrade_hyperparameters(saved: Mapping) -> dict:
    """A checkpoint's saved hyperparameters as :class:`CaptioningModule` takes them today: the flat settings of
    older checkpoints (``lr``, ``beam_size``, ``scst``, ...) grouped into their specs; settings saved as plain dicts
    made into their classes. Settings of the training schedule that no longer live on the module
    (``encoder_frozen_epochs``, ``encoder_unfreeze``) are dropped: they do not change the weights."""
    # Keys Lightning adds for itself (LightningCLI's ``_instantiator``, ``_class_path``) are not settings.
    hp = {name: value for name, value in saved.items() if not name.startswith("_")}
    specs = {"encoder": EncoderSpec, "decoder": DecoderSpec, "loss": CrossEntropy, "scst": SelfCritical}
    for group, spec in (("optimization", OptimizationSpec), ("decoding", DecodingSpec), ("evaluation", EvaluationSpec)):
        flat = {field: _tuples(hp.pop(name)) for name, field in _FLAT_SETTINGS[group].items() if name in hp}
        if flat:
            hp[group] = spec(**flat)
        specs[group] = spec
    if isinstance(hp.get("scst"), bool):  # flat: a flag with scst_samples and scst_baseline beside it
        samples, baseline = hp.pop("scst_samples", 5), hp.pop("scst_baseline", "greedy")
        hp["scst"] = SelfCritical(samples=samples, baseline=baseline) if hp["scst"] else None
    if xe := {name: hp.pop(name) for name in ("attention_reg", "sample_prob", "sample_ramp_epochs") if name in hp}:
        hp["loss"] = CrossEntropy(**xe)
    for name in ("encoder_frozen_epochs", "encoder_unfreeze"):
        hp.pop(name, None)
    for name, spec in specs.items():
        if isinstance(hp.get(name), Mapping):
            value = dict(hp[name])
            hp[name] = spec(**{k: _tuples(v) for k, v in value.items()})
    return hp


def _tuples(value: object) -> object:
    """Lists as the specs' (hashable) tuples: a config's YAML lists arrive as lists."""
    return tuple(value) if isinstance(value, list) else value


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu", **decoding) -> CaptioningModule:
    """Loads a module from a checkpoint alone (vocabulary and settings are inside it), in eval mode.

    ``decoding`` replaces saved decoding settings (:class:`~captioning.decoding.DecodingSpec` fields: ``beam_size``,
    ``max_len``, ``length_penalty``, ``block_trigrams``, ...); they do not change the weights. Checkpoints of
    releases whose settings were flat load too (:func:`upgrade_hyperparameters`).

    Uses ``weights_only`` unpickling: only tensors, containers and this project's plain settings classes are
    accepted, so a checkpoint from an untrusted source cannot run code. (Lightning's ``load_from_checkpoint`` would
    pass the saved hyperparameters to the constructor as they are: the upgrade has to come between.)
    """
    path = Path(path)
    if not path.is_file():
        raise CaptioningError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(list(SETTINGS_CLASSES)):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        reason = f"it holds {unsafe.group(1)}, which weights-only loading refuses" if unsafe else "unpickling failed"
        raise CaptioningError(f"{path}: not a readable captioning checkpoint ({reason})") from e
    except (RuntimeError, EOFError, ValueError) as e:
        raise CaptioningError(f"{path}: not a readable captioning checkpoint ({_first_line(e)})") from e
    try:
        hparams = upgrade_hyperparameters(checkpoint["hyper_parameters"])
        if decoding:
            hparams["decoding"] = dataclasses.replace(hparams.get("decoding", DecodingSpec()), **decoding)
        module = CaptioningModule(**hparams)
        module.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise CaptioningError(f"{path}: not a readable captioning checkpoint ({_first_line(e)})") from e
    return module.to(map_location).eval()


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def frozen_features(captioner: Captioner, image_size: int) -> tuple[dict[str, list[int]], str]:
    """The maps :meth:`Captioner.features` stores for one image ({name: [C, h, w]}), and a SHA-256 of the encoder
    weights and buffers they depend on. Which parameters they depend on is read off autograd (those with a gradient
    path from a probe image to the maps); a parameter among them that trains is refused (:class:`ConfigError`)."""
    encoder = captioner.encoder
    named = dict(encoder.named_parameters())
    trains = {name for name, p in named.items() if p.requires_grad}
    training = captioner.training
    captioner.eval()  # what extraction runs: BN on running statistics
    try:
        for p in named.values():
            p.requires_grad_(True)
        probe = torch.zeros(1, 3, image_size, image_size, device=next(encoder.parameters()).device)
        with torch.enable_grad():
            maps = captioner.features(probe)
            grads = torch.autograd.grad(sum(m.sum() for m in maps.values()), list(named.values()), allow_unused=True)
    finally:
        for name, p in named.items():
            p.requires_grad_(name in trains)
        captioner.train(training)
    used = {name for name, g in zip(named, grads, strict=True) if g is not None}
    if trained := sorted(used & trains):
        raise ConfigError(
            f"pre-extracted features stand for a frozen CNN, but encoder.{trained[0]} ({len(trained)} trained "
            "parameters) lies below the stored maps: freeze it (encoder.trainable false, train_attention false, "
            "train_modules above the lowest attended layer) or train without --data.features"
        )
    owners = {name.rpartition(".")[0] for name in used}  # the modules whose parameters the maps read
    digest = hashlib.sha256()
    for key, value in sorted(encoder.state_dict().items()):
        if key.rpartition(".")[0] in owners:  # their weights and buffers (BN running statistics)
            digest.update(key.encode())
            digest.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype's bytes
    return {name: list(m.shape[1:]) for name, m in maps.items()}, digest.hexdigest()
