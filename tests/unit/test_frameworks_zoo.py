"""Issue 7's frameworks, each by its defining property on a tiny model."""

from __future__ import annotations

import torch

from tests.support.frameworks_toy import toy_dataset, toy_model
from trainer.frameworks import MAML, FrameworkConfig, Reptile, WeightedLoss
from trainer.frameworks.multitask import pcgrad_project, pcgrad_sum


def test_pcgrad_removes_conflicts_and_leaves_agreeing_gradients() -> None:
    g1, g2, g3 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([-1.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 2.0])
    inputs = [g1.clone(), g2.clone(), g3.clone()]
    out = pcgrad_project(inputs, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(inputs, (g1, g2, g3), strict=True))  # no aliasing
    assert float(out[0] @ g2) >= -1e-6 and float(out[1] @ g1) >= -1e-6  # conflict removed
    assert torch.allclose(out[0], torch.tensor([0.5, 0.5, 0.0]))  # divided by |g_j|², not |g_j|
    assert torch.equal(out[2], g3)  # no conflict, no projection


def test_pcgrad_in_coefficient_space_equals_the_sequential_projection() -> None:
    """The trainer's Gram-matrix PCGrad gives the same summed update as the textbook loop."""
    gen = torch.Generator().manual_seed(4)
    grads = torch.randn(7, 50, generator=gen)
    grads[3] = -grads[1] + 0.1 * grads[3]  # force strong conflicts
    expected = torch.stack(pcgrad_project(list(grads), torch.Generator().manual_seed(9))).sum(0)
    got = pcgrad_sum(grads, torch.Generator().manual_seed(9))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_reptile_with_one_domain_is_sgd_interpolation() -> None:
    ds = toy_dataset(n_domains=1)
    torch.manual_seed(0)
    model = toy_model(ds)
    alpha, beta = 0.1, 0.3
    fw = Reptile(model, ds, FrameworkConfig(inner="sgd", inner_lr=alpha, beta=beta, l2=0.0, batch_size=10_000))
    s = ds.train[0]
    batch = (torch.from_numpy(s.user), torch.from_numpy(s.item), torch.zeros(len(s), dtype=torch.long),
             torch.from_numpy(s.label))
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = fw.loss(batch)
    grads = dict(zip(start, torch.autograd.grad(loss, list(model.parameters())), strict=True))
    fw.train_domain([batch])
    for n, p in model.named_parameters():
        expected = start[n] + beta * ((start[n] - alpha * grads[n]) - start[n])
        assert torch.allclose(p.detach(), expected, atol=1e-6), n


def test_weighted_loss_learns_larger_variance_for_the_noisier_domain() -> None:
    ds = toy_dataset(n_domains=2, rows=192)
    rng = torch.Generator().manual_seed(0)
    noisy = ds.train[1]
    noisy.label[:] = (torch.rand(len(noisy), generator=rng) < 0.5).numpy()  # pure noise
    torch.manual_seed(0)
    fw = WeightedLoss(toy_model(ds), ds, FrameworkConfig(batch_size=32, inner_lr=0.02))
    for epoch in range(15):
        fw.train_epoch(epoch, rng)
    log_var = fw.log_var.detach()
    assert log_var[1] > log_var[0] + 0.1, log_var


def test_maml_adaptation_lowers_query_loss() -> None:
    ds = toy_dataset(n_domains=3, rows=128)
    torch.manual_seed(0)
    fw = MAML(toy_model(ds), ds, FrameworkConfig(batch_size=64, inner_lr=0.01, outer_lr=0.5))
    rng = torch.Generator().manual_seed(0)
    for epoch in range(3):
        fw.train_epoch(epoch, rng)
    s = ds.train[0]
    batch = (torch.from_numpy(s.user), torch.from_numpy(s.item), torch.zeros(len(s), dtype=torch.long),
             torch.from_numpy(s.label))
    support, query = tuple(t[:64] for t in batch), tuple(t[64:] for t in batch)
    theta = {n: p.detach() for n, p in fw.params.shared().items()}
    before = float(fw.loss_at(theta, query))
    after = float(fw.loss_at(fw.adapt(support, steps=3), query))
    assert after < before, (before, after)


def test_pcgrad_records_the_gradient_conflict_it_projects() -> None:
    """PCGrad's per-epoch matrix is the mean cosine of the domains' dense gradients (one per epoch, unit
    diagonal, symmetric, within [-1, 1], not all zero off the diagonal); the experiment table summarises it."""
    import numpy as np

    from trainer.data.synthetic import make_conflict
    from trainer.frameworks import build_framework, fit
    from trainer.research.report import conflict_lines

    ds = make_conflict(n_domains=4, n_users=60, n_items=40, rows_per_domain=600, conflict=1.0, seed=3)
    torch.manual_seed(0)
    result = fit(build_framework("pcgrad", toy_model(ds), ds, FrameworkConfig(epochs=2, batch_size=128, seed=0)))
    assert len(result.conflict) == result.epochs == 2
    for mat in map(np.asarray, result.conflict):
        off = mat[~np.eye(4, dtype=bool)]
        assert mat.shape == (4, 4) and np.allclose(np.diag(mat), 1.0) and np.allclose(mat, mat.T)
        assert np.all(np.abs(off) <= 1.0 + 1e-9) and np.abs(off).max() > 0.01
    lines = conflict_lines({"methods": {"pcgrad": {"per_seed": [{"conflict": result.conflict}]}}})
    assert len(lines) == 2 and lines[1].split()[0] == "pcgrad" and "negative" in lines[1]
