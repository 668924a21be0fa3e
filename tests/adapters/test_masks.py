import torch

from rankwise.adapters.masks import hard_keep, keep_probabilities, square_masks


def naive_rank_distribution(s: float, rank_min: int, rank_max: int, alpha: float) -> dict[int, float]:
    logits = {r: -alpha * torch.log1p(torch.tensor((s - r) ** 2, dtype=torch.float64)) for r in range(rank_min, rank_max + 1)}
    z = torch.logsumexp(torch.stack(list(logits.values())), 0)
    return {r: float(torch.exp(v - z)) for r, v in logits.items()}


def test_loraxs_mask_equals_naive_sum_of_square_indicators():
    torch.manual_seed(0)
    rank_min, rank_max = 3, 12
    s = torch.tensor([3.0, 5.4, 8.9, 12.0, 7.25], dtype=torch.float64)
    for alpha in (0.1, 1.0, 5.0):
        masks = square_masks(keep_probabilities(s, rank_min, rank_max, alpha))
        for i, si in enumerate(s.tolist()):
            p = naive_rank_distribution(si, rank_min, rank_max, alpha)
            naive = torch.zeros(rank_max, rank_max, dtype=torch.float64)
            for r, pr in p.items():
                indicator = torch.zeros(rank_max, rank_max, dtype=torch.float64)
                indicator[:r, :r] = 1
                naive += pr * indicator
            assert torch.allclose(masks[i], naive, atol=1e-6), (alpha, si)


def test_lora_mask_equals_naive_sum_of_truncated_products():
    torch.manual_seed(1)
    rank_min, rank_max, d_in, d_out = 2, 8, 7, 5
    a, b = torch.randn(rank_max, d_in, dtype=torch.float64), torch.randn(d_out, rank_max, dtype=torch.float64)
    s = torch.tensor([2.3, 6.6], dtype=torch.float64)
    keep = keep_probabilities(s, rank_min, rank_max, alpha=2.0)
    for i, si in enumerate(s.tolist()):
        vectorised = b @ torch.diag(keep[i]) @ a
        naive = sum(pr * (b[:, :r] @ a[:r]) for r, pr in naive_rank_distribution(si, rank_min, rank_max, 2.0).items())
        assert torch.allclose(vectorised, naive, atol=1e-6)


def test_keep_probabilities_are_one_below_rank_min_and_decreasing():
    keep = keep_probabilities(torch.tensor([4.5, 9.0]), 3, 10, alpha=1.0)
    assert keep.shape == (2, 10)
    assert torch.all(keep[:, :3] == 1)
    assert torch.all(keep[:, 1:] <= keep[:, :-1] + 1e-7)


def test_sharp_alpha_approaches_hard_mask():
    keep = keep_probabilities(torch.tensor([6.0]), 2, 10, alpha=200.0)
    assert torch.allclose(keep, hard_keep([6], 10), atol=1e-6)


def test_hard_keep_and_gradient_through_soft_mask():
    assert hard_keep([2, 4], 5).tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]]
    s = torch.tensor([5.5], requires_grad=True)
    keep_probabilities(s, 2, 9, alpha=1.0).sum().backward()
    assert s.grad is not None and s.grad.abs().item() > 0  # more rank → more kept mass


def test_gumbel_noise_only_when_tau_positive():
    s = torch.tensor([5.0, 7.0])
    clean = keep_probabilities(s, 2, 9, 1.0)
    gen = torch.Generator().manual_seed(0)
    noisy = keep_probabilities(s, 2, 9, 1.0, tau=1.0, generator=gen)
    assert torch.equal(keep_probabilities(s, 2, 9, 1.0, tau=0.0), clean)
    assert not torch.allclose(noisy, clean)
