"""COCO metrics: golden numbers, equality with pycocoevalcap, PTB tokenization, input checks, no leaked JVM."""

import faulthandler
import os
import random
import shutil
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from captioning.errors import CaptioningError
from captioning.metrics import bleu, cider_d, close_meteor, coco_scores, meteor, ptb_tokenize, rouge_l, scorers

requires_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR and the PTB tokenizer run on Java")

# A hand-checkable corpus, already tokenized: an exact match (1), no overlap (2), an empty hypothesis (3) and a
# partial match (4).
GOLDEN_CANDIDATES = {
    1: "a red circle left of a blue square",
    2: "two dogs run",
    3: "",
    4: "a green triangle on the right",
}
GOLDEN_REFERENCES = {
    1: ["a red circle left of a blue square", "a red circle next to a blue box"],
    2: ["a yellow star above a green triangle", "one yellow star"],
    3: ["a small blue square", "one blue square"],
    4: ["a green triangle right of a red circle", "the green triangle is on the right"],
}
# Recorded with pycocoevalcap 1.2 (Bleu(4), Meteor(), Rouge(), Cider() called directly; Java 17). Hand checks:
# Bleu_1 = 14/17 clipped unigram matches x brevity penalty exp(1 - 21/17) (closest reference lengths 8+3+3+7);
# image 4: BLEU-1 = 6/6 x exp(1 - 7/6), ROUGE-L with LCS 5 of 6 and 7 tokens: 2.44 PR / (R + 1.44 P) = 0.7587.
GOLDEN_BLEU = {
    "Bleu_1": 0.6508668870846613,
    "Bleu_2": 0.6357479155571626,
    "Bleu_3": 0.6147427537677204,
    "Bleu_4": 0.5820272705705831,
}
GOLDEN_BLEU_PER_IMAGE = {
    "Bleu_1": [0.9999999997500004, 3.333333331111112e-16, 0.0, 0.8464817246084536],
    "Bleu_2": [0.9999999997410718, 4.082482901576769e-16, 0.0, 0.757116271161685],
    "Bleu_3": [0.9999999997301591, 5.503212076293578e-16, 0.0, 0.6236930672719415],
    "Bleu_4": [0.9999999997163694, 1.1362193655679926e-13, 0.0, 9.0960380903795e-05],
}
GOLDEN_METEOR_PER_IMAGE = [1.0, 0.0, 0.0, 0.41952472020359227]  # the corpus score on its own: 0.3072654518806892
GOLDEN_ROUGE_L = 0.4396766169154229
GOLDEN_ROUGE_L_PER_IMAGE = [1.0, 0.0, 0.0, 0.7587064676616916]
GOLDEN_CIDER = 2.175571156501094
GOLDEN_CIDER_PER_IMAGE = [5.7820237648745305, 0.0, 0.0, 2.920260861129846]

WORDS = ["a", "the", "two", "red", "blue", "green", "small", "big", "circle", "square", "triangle", "star"]
WORDS += ["left", "right", "of", "above", "below", "next", "to"]


def random_corpus(seed: int, first_id: int, size: int = 50) -> tuple[dict[int, str], dict[int, list[str]]]:
    """Tokenized captions from a small vocabulary: many shared n-grams, some empty candidates, 1-5 references."""
    rng = random.Random(seed)
    candidates, references = {}, {}
    for image_id in range(first_id, first_id + size):
        candidates[image_id] = " ".join(rng.choices(WORDS, k=rng.randint(0, 9)))
        references[image_id] = [" ".join(rng.choices(WORDS, k=rng.randint(1, 10))) for _ in range(rng.randint(1, 5))]
    return candidates, references


def java_children() -> int:
    """Child processes of this process named ``java``, zombies included (read from /proc)."""
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        name, after = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        count += name == "java" and int(after[1]) == os.getpid()
    return count


@pytest.fixture(scope="module")
def union_scores(pycocoevalcap_meteor):
    """The golden corpus plus a random one, scored once by coco_scores and once by pycocoevalcap: two JVM starts.

    METEOR's per-image scores depend on their image alone, so one call covers the golden images too.
    """
    candidates, references = random_corpus(seed=0, first_id=100)
    candidates |= GOLDEN_CANDIDATES
    references |= GOLDEN_REFERENCES
    ids = sorted(candidates)
    res, gts = {i: [candidates[i]] for i in ids}, {i: references[i] for i in ids}
    faulthandler.dump_traceback_later(180, exit=True)  # a METEOR hang (e.g. on the empty hypothesis) fails the run
    try:
        with pytest.MonkeyPatch.context() as patch:
            # Meteor.__del__ also kills its JVM; disabled, so that only meteor()'s own cleanup can stop it.
            patch.setattr(Meteor, "__del__", lambda self: None)
            before = java_children()  # an earlier test's JVM may be up: the golden values below are a fresh JVM's
            ours = coco_scores(candidates, references, tokenize=False)
            after = java_children()  # METEOR's JVM stays up for the next call
            again = meteor(GOLDEN_CANDIDATES, GOLDEN_REFERENCES)  # the same JVM, other inputs
            reused = java_children()
        theirs: dict[str, tuple] = {}
        score, scores = Bleu(4).compute_score(gts, res, verbose=0)
        theirs |= {f"Bleu_{n + 1}": (score[n], scores[n]) for n in range(4)}
        theirs["METEOR"] = pycocoevalcap_meteor.compute_score(gts, res)
        theirs["ROUGE_L"] = Rouge().compute_score(gts, res)
        theirs["CIDEr"] = Cider().compute_score(gts, res)
    finally:
        faulthandler.cancel_dump_traceback_later()
    java = {"before": before, "after": after, "reused": reused}
    return {"ours": ours, "theirs": theirs, "ids": ids, "again": again, "java": java}


def test_golden_numbers():
    corpus, per_image = bleu(GOLDEN_CANDIDATES, GOLDEN_REFERENCES)
    assert corpus == pytest.approx(GOLDEN_BLEU, abs=1e-6)
    for name, values in GOLDEN_BLEU_PER_IMAGE.items():
        assert per_image[name] == pytest.approx(values, abs=1e-6)
    score, scores = rouge_l(GOLDEN_CANDIDATES, GOLDEN_REFERENCES)
    assert score == pytest.approx(GOLDEN_ROUGE_L, abs=1e-6)
    assert scores == pytest.approx(GOLDEN_ROUGE_L_PER_IMAGE, abs=1e-6)
    score, scores = cider_d(GOLDEN_CANDIDATES, GOLDEN_REFERENCES)
    assert score == pytest.approx(GOLDEN_CIDER, abs=1e-6)
    assert scores == pytest.approx(GOLDEN_CIDER_PER_IMAGE, abs=1e-6)
    assert all(type(value) is float for value in [score, *scores, *corpus.values(), *per_image["Bleu_4"]])


@requires_java
def test_golden_meteor_and_empty_hypothesis(union_scores):
    per_image = union_scores["ours"][1]
    assert [per_image[i]["METEOR"] for i in GOLDEN_CANDIDATES] == pytest.approx(GOLDEN_METEOR_PER_IMAGE, abs=1e-6)
    assert per_image[3]["METEOR"] == 0.0  # the empty hypothesis answered (no hang) and scores 0


@requires_java
def test_coco_scores_equal_pycocoevalcap(union_scores):
    corpus, per_image = union_scores["ours"]
    theirs, ids = union_scores["theirs"], union_scores["ids"]
    assert set(corpus) == set(theirs) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}
    assert list(per_image) == ids
    for name, (score, scores) in theirs.items():
        assert type(corpus[name]) is float
        assert corpus[name] == pytest.approx(float(score), rel=0, abs=1e-12), name
        assert [per_image[i][name] for i in ids] == pytest.approx(list(scores), rel=0, abs=1e-12), name


@requires_java
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="counts processes through /proc")
def test_meteor_keeps_one_jvm_for_the_process(union_scores):
    java = union_scores["java"]  # an earlier test's JVM may have been up before: then it was the one reused
    assert java["after"] == java["reused"] and java["before"] in (java["after"] - 1, java["after"])


@requires_java
def test_a_reused_meteor_jvm_gives_a_fresh_ones_numbers(union_scores):
    """METEOR's -stdio mode keeps no state between calls: the golden images score the same after other inputs."""
    score, per_image = union_scores["again"]
    assert per_image == pytest.approx(GOLDEN_METEOR_PER_IMAGE, abs=1e-12)
    fresh = union_scores["ours"][1]
    assert per_image == pytest.approx([fresh[i]["METEOR"] for i in GOLDEN_CANDIDATES], rel=0, abs=1e-12)
    assert score == pytest.approx(0.3072654518806892, abs=1e-12)


def test_per_image_order_is_sorted_ids():
    candidates = {4: GOLDEN_CANDIDATES[4], 1: GOLDEN_CANDIDATES[1], 3: "", 2: GOLDEN_CANDIDATES[2]}
    references = {i: GOLDEN_REFERENCES[i] for i in (2, 4, 3, 1)}
    score, scores = cider_d(candidates, references)
    assert score == pytest.approx(GOLDEN_CIDER, abs=1e-12)
    assert scores == pytest.approx(GOLDEN_CIDER_PER_IMAGE, abs=1e-12)
    _, per_image = coco_scores(candidates, references, metrics=("ROUGE_L",), tokenize=False)
    assert list(per_image) == [1, 2, 3, 4]


@requires_java
def test_ptb_tokenize(capfd):
    captions = {
        7: ["A Red circle, left of the BOX.", "Don't stop -- it's (very) BIG!"],
        8: ["line\rbreak", ""],
        9: [],
    }
    assert ptb_tokenize(captions) == {
        # "-lowerCase" turns "-LRB-" into "-lrb-", which pycocoevalcap's punctuation list then misses: kept as is.
        7: ["a red circle left of the box", "do n't stop it 's -lrb- very -rrb- big"],
        8: ["line break", ""],
        9: [],
    }
    assert "PTBTokenizer tokenized" not in capfd.readouterr().err
    assert ptb_tokenize({}) == {}


@requires_java
def test_coco_scores_tokenizes_raw_text():
    raw_candidates = {1: "A red circle, left of a blue square.", 2: "Two DOGS run!", 3: "A green triangle."}
    raw_references = {1: ["A red circle left of a blue square."], 2: ["One yellow star."], 3: ["The green triangle"]}
    candidates = {1: "a red circle left of a blue square", 2: "two dogs run", 3: "a green triangle"}
    references = {1: ["a red circle left of a blue square"], 2: ["one yellow star"], 3: ["the green triangle"]}
    metrics = ("Bleu", "ROUGE_L", "CIDEr")
    assert coco_scores(raw_candidates, raw_references, metrics=metrics) == coco_scores(
        candidates, references, metrics=metrics, tokenize=False
    )


def test_missing_java_is_a_captioning_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CaptioningError, match="Java"):
        ptb_tokenize({1: ["a caption"]})
    with pytest.raises(CaptioningError, match="Java"):
        meteor(GOLDEN_CANDIDATES, GOLDEN_REFERENCES)


@pytest.mark.parametrize("scorer", [bleu, meteor, rouge_l, cider_d, coco_scores])
def test_mismatched_ids_are_named(scorer):
    references = {1: ["a b"], 2: ["c d"], 3: ["e f"]}
    with pytest.raises(ValueError, match=r"no references for 4, no candidate for 3"):
        scorer({1: "a b", 2: "c", 4: "d"}, references)
    with pytest.raises(ValueError, match=r"no references for none, no candidate for 3"):
        scorer({1: "a b", 2: "c"}, references)


@pytest.mark.parametrize(
    ("candidates", "references", "message"),
    [
        ({}, {}, "no candidates"),
        ({1: "a", 2: "b"}, {1: ["a"], 2: []}, "non-empty list"),
        ({1: "a", 2: "b"}, {1: ["a"], 2: "b"}, "non-empty list"),
        ({1: ["a"], 2: "b"}, {1: ["a"], 2: ["b"]}, "one caption"),
    ],
)
def test_invalid_inputs(candidates, references, message):
    for scorer in (bleu, rouge_l, cider_d, meteor):
        with pytest.raises(ValueError, match=message):
            scorer(candidates, references)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="line break"):
        meteor({1: "a\nb", 2: "c"}, {1: ["a"], 2: ["c"]})
    with pytest.raises(ValueError, match="metrics"):
        coco_scores({1: "a", 2: "b"}, {1: ["a"], 2: ["b"]}, metrics=("Bleu_4",), tokenize=False)
    with pytest.raises(ValueError, match="list of strings"):
        ptb_tokenize({1: "a caption"})


def test_show_progress(capsys):
    coco_scores(GOLDEN_CANDIDATES, GOLDEN_REFERENCES, metrics=("ROUGE_L",), tokenize=False, show_progress=True)
    assert "COCO metrics" in capsys.readouterr().err


# -- SPICE: scored where its jars and Java are present, otherwise skipped with one line ---------------------------
@pytest.fixture
def no_corenlp(monkeypatch, tmp_path):
    """SPICE as on a machine without its Stanford CoreNLP jars (this one, unless `prepare spice` ran)."""
    import captioning.metrics.spice as spice_module

    monkeypatch.setattr(spice_module, "CORENLP_JARS", (tmp_path / "corenlp.jar", tmp_path / "corenlp-models.jar"))


@requires_java
def test_spice_without_its_jars_is_skipped_with_one_line_and_the_other_metrics_stand(no_corenlp, capsys):
    from captioning.metrics import METRICS, WITH_SPICE, spice_unavailable

    reason = spice_unavailable()
    assert reason.startswith("SPICE skipped: Stanford CoreNLP jars missing from") and "prepare spice" in reason
    with_spice, per_image = coco_scores(GOLDEN_CANDIDATES, GOLDEN_REFERENCES, metrics=WITH_SPICE)
    assert capsys.readouterr().err.strip().splitlines() == [reason]
    without, _ = coco_scores(GOLDEN_CANDIDATES, GOLDEN_REFERENCES, metrics=METRICS)
    assert with_spice == without and "SPICE" not in with_spice
    assert set(per_image[1]) == set(without)


def test_spice_without_java_says_so(monkeypatch):
    import captioning.metrics.spice as spice_module

    monkeypatch.setattr(spice_module.shutil, "which", lambda name: None)
    assert spice_module.spice_unavailable() == "SPICE skipped: no `java` on PATH (SPICE is a Java 8+ program)"
    with pytest.raises(CaptioningError, match="no `java` on PATH"):
        spice_module.spice_score({1: "a red circle"}, {1: ["a red circle"]})


def test_fetching_spice_models_offline_fails_with_one_line(monkeypatch):
    import urllib.error

    import captioning.metrics.spice as spice_module

    def offline() -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(spice_module.stanford, "get_stanford_models", offline)
    with pytest.raises(CaptioningError, match=r"could not fetch the Stanford CoreNLP jars for SPICE: .*resolution"):
        spice_module.fetch_spice_models()


@pytest.mark.skipif(
    __import__("captioning.metrics.spice", fromlist=["x"]).spice_unavailable() is not None,
    reason="SPICE's Stanford CoreNLP jars are not installed (captioning prepare spice)",
)
def test_spice_equals_pycocoevalcap_where_it_can_run():
    from pycocoevalcap.spice.spice import Spice

    from captioning.metrics import spice_score

    ids = sorted(GOLDEN_CANDIDATES)
    expected_mean, expected = Spice().compute_score(
        {i: GOLDEN_REFERENCES[i] for i in ids}, {i: [GOLDEN_CANDIDATES[i]] for i in ids}
    )
    mean, per_image = spice_score(GOLDEN_CANDIDATES, GOLDEN_REFERENCES)
    assert mean == pytest.approx(expected_mean, abs=1e-12)
    assert per_image == pytest.approx([e["All"]["f"] for e in expected], abs=1e-12, nan_ok=True)


@requires_java
def test_evaluator_with_the_python_tokenizer_scores_like_the_java_one():
    from captioning.metrics.evaluator import CaptionEvaluator

    raw_candidates = {
        1: "A red circle, left of a blue square.",
        2: "Two dogs run!",
        3: "",
        4: 'A green triangle\'s "right"',
    }
    scores = {}
    for backend in ("java", "python"):
        evaluator = CaptionEvaluator(tokenizer=backend)
        ids = sorted(raw_candidates)
        evaluator.add(ids, [raw_candidates[i] for i in ids], [GOLDEN_REFERENCES[i] for i in ids])
        scores[backend] = evaluator.compute()
    assert scores["python"] == scores["java"]
    assert scores["java"][0]["CIDEr"] > 0


@requires_java
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="counts processes through /proc")
def test_a_meteor_jvm_that_died_between_calls_is_replaced_and_close_stops_it():
    if scorers._METEOR is None:  # last in this file: the JVM of the tests above is usually still up
        meteor(GOLDEN_CANDIDATES, GOLDEN_REFERENCES)
    scorers._METEOR.meteor_p.kill()  # e.g. the kernel's OOM killer
    scorers._METEOR.meteor_p.wait()
    running = java_children()  # the dead JVM is reaped: one fewer
    _, per_image = meteor(GOLDEN_CANDIDATES, GOLDEN_REFERENCES)
    assert per_image == pytest.approx(GOLDEN_METEOR_PER_IMAGE, abs=1e-6)
    assert java_children() == running + 1  # its replacement, kept for the next call
    close_meteor()
    assert java_children() == running and scorers._METEOR is None  # close_meteor stops it
