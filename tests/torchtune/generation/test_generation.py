import pytest
import torch

from torchtune.generation import generate, sample
from torchtune.models.llama2 import llama2


def _greedy_without_cache(model, tokens, max_new_tokens):
    """Reference decoding: the whole sequence through the model at every step."""
    for _ in range(max_new_tokens):
        next_token = model(tokens)[:, -1].argmax(dim=-1)  # [b]
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
    return tokens


@pytest.fixture
def tiny_model():
    model = llama2(
        vocab_size=64, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32, max_seq_len=40
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if p.dim() > 1 else 1.0))
    return model.eval()


def test_cached_greedy_equals_full_forward_greedy_real_model(stories260k):
    prompts = torch.tensor([[1, 403, 407, 261, 378], [1, 403, 407, 261, 300]])
    expected = _greedy_without_cache(stories260k, prompts, 40)
    actual = generate(stories260k, prompts, max_new_tokens=40, temperature=0)
    assert actual.shape == (2, 45)
    assert torch.equal(actual, expected)
    assert not torch.equal(actual[0], actual[1])


def test_cached_greedy_equals_full_forward_greedy_tiny_model(tiny_model):
    prompt = torch.tensor([[5, 9, 2], [7, 7, 1]])
    expected = _greedy_without_cache(tiny_model, prompt, 30)
    actual = generate(tiny_model, prompt, max_new_tokens=30, temperature=0)
    assert torch.equal(actual, expected)
    assert len(set(actual[0, 3:].tolist())) > 3  # a non-degenerate continuation


def test_generate_leaves_the_model_as_it_was(tiny_model):
    tiny_model.train()
    generate(tiny_model, torch.tensor([1, 2, 3]), max_new_tokens=4, temperature=0)
    assert not tiny_model.caches_are_enabled()
    assert tiny_model.training
    # The model still trains: a plain forward/backward works after generation.
    tiny_model(torch.tensor([[1, 2, 3]])).sum().backward()
    assert tiny_model.output.weight.grad is not None


def test_generate_reuses_caches_already_set_up(tiny_model):
    tiny_model.setup_caches(batch_size=1, dtype=torch.float32)
    first = generate(tiny_model, torch.tensor([3, 4]), max_new_tokens=10, temperature=0)
    second = generate(tiny_model, torch.tensor([3, 4]), max_new_tokens=10, temperature=0)
    assert tiny_model.caches_are_enabled()
    assert torch.equal(first, second)
    assert first.shape == (12,)


def test_stop_tokens(stories260k):
    prompt = torch.tensor([1, 403, 407, 261, 378])
    full = generate(stories260k, prompt, max_new_tokens=30, temperature=0)
    continuation = full[5:].tolist()
    stop = continuation[6]
    first_stop = continuation.index(stop)
    stopped = generate(stories260k, prompt, max_new_tokens=30, temperature=0, stop_tokens=[stop])
    assert stopped.tolist() == full[: 5 + first_stop + 1].tolist()


def test_stop_tokens_pad_finished_rows(stories260k):
    prompts = torch.tensor([[1, 403, 407, 261, 378], [1, 403, 407, 261, 300]])
    full = generate(stories260k, prompts, max_new_tokens=20, temperature=0)
    stop = full[0, 5 + 2].item()  # row 0 stops at its 3rd new token
    assert stop not in full[1, 5:].tolist()
    out = generate(
        stories260k, prompts, max_new_tokens=20, temperature=0, stop_tokens=[stop], pad_id=0
    )
    assert out.shape == (2, 25)  # row 1 never stops, so all 20 steps run
    assert out[0, :8].tolist() == full[0, :8].tolist()
    assert out[0, 8:].tolist() == [0] * 17
    assert torch.equal(out[1], full[1])


def test_sampling_is_repeatable_with_a_generator(tiny_model):
    prompt = torch.tensor([[5, 9, 2]])
    def run(seed, temperature=1.0, top_k=10):
        rng = torch.Generator().manual_seed(seed)
        return generate(
            tiny_model, prompt, max_new_tokens=20, temperature=temperature, top_k=top_k, rng=rng
        )

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    greedy = generate(tiny_model, prompt, max_new_tokens=20, temperature=0)
    top1 = run(3, temperature=0.7, top_k=1)
    assert torch.equal(top1, greedy)


def test_sample_greedy_and_shapes():
    logits = torch.tensor([[0.1, 3.0, 0.2], [5.0, -1.0, 4.9]])
    assert sample(logits, temperature=0).tolist() == [1, 0]
    rng = torch.Generator().manual_seed(0)
    assert sample(logits[None], temperature=0.5, rng=rng).shape == (1, 2)


def test_sample_top_k_and_distribution():
    logits = torch.log(torch.tensor([0.1, 0.5, 0.15, 0.25]))
    gen = torch.Generator().manual_seed(0)
    draws = sample(logits.expand(4000, 4), temperature=1.0, top_k=2, rng=gen)
    counts = torch.bincount(draws, minlength=4).float() / 4000
    # Only the two best tokens survive, renormalised to 0.5/0.75 and 0.25/0.75.
    assert counts[0] == 0 and counts[2] == 0
    assert counts[1].item() == pytest.approx(2 / 3, abs=0.03)
    assert counts[3].item() == pytest.approx(1 / 3, abs=0.03)
    # Temperature flattens: at T=4 the 0.1 token gets well over its 10% share.
    flat = sample(logits.expand(4000, 4), temperature=4.0, rng=gen)
    assert (flat == 0).float().mean().item() > 0.17


def test_bad_arguments(tiny_model):
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(tiny_model, torch.tensor([], dtype=torch.long), max_new_tokens=3)
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len 40"):
        generate(tiny_model, torch.tensor([1, 2]), max_new_tokens=39)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        sample(torch.zeros(1, 4), temperature=-1.0)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        sample(torch.zeros(1, 4), top_k=0)
    assert not tiny_model.caches_are_enabled()
    assert generate(tiny_model, torch.tensor([1, 2]), max_new_tokens=0).tolist() == [1, 2]
