"""``captioning score`` against pycocoevalcap's own evaluation, and the readers behind it.

The reference is ``COCOEvalCap.evaluate()`` without SPICE (its jars are a separate download): pycocotools reads both
files, the images scored are those of the results (``params['image_id'] = cocoRes.getImgIds()``), each with every
annotation pycocotools' ``imgToAnns`` holds, through pycocoevalcap's Java ``PTBTokenizer`` and its scorers.
"""

import contextlib
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from pycocotools.coco import COCO

from captioning.cli import score
from captioning.data.coco import read_coco_captions, read_coco_references
from captioning.data.records import DataWarning
from captioning.errors import CaptioningError

requires_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's tokenizer and METEOR")

WORDS = ["a", "the", "red", "blue", "small", "dog", "cat", "ball", "on", "grass", "runs", "sits", "next", "to"]
EMPTY = ["", " ", "...", "\u2026", " - -", ". ?", "''", ";:", "&quot;"]  # no token after PTB tokenization


def write_references(path: Path, captions: dict[int, list[str]], *, annotation_ids: list[int] | None = None) -> None:
    """A COCO captions file: ``captions`` per image id, annotations in that order (ids 1, 2, ... unless given)."""
    pairs = [(image_id, text) for image_id, texts in captions.items() for text in texts]
    ids = annotation_ids or list(range(1, len(pairs) + 1))
    data = {
        "images": [{"id": image_id, "file_name": f"{image_id}.jpg"} for image_id in captions],
        "annotations": [
            {"id": ann_id, "image_id": image_id, "caption": text}
            for ann_id, (image_id, text) in zip(ids, pairs, strict=True)
        ],
    }
    path.write_text(json.dumps(data))


def write_results(path: Path, captions: dict[int, object]) -> None:
    path.write_text(json.dumps([{"image_id": image_id, "caption": text} for image_id, text in captions.items()]))


def random_corpus(seed: int, images: int) -> tuple[dict[int, list[str]], dict[int, str]]:
    """References (2-5 per image, raw text with case and punctuation) and one candidate per image."""
    rng = random.Random(seed)

    def text() -> str:
        words = rng.choices(WORDS, k=rng.randint(2, 8))
        return " ".join(words).capitalize() + rng.choice([".", "", " !", ","])

    references = {100 + i: [text() for _ in range(rng.randint(2, 5))] for i in range(images)}
    candidates = {image_id: text() for image_id in references}
    return references, candidates


def pycocoevalcap_scores(references: Path, results: Path, metrics: tuple[str, ...], meteor=None) -> dict[str, float]:
    """``COCOEvalCap.evaluate()`` for ``metrics`` (of Bleu, METEOR, ROUGE_L, CIDEr), as it computes them."""
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco = COCO(str(references))
        coco_results = coco.loadRes(str(results))
    image_ids = coco_results.getImgIds()
    gts = {i: coco.imgToAnns[i] for i in image_ids}
    res = {i: coco_results.imgToAnns[i] for i in image_ids}
    tokenizer = PTBTokenizer()
    gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    scores: dict[str, float] = {}
    if "Bleu" in metrics:
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        scores |= {f"Bleu_{n + 1}": value for n, value in enumerate(bleu)}
    if "METEOR" in metrics:  # ``meteor``: pycocoevalcap's Meteor() (the session's, tests/conftest.py)
        scores["METEOR"], _ = meteor.compute_score(gts, res)
    if "ROUGE_L" in metrics:
        scores["ROUGE_L"], _ = Rouge().compute_score(gts, res)
    if "CIDEr" in metrics:
        scores["CIDEr"], _ = Cider().compute_score(gts, res)
    return {name: float(value) for name, value in scores.items()}


def ours(references: Path, results: Path, out: Path) -> dict[str, float]:
    score.main([str(references), str(results), "--no-spice", "--out", str(out)])
    return json.loads(out.read_text())


def assert_same(got: dict[str, float], expected: dict[str, float]) -> None:
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=0, abs=1e-12), name


@requires_java
def test_score_equals_pycocoevalcap_with_references_that_tokenize_to_nothing(tmp_path, pycocoevalcap_meteor):
    """Punctuation- and whitespace-only references count, as in pycocoevalcap: they shorten BLEU's closest
    reference length and enter CIDEr-D's mean over an image's references as a 0 (dropping them raised CIDEr-D)."""
    references, candidates = random_corpus(seed=1, images=24)
    for n, image_id in enumerate(list(references)[::3]):
        references[image_id].insert(n % 3, EMPTY[n % len(EMPTY)])
    references[100] = ["...", " "]  # an image whose references all tokenize to nothing
    write_references(tmp_path / "refs.json", references)
    write_results(tmp_path / "res.json", candidates)
    with pytest.warns(DataWarning) as caught:
        got = ours(tmp_path / "refs.json", tmp_path / "res.json", tmp_path / "scores.json")
    metrics = ("Bleu", "METEOR", "ROUGE_L", "CIDEr")
    expected = pycocoevalcap_scores(tmp_path / "refs.json", tmp_path / "res.json", metrics, pycocoevalcap_meteor)
    assert_same(got, expected)
    [warning] = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]  # one warning, not one each
    texts = [text for captions in references.values() for text in captions]  # annotation ids 1, 2, ... in this order
    assert warning.startswith(f"{tmp_path / 'refs.json'}: {sum(t in EMPTY for t in texts)} reference caption(s) ")
    first = next(n for n, text in enumerate(texts, start=1) if text in EMPTY)
    assert f"(e.g. annotation id {first})" in warning and "kept" in warning


@requires_java
def test_score_scores_the_images_of_the_results_when_the_reference_file_holds_more(tmp_path, monkeypatch, capsys):
    """As COCOEvalCap does with val2014's 40,504 images and the 5,000 Karpathy test results: the other images'
    references play no part (CIDEr-D's IDF included)."""
    monkeypatch.setattr(score, "METRICS", ("Bleu", "CIDEr"))  # no METEOR JVM for this one
    references, candidates = random_corpus(seed=2, images=30)
    write_references(tmp_path / "refs.json", references)
    scored = dict(list(candidates.items())[5:17])
    write_results(tmp_path / "res.json", scored)
    got = ours(tmp_path / "refs.json", tmp_path / "res.json", tmp_path / "scores.json")
    assert_same(got, pycocoevalcap_scores(tmp_path / "refs.json", tmp_path / "res.json", ("Bleu", "CIDEr")))
    subset = {image_id: references[image_id] for image_id in scored}  # the same numbers from a file of just those
    write_references(tmp_path / "subset.json", subset)
    assert ours(tmp_path / "subset.json", tmp_path / "res.json", tmp_path / "subset_scores.json") == got
    capsys.readouterr()

    write_results(tmp_path / "unknown.json", {**scored, 7: "a dog", 9: "a cat"})  # images the file does not have
    with pytest.raises(CaptioningError, match=r"refs\.json: no reference captions for 2 of the 14 images .*7, 9"):
        ours(tmp_path / "refs.json", tmp_path / "unknown.json", tmp_path / "x.json")
    write_references(tmp_path / "captionless.json", {**references, 8: []})  # an image without annotations
    write_results(tmp_path / "eight.json", {**scored, 8: "a dog"})
    with pytest.raises(CaptioningError, match=r"captionless\.json: no reference captions for 1 of .*image ids 8\)"):
        ours(tmp_path / "captionless.json", tmp_path / "eight.json", tmp_path / "x.json")


@requires_java
def test_repeated_annotation_ids_keep_every_caption(tmp_path, monkeypatch):
    """pycocotools indexes ``anns`` by annotation id (a repeated id keeps the last caption) but ``imgToAnns`` keeps
    every annotation, and COCOEvalCap scores against ``imgToAnns``."""
    monkeypatch.setattr(score, "METRICS", ("Bleu",))
    references, candidates = random_corpus(seed=3, images=12)
    count = sum(len(texts) for texts in references.values())
    write_references(tmp_path / "refs.json", references, annotation_ids=[1 + n % 4 for n in range(count)])
    write_results(tmp_path / "res.json", candidates)
    got = ours(tmp_path / "refs.json", tmp_path / "res.json", tmp_path / "scores.json")
    assert_same(got, pycocoevalcap_scores(tmp_path / "refs.json", tmp_path / "res.json", ("Bleu",)))
    assert read_coco_references(tmp_path / "refs.json") == references
    records = read_coco_captions(tmp_path / "refs.json", tmp_path, split="train")  # the training reader too
    assert {r.image_id: list(r.captions) for r in records} == references


@pytest.mark.parametrize(
    ("caption", "shown"), [(None, "null"), (7, "7 (a number)"), (["a", "dog"], "['a', 'dog'] (a list)")]
)
def test_a_caption_that_is_not_a_string_is_an_error_naming_the_file_and_the_image(tmp_path, capsys, caption, shown):
    write_references(tmp_path / "refs.json", {1: ["a dog"], 2: ["a cat"], 3: ["a ball"]})
    write_results(tmp_path / "res.json", {1: "a dog", 2: caption, 3: "a ball"})
    message = f"{tmp_path / 'res.json'}: entry 1 (image_id 2): the caption is {shown}, not a string"
    with pytest.raises(CaptioningError, match=re.escape(message)):
        score.main([str(tmp_path / "refs.json"), str(tmp_path / "res.json"), "--no-spice"])
    if caption is None:  # the command line: one line, exit status 2
        status, stderr = run_cli(capsys, "score", tmp_path / "refs.json", tmp_path / "res.json")
        assert status == 2 and stderr.strip() == f"captioning: error: {message}"


def test_reading_references_does_not_tokenize(tmp_path, monkeypatch):
    """Finding references without a word is a regex search: neither nltk's nor the PTB lexer runs on captions with
    letters (reading val2014's 202,654 captions took 9.6 s through nltk; pycocotools alone reads them in 0.3 s)."""
    from nltk.tokenize import TreebankWordTokenizer

    from captioning.metrics import ptb

    def refuse(*args, **kwargs):
        raise AssertionError("a reader tokenized a caption")

    references, _ = random_corpus(seed=4, images=50)
    references[120].append("  !")  # the one caption tokenized: it has no letter or digit
    write_references(tmp_path / "refs.json", references)
    monkeypatch.setattr(TreebankWordTokenizer, "tokenize", refuse)
    lines: list[str] = []
    tokenize_line = ptb.tokenize_line
    monkeypatch.setattr(ptb, "tokenize_line", lambda line, following: lines.append(line) or tokenize_line(line, None))
    with pytest.warns(DataWarning, match="dropped 1 empty caption"):  # training records drop it
        records = read_coco_captions(tmp_path / "refs.json", tmp_path, split="train")
    assert records[20].captions == tuple(references[120][:-1]) and not lines
    with pytest.warns(DataWarning, match="1 reference caption"):  # scoring keeps it
        assert read_coco_references(tmp_path / "refs.json") == references
    assert lines == ["  !"]


@requires_java
@pytest.mark.slow  # a Python start and a METEOR JVM: about 20 s
def test_score_runs_with_spaces_in_the_data_and_the_pycocoevalcap_paths(tmp_path):
    """The Java tokenizer and METEOR run from pycocoevalcap's folder (their jars and the tokenizer's temp file live
    there; both get their arguments as lists and a relative jar name, so no shell splits a path): here a copy of the
    package in a folder whose name holds a space, and data paths with spaces. METEOR's equality with pycocoevalcap
    is checked above; here it runs and scores."""
    from pycocoevalcap.meteor import meteor

    installed = Path(meteor.__file__).parents[1]  # pycocoevalcap is a namespace package: no __init__.py
    site = tmp_path / "site packages"
    for source in installed.rglob("*"):
        if source.is_file() and "__pycache__" not in source.parts and "spice" not in source.parts:
            target = site / "pycocoevalcap" / source.relative_to(installed)
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.suffix == ".py":
                shutil.copy(source, target)
            else:  # the jars and METEOR's paraphrase table: Java opens them by a path with a space
                target.symlink_to(source)
    data = tmp_path / "my data"
    data.mkdir()
    references, candidates = random_corpus(seed=5, images=6)
    write_references(data / "ref captions.json", references)
    write_results(data / "my results.json", candidates)
    program = (
        "import sys\n"
        "from pycocoevalcap.meteor import meteor\n"
        "from pycocoevalcap.tokenizer import ptbtokenizer\n"
        "from captioning.cli import score\n"
        "assert all(' ' in m.__file__ for m in (meteor, ptbtokenizer)), (meteor.__file__, ptbtokenizer.__file__)\n"
        "score.METRICS = ('Bleu', 'METEOR')  # the two that run Java (with the tokenizer)\n"
        "score.main(sys.argv[1:])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    args = [str(data / "ref captions.json"), str(data / "my results.json"), "--no-spice", "--out", str(data / "s.json")]
    result = subprocess.run(
        [sys.executable, "-c", program, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads((data / "s.json").read_text())
    assert set(got) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR"} and 0 < got["METEOR"] < 1
    expected = pycocoevalcap_scores(data / "ref captions.json", data / "my results.json", ("Bleu",))
    assert got["Bleu_4"] == pytest.approx(expected["Bleu_4"], rel=0, abs=1e-12)
    assert not [p for p in (site / "pycocoevalcap" / "tokenizer").iterdir() if p.name.startswith("tmp")]
