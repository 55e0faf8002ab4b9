"""The sliced head + cross-entropy equals the plain one: loss and gradients, tied or not, any slice size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptx.loss import chunk_rows, linear_cross_entropy


def inputs(tokens=(3, 7), d=16, vocab=97, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*tokens, d, generator=g, requires_grad=True)
    weight = (torch.randn(vocab, d, generator=g) / 4).requires_grad_()
    targets = torch.randint(0, vocab, tokens, generator=g)
    return hidden, weight, targets


def plain(hidden, weight, targets, reduction="mean"):
    logits = hidden @ weight.t()
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), reduction=reduction)


@pytest.mark.parametrize("rows", [1, 4, 21, 1000])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_and_gradients_equal_the_plain_computation(rows, reduction):
    h1, w1, y = inputs()
    h2, w2 = h1.detach().clone().requires_grad_(), w1.detach().clone().requires_grad_()
    ours, theirs = linear_cross_entropy(h1, w1, y, reduction, rows), plain(h2, w2, y, reduction)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    (2.5 * ours).backward()
    (2.5 * theirs).backward()
    torch.testing.assert_close(h1.grad, h2.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-5, atol=1e-6)  # sums over 21 slices: float32 order


def test_per_token_losses_for_evaluation():
    h, w, y = inputs()
    with torch.no_grad():
        ours = linear_cross_entropy(h, w, y, "none", rows=5)
        theirs = plain(h, w, y, "none").view(y.shape)
    assert ours.shape == y.shape and ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="no_grad"):
        linear_cross_entropy(h, w, y, "none")


def test_a_tied_matrix_gets_both_gradients():
    """With the head tied to the embedding, the matrix's gradient sums the head's and the embedding's."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 8)
    idx, y = torch.randint(0, 50, (2, 6)), torch.randint(0, 50, (2, 6))
    linear_cross_entropy(emb(idx), emb.weight, y).backward()
    ours = emb.weight.grad.clone()
    emb.weight.grad = None
    plain(emb(idx), emb.weight, y).backward()
    torch.testing.assert_close(ours, emb.weight.grad, rtol=1e-5, atol=1e-7)


def test_same_inputs_same_bits():
    runs = []
    for _ in range(2):
        h, w, y = inputs(seed=3)
        loss = linear_cross_entropy(h, w, y, rows=4)
        loss.backward()
        runs.append((loss, h.grad, w.grad))
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_slices_of_gpt2s_vocabulary_stay_near_64_mib():
    assert chunk_rows(50257) == 333 and chunk_rows(65) == (1 << 24) // 65 and chunk_rows(1 << 30) == 1


@pytest.mark.parametrize("tied", [False, True])
def test_the_models_loss_equals_cross_entropy_of_its_logits(tied):
    from gptx.config import ModelConfig
    from gptx.model import build_model

    model = build_model(ModelConfig(vocab_size=101, context_length=8, d_model=16, n_heads=2, n_layers=1,
                                    dropout=0.0, weight_tying=tied), 1)
    idx, y = torch.randint(0, 101, (3, 8)), torch.randint(0, 101, (3, 8))
    loss = model(idx, y)
    loss.backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    theirs = F.cross_entropy(model(idx).flatten(0, 1), y.flatten())
    theirs.backward()
    torch.testing.assert_close(loss, theirs, rtol=1e-6, atol=1e-6)
    for name, param in model.named_parameters():
        torch.testing.assert_close(ours[name], param.grad, rtol=1e-5, atol=1e-6, msg=name)
    with torch.no_grad():
        per_token = model(idx, y, reduction="none")
    torch.testing.assert_close(per_token.mean(), theirs, rtol=1e-6, atol=1e-6)
