"""Batched beam search (captioning/decoding.py) on tiny captioners of every decoder attention: batched equals
per-image, greedy equals an argmax loop, constraints hold on real output, n-best lists are ranked, and an
exhaustive beam finds the brute-force best under each length penalty."""

import itertools

import pytest
import torch

from captioning.decoding import Generation, beam_search, penalize
from captioning.models.captioner import Captioner, DecoderSpec, EncoderSpec

PAD, BOS, EOS, UNK = 0, 1, 2, 3  # captioning.vocab.SPECIALS order
V = 11  # the specials and 7 words, 4..10
ATTENTIONS = ["none", "soft", "sca"]
SPECIALS_OFF = (PAD, BOS, UNK)


def tiny_captioner(attention: str, *, seed: int = 0) -> Captioner:
    torch.manual_seed(seed)
    decoder = DecoderSpec(attention=attention, embed_dim=8, hidden_dim=16, attn_dim=8, dropout=0.0)
    captioner = Captioner.build(V, EncoderSpec(depth=18, attention="cbam", width=8), decoder).eval()
    if attention == "sca":
        assert len(captioner.decoder.attention.names) == 2  # the default: two attended layers, recomputed per step
    output = captioner.decoder.output
    with torch.no_grad():  # a peakier output than random init gives, and <eos> about as likely as a top word,
        output.weight.mul_(4.0)  # so captions end at varied lengths and length penalties change rankings
        output.bias.mul_(4.0)
        memory = captioner.encode(tiny_images(8, seed=7))
        logits, _, _ = captioner.step(torch.full((8,), BOS), captioner.init_state(memory), memory)  # (8, V)
        output.bias[EOS] += (logits[:, 4:].quantile(0.9, dim=1) - logits[:, EOS]).mean()
    return captioner


def tiny_images(batch_size: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch_size, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def search(captioner: Captioner, images: torch.Tensor, *, max_len: int = 8, **options) -> Generation:
    return beam_search(captioner, images, bos=BOS, eos=EOS, max_len=max_len, **options)


def captions(generation: Generation) -> list[list[tuple[int, ...]]]:
    """Per image, its n-best captions as word tuples (<eos> and padding cut)."""
    return [
        [tuple(row[:length].tolist()) for row, length in zip(rows, lengths, strict=True)]
        for rows, lengths in zip(generation.nbest_tokens, generation.nbest_lengths, strict=True)
    ]


def has_repeated_trigram(words: tuple[int, ...]) -> bool:
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    return len(trigrams) != len(set(trigrams))


def teacher_forced(
    captioner: Captioner, images: torch.Tensor, generation: Generation
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Each n-best caption fed back by teacher forcing: the sum of the model's log-probabilities of its words and
    <eos> (B, n), and its attention weights by name (B, n, T, ...)."""
    b, n, steps = generation.nbest_tokens.shape
    targets = generation.nbest_tokens.reshape(b * n, steps)  # (B*n, T)
    inputs = torch.cat([torch.full((b * n, 1), BOS), targets[:, :-1]], dim=1)  # (B*n, T)
    with torch.no_grad():
        logits, weights = captioner(images, inputs)  # (B*n, T, V), each image's memory repeated n times
    logp = torch.log_softmax(logits, dim=-1).gather(2, targets[..., None])[..., 0]  # (B*n, T)
    scored = torch.arange(steps) <= generation.nbest_lengths.reshape(-1, 1)  # words and the <eos>
    return (logp * scored).sum(dim=1).view(b, n), {name: w.view(b, n, *w.shape[1:]) for name, w in weights.items()}


OPTIONS = [
    {"beam_size": 3},
    {"beam_size": 3, "length_penalty": "average", "n_best": 3},
    {"beam_size": 3, "length_penalty": "gnmt", "length_alpha": 0.7, "block_trigrams": True, "n_best": 2},
    {"beam_size": 3, "min_len": 2, "suppress": SPECIALS_OFF, "block_trigrams": True, "n_best": 3},
    {"beam_size": 1, "length_penalty": "average", "suppress": (UNK,)},
]


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_batched_search_equals_searching_each_image_alone(attention, options):
    captioner, images = tiny_captioner(attention), tiny_images(5)
    batched = search(captioner, images, **options)
    for i in range(len(images)):
        alone = search(captioner, images[i : i + 1], **options)
        steps = alone.nbest_tokens.shape[2]
        assert batched.nbest_tokens[i, :, :steps].tolist() == alone.nbest_tokens[0].tolist()
        assert (batched.nbest_tokens[i, :, steps:] == EOS).all()  # the batch ran longer: <eos> padding only
        assert batched.nbest_lengths[i].tolist() == alone.nbest_lengths[0].tolist()
        torch.testing.assert_close(batched.nbest_scores[i], alone.nbest_scores[0])
        torch.testing.assert_close(batched.nbest_log_probs[i], alone.nbest_log_probs[0])
        for name, weights in alone.attention.items():
            torch.testing.assert_close(batched.attention[name][i, :steps], weights[0])
            assert (batched.attention[name][i, steps:] == 0).all()


def argmax_loop(captioner: Captioner, images: torch.Tensor, *, max_len: int, suppress=()):
    """Greedy decoding written out: (B, T) tokens and (B,) log-probability sums."""
    memory = captioner.encode(images)
    state = captioner.init_state(memory)
    token = torch.full((images.shape[0],), BOS)
    done = torch.zeros(images.shape[0], dtype=torch.bool)
    total = torch.zeros(images.shape[0])
    out = []
    for t in range(max_len + 1):
        logits, state, _ = captioner.step(token, state, memory)
        logp = torch.log_softmax(logits, dim=-1)
        allowed = logp.clone()
        allowed[:, list(suppress)] = float("-inf")
        word = allowed.argmax(dim=-1) if t < max_len else torch.full_like(token, EOS)
        word = torch.where(done, EOS, word)
        total += torch.where(done, 0.0, logp.gather(1, word[:, None])[:, 0])
        out.append(word)
        done |= word == EOS
        token = word
        if done.all():
            break
    return torch.stack(out, dim=1), total


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("suppress", [(), SPECIALS_OFF])
def test_beam_size_one_is_an_argmax_loop(attention, suppress):
    captioner, images = tiny_captioner(attention), tiny_images(4)
    with torch.no_grad():
        tokens, total = argmax_loop(captioner, images, max_len=8, suppress=suppress)
    generation = search(captioner, images, beam_size=1, suppress=suppress)
    assert generation.tokens.tolist() == tokens.tolist()
    torch.testing.assert_close(generation.scores, total)
    torch.testing.assert_close(generation.log_probs, total)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_a_wider_beam_never_scores_below_greedy(attention):
    captioner, images = tiny_captioner(attention), tiny_images(4)
    greedy_scores = search(captioner, images, beam_size=1).scores
    assert (search(captioner, images, beam_size=4).scores >= greedy_scores - 1e-5).all()


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("beam_size", [1, 3, 5])
@pytest.mark.parametrize("length_penalty", ["none", "average", "gnmt"])
def test_a_model_that_never_ends_still_gets_max_length_captions(attention, beam_size, length_penalty):
    captioner = tiny_captioner(attention)
    with torch.no_grad():
        captioner.decoder.output.bias[EOS] = -1e9  # <eos> never wins
    generation = search(
        captioner,
        tiny_images(3),
        max_len=6,
        beam_size=beam_size,
        length_penalty=length_penalty,
        block_trigrams=True,
        min_len=2,
        n_best=beam_size,
    )
    assert generation.nbest_tokens.shape == (3, beam_size, 7)
    assert (generation.nbest_lengths == 6).all()
    assert (generation.nbest_tokens[..., -1] == EOS).all()  # ended by force after max_len words
    assert (generation.nbest_tokens[..., :-1] != EOS).all()
    assert torch.isfinite(generation.nbest_scores).all()


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_min_len_holds_back_the_end_token(attention):
    captioner, images = tiny_captioner(attention), tiny_images(3)
    with torch.no_grad():
        captioner.decoder.output.bias[EOS] += 20.0  # the model wants to end at once
    assert (search(captioner, images, beam_size=3, n_best=3).nbest_lengths[:, 0] == 0).all()
    generation = search(captioner, images, beam_size=3, n_best=3, min_len=3, length_penalty="average")
    assert (generation.nbest_lengths >= 3).all()
    assert (generation.nbest_lengths[:, 0] == 3).all()  # and no longer than it must


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("favourite", [UNK, BOS, PAD])
def test_suppressed_tokens_are_never_generated(attention, favourite):
    captioner, images = tiny_captioner(attention), tiny_images(3)
    with torch.no_grad():
        captioner.decoder.output.bias[favourite] += 20.0  # the model's favourite word
    assert (search(captioner, images, beam_size=3).tokens == favourite).any()
    for beam_size in (1, 3):
        generation = search(captioner, images, beam_size=beam_size, n_best=beam_size, suppress=SPECIALS_OFF)
        assert not any(set(c) & set(SPECIALS_OFF) for caps in captions(generation) for c in caps)
        assert torch.isfinite(generation.nbest_scores).all()


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("length_penalty", ["none", "average", "gnmt"])
def test_no_returned_caption_repeats_a_trigram(attention, length_penalty):
    captioner, images = tiny_captioner(attention), tiny_images(4)
    with torch.no_grad():
        captioner.decoder.output.bias[5] += 6.0  # a stuck model: "w w w w ..."
        captioner.decoder.output.bias[EOS] -= 6.0
    options = {"max_len": 10, "beam_size": 3, "n_best": 3, "length_penalty": length_penalty}
    assert any(has_repeated_trigram(c) for caps in captions(search(captioner, images, **options)) for c in caps)
    blocked = captions(search(captioner, images, block_trigrams=True, **options))
    assert all(not has_repeated_trigram(c) for caps in blocked for c in caps)
    assert all(max(len(c) for c in caps) >= 6 for caps in blocked)  # long enough for a repeat to be possible


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("length_penalty", ["none", "average", "gnmt"])
@pytest.mark.parametrize("block_trigrams", [False, True])
def test_n_best_lists_are_distinct_ranked_and_scored(attention, length_penalty, block_trigrams):
    captioner, images = tiny_captioner(attention), tiny_images(3)
    generation = search(
        captioner, images, beam_size=5, n_best=5, length_penalty=length_penalty, block_trigrams=block_trigrams
    )
    for caps in captions(generation):
        assert len(set(caps)) == len(caps)
    assert (generation.nbest_scores[:, :-1] >= generation.nbest_scores[:, 1:]).all()  # best first
    assert torch.isfinite(generation.nbest_scores).all()
    lengths = (generation.nbest_lengths + 1).float()  # scored tokens: the words and the <eos>
    expected = penalize(generation.nbest_log_probs, lengths, length_penalty, 0.6)
    torch.testing.assert_close(generation.nbest_scores, expected)
    log_probs, forced_weights = teacher_forced(captioner, images, generation)
    torch.testing.assert_close(generation.nbest_log_probs, log_probs)
    torch.testing.assert_close(generation.scores, generation.nbest_scores[:, 0])
    assert generation.nbest_attention.keys() == forced_weights.keys()
    for name, weights in generation.nbest_attention.items():
        assert weights.shape[:3] == generation.nbest_tokens.shape
        used = torch.arange(weights.shape[2]) <= generation.nbest_lengths[..., None]  # (B, n, T)
        torch.testing.assert_close(weights[used], forced_weights[name][used])  # each word's own map
        assert (weights[~used] == 0).all()
        if name.startswith("alpha"):
            torch.testing.assert_close(weights[used].sum(-1), torch.ones(int(used.sum())))


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("length_penalty", ["none", "average", "gnmt"])
def test_an_exhaustive_beam_finds_the_brute_force_best(attention, length_penalty):
    """With beams for every candidate (8 + 7 x 7 x 8 + ... = 400 at max_len 3 over 7 words), nothing is pruned,
    so the n-best must be the top of all 400 captions ranked by penalized score (finished beams at their own
    length, however long the search runs on)."""
    captioner, images, max_len = tiny_captioner(attention), tiny_images(2), 3
    words = range(4, V)
    every = [c for n in range(max_len + 1) for c in itertools.product(words, repeat=n)]  # 400 captions
    assert len(every) == 400
    generation = search(
        captioner,
        images,
        max_len=max_len,
        beam_size=400,
        n_best=5,
        suppress=SPECIALS_OFF,
        length_penalty=length_penalty,
    )
    tokens = torch.tensor([[*c, *[EOS] * (max_len + 1 - len(c))] for c in every])  # (400, T)
    for i in range(len(images)):
        brute = Generation(
            nbest_tokens=tokens[None],
            nbest_scores=torch.zeros(1, 400),
            nbest_log_probs=torch.zeros(1, 400),
            nbest_lengths=torch.tensor([[len(c) for c in every]]),
            nbest_attention={},
        )
        log_probs = teacher_forced(captioner, images[i : i + 1], brute)[0][0]  # (400,)
        scores = penalize(log_probs, torch.tensor([len(c) + 1.0 for c in every]), length_penalty, 0.6)
        top = scores.topk(5).indices
        assert captions(generation)[i] == [every[j] for j in top]
        torch.testing.assert_close(generation.nbest_scores[i], scores[top])


def test_fewer_possible_captions_than_beams_score_minus_infinity():
    captioner = tiny_captioner("soft")
    generation = search(captioner, tiny_images(2), max_len=1, beam_size=10, n_best=10, suppress=SPECIALS_OFF)
    assert torch.isfinite(generation.nbest_scores[:, :8]).all()  # the empty caption and 7 one-word ones
    assert torch.isneginf(generation.nbest_scores[:, 8:]).all()
    assert all(len(set(caps[:8])) == 8 for caps in captions(generation))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"beam_size": 0}, "beam_size"),
        ({"min_len": 9}, "min_len"),
        ({"beam_size": 2, "n_best": 3}, "n_best"),
        ({"length_penalty": "sqrt"}, "length_penalty"),
        ({"length_alpha": -1.0}, "length_alpha"),
        ({"suppress": (EOS,)}, "end token"),
        ({"suppress": (V,)}, "suppressed"),
    ],
)
def test_invalid_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        search(tiny_captioner("none"), tiny_images(1), **options)
