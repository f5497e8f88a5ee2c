"""The library layer: what the ``captioning`` commands, the demo, ``ablate`` and the notebooks call, with typed
arguments. Each workflow builds on the module, the data and the metrics below it, never on the command line.

    from captioning.workflows import train, evaluate, caption_images

    run = train(["configs/shapes.yaml"], "data/shapes", "outputs/run", ["--trainer.max_epochs", "2"])
    scores = evaluate(run.best, "data/shapes", "test", "outputs/run/test")
    captions = [c.caption for c in caption_images(load_checkpoint(run.best), ["image.png"])]
"""

from captioning.checkpoints import load_checkpoint
from captioning.workflows.ablation import ablate
from captioning.workflows.demo import demo
from captioning.workflows.evaluation import evaluate
from captioning.workflows.extraction import extract
from captioning.workflows.inference import caption_images, visualize_images
from captioning.workflows.training import TrainingRun, fit_arguments, train

__all__ = [
    "TrainingRun",
    "ablate",
    "caption_images",
    "demo",
    "evaluate",
    "extract",
    "fit_arguments",
    "load_checkpoint",
    "train",
    "visualize_images",
]
