"""The model zoo against the contracts others rely on: mixed-domain batches, the domain-indexed
tensors that export slices, onboarding by ``grow_domains``, θi = 0, and ONNX export per domain.

Tiny sizes and one table of cases over every registered model.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from contracts.errors import ConfigError
from trainer.models import MODELS, CTRModel, ModelConfig, build_model
from trainer.models.partitioned_norm import PartitionedNorm
from trainer.params import DomainParameters

N_USERS, N_ITEMS, N_DOMAINS = 40, 50, 3
NAMES = sorted(MODELS)
EXPECTED = {"mlp", "wdl", "deepfm", "shared_bottom", "mmoe", "star", "ple", "neurfm", "autoint"}
TOL = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: a second intra-op thread only adds contention (50x slower on a loaded 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(name: str, dropout: float = 0.0, seed: int = 0, **overrides: object) -> CTRModel:
    torch.manual_seed(seed)
    fields: dict = {"n_users": N_USERS, "n_items": N_ITEMS, "n_domains": N_DOMAINS, "emb_dim": 8,
                    "hidden": (16, 8), "dropout": dropout, **overrides}
    return build_model(name, ModelConfig(**fields))


@torch.no_grad()
def perturb(model: nn.Module, seed: int = 1) -> None:
    """Make every row of every tensor different (fresh STAR/PN rows start identical)."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(0.3 * torch.randn(p.shape, generator=gen))
    for name, b in model.named_buffers():
        if name.endswith("running_var"):
            b.copy_(0.5 + torch.rand(b.shape, generator=gen))
        elif b.is_floating_point():
            b.add_(0.3 * torch.randn(b.shape, generator=gen))


def batch(n: int, n_domains: int = N_DOMAINS, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A shuffled batch where every domain appears at least n // n_domains times."""
    gen = torch.Generator().manual_seed(seed)
    user = torch.randint(0, N_USERS, (n,), generator=gen)
    item = torch.randint(0, N_ITEMS, (n,), generator=gen)
    domain = (torch.arange(n) % n_domains)[torch.randperm(n, generator=gen)]
    return user, item, domain


def labels(user: torch.Tensor, item: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
    """A rule that needs user, item and domain: agreement of user and item halves, flipped in domain 1."""
    agree = (user < N_USERS // 2) == (item < N_ITEMS // 2)
    return (agree ^ (domain == 1)).float()


def test_registry_holds_the_zoo() -> None:
    assert set(MODELS) >= EXPECTED
    with pytest.raises(ConfigError, match="unknown model"):
        make("nope")


@pytest.mark.parametrize("name", ["shared_bottom", "mmoe", "star", "ple", "autoint"])
def test_unknown_knob_is_an_error(name: str) -> None:
    with pytest.raises(ConfigError, match="unknown model knob"):
        make(name, extra={"n_expertz": 3})


@pytest.mark.parametrize("name", NAMES)
def test_domain_indexed_tensors_have_the_domain_first(name: str) -> None:
    model = make(name)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    assert "domain_embedding.weight" in model.domain_indexed
    for n in model.domain_indexed:
        assert n in tensors, n
        assert tensors[n].shape[0] == N_DOMAINS, n
    slices = model.domain_slice(2)
    assert set(slices) == set(model.domain_indexed)
    assert all(t.shape[0] == 1 for t in slices.values())


@pytest.mark.parametrize("name", NAMES)
def test_mixed_batch_trains_and_routes_gradients_per_domain(name: str) -> None:
    model = make(name, dropout=0.1)
    # Gradient routing: a batch without domain 2 must leave every domain-2 row untouched.
    user, item, domain = batch(60, n_domains=2)
    loss = nn.functional.binary_cross_entropy_with_logits(model(user, item, domain), labels(user, item, domain))
    loss.backward()
    params = dict(model.named_parameters())
    for n in model.domain_indexed:
        if n in params:
            grad = params[n].grad
            assert grad is not None, n
            assert grad[2].abs().sum() == 0, n
            assert grad[0].abs().sum() > 0 and grad[1].abs().sum() > 0, n
    model.zero_grad()

    user, item, domain = batch(240)
    y = labels(user, item, domain)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            out = nn.functional.binary_cross_entropy_with_logits(model(user, item, domain), y).item()
        model.train()
        return out

    before = eval_loss()
    for _ in range(60):
        opt.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(user, item, domain), y).backward()
        opt.step()
    after = eval_loss()
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize("name", NAMES)
def test_one_domain_row_scores_like_the_full_model(name: str) -> None:
    """Export's contract: rows d of the domain-indexed tensors + domain 0 == the full model on d."""
    model = make(name)
    perturb(model)
    model.eval()
    user, item, _ = batch(24)
    zeros = torch.zeros_like(user)
    with torch.no_grad():
        outs = []
        for d in range(N_DOMAINS):
            full = model(user, item, torch.full_like(user, d))
            sliced = functional_call(model, model.domain_slice(d), (user, item, zeros))
            torch.testing.assert_close(sliced, full, **TOL)
            outs.append(full)
    assert not torch.allclose(outs[0], outs[1]), "domains must score differently"


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("name", NAMES)
def test_mixed_batch_equals_per_domain_batches(name: str, mode: str) -> None:
    model = make(name)  # dropout 0: train mode differs from eval only through batch statistics
    perturb(model)
    model.train(mode == "train")
    user, item, domain = batch(45)
    with torch.no_grad():
        mixed = model(user, item, domain)
        apart = torch.empty_like(mixed)
        for d in range(N_DOMAINS):
            rows = (domain == d).nonzero(as_tuple=True)[0]
            apart[rows] = model(user[rows], item[rows], domain[rows])
    torch.testing.assert_close(mixed, apart, **TOL)


@pytest.mark.parametrize("name", NAMES)
def test_grow_domains_keeps_existing_domains(name: str) -> None:
    model = make(name)
    perturb(model)
    model.eval()
    user, item, domain = batch(30)
    with torch.no_grad():
        before = model(user, item, domain)
    old = {n: model.domain_tensor(n).detach().clone() for n in model.domain_indexed}
    params_before = {id(p) for p in model.parameters()}

    model.grow_domains(2)

    assert model.config.n_domains == N_DOMAINS + 2
    assert {id(p) for p in model.parameters()} == params_before, "parameters keep their identity"
    params = dict(model.named_parameters())
    for n, t in old.items():
        grown = model.domain_tensor(n)
        assert grown.shape == (N_DOMAINS + 2, *t.shape[1:]), n
        assert torch.equal(grown[:N_DOMAINS], t), n
        if n in params:
            torch.testing.assert_close(grown[N_DOMAINS:], t.mean(0, keepdim=True).expand(2, *t.shape[1:]))
    with torch.no_grad():
        torch.testing.assert_close(model(user, item, domain), before, **TOL)
        new = model(user, item, torch.full_like(user, N_DOMAINS + 1))
    assert torch.isfinite(new).all()

    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    new_domain = torch.where(domain == 0, N_DOMAINS + 1, domain)
    loss = nn.functional.binary_cross_entropy_with_logits(model(user, item, new_domain), labels(user, item, domain))
    loss.backward()
    opt.step()
    with pytest.raises(ConfigError):
        model.grow_domains(-1)


def test_grow_domains_gives_new_domains_pooled_norm_statistics() -> None:
    norm = make("star").norm
    perturb(norm)
    mean, var = norm.running_mean.clone(), norm.running_var.clone()
    make_model = make("star")
    make_model.norm.load_state_dict(norm.state_dict())
    make_model.grow_domains(1)
    grown = make_model.norm
    torch.testing.assert_close(grown.running_mean[-1], mean.mean(0))
    torch.testing.assert_close(grown.running_var[-1], var.mean(0) + mean.var(0, unbiased=False))


@pytest.mark.parametrize("name", NAMES)
def test_zero_deltas_score_like_the_plain_model(name: str) -> None:
    model = make(name)
    perturb(model)
    model.eval()
    params = DomainParameters(model)
    for d in range(N_DOMAINS):
        params.delta(d)  # zeros: the Θi = θS + θi path is taken, not the plain-model shortcut
    user, item, domain = batch(36)
    with torch.no_grad():
        torch.testing.assert_close(params.forward_grouped(user, item, domain), model(user, item, domain), **TOL)


def test_partitioned_norm_uses_each_domains_batch_statistics() -> None:
    torch.manual_seed(0)
    norm = PartitionedNorm(n_domains=3, dim=4, momentum=0.1, eps=1e-5, min_count=2)
    perturb(norm)
    norm.running_mean.zero_()
    norm.running_var.fill_(1.0)
    x = torch.randn(12, 4) * 3 + 1
    domain = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 2])  # domain 2 has one sample
    out = norm(x, domain)
    for d in (0, 1):
        xd = x[domain == d]
        expected = (xd - xd.mean(0)) / torch.sqrt(xd.var(0, unbiased=False) + 1e-5)
        expected = expected * norm.weight * norm.domain_weight[d] + norm.bias + norm.domain_bias[d]
        torch.testing.assert_close(out[domain == d], expected)
        torch.testing.assert_close(norm.running_mean[d], 0.1 * xd.mean(0))
        torch.testing.assert_close(norm.running_var[d], 0.9 + 0.1 * xd.var(0, unbiased=True))
    # The lone domain-2 sample is normalized with its running statistics, which it does not update.
    single = x[-1] / torch.sqrt(torch.tensor(1.0 + 1e-5)) * norm.weight * norm.domain_weight[2]
    torch.testing.assert_close(out[-1], single + norm.bias + norm.domain_bias[2])
    assert torch.equal(norm.running_mean[2], torch.zeros(4))
    norm.eval()
    stats = norm.running_mean.clone()
    torch.testing.assert_close(norm(x, domain), norm(x, domain), rtol=0, atol=0)
    assert torch.equal(norm.running_mean, stats), "evaluation must not touch the statistics"


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_user_item_widths(name: str) -> None:
    model = make(name, user_dim=6, item_dim=10, freeze_user_item=True)
    user, item, domain = batch(30)
    model(user, item, domain).sum().backward()
    assert model.user_embedding.weight.grad is None


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name: str, mode: str) -> None:
    model = make(name).train(mode == "train")
    empty = torch.zeros(0, dtype=torch.long)
    assert model(empty, empty, empty).shape == (0,)


@pytest.mark.parametrize("name", ["mmoe", "ple", "autoint", "star"])
def test_config_survives_json_with_knobs(name: str) -> None:
    extra = {"mmoe": {"n_experts": 3, "expert_hidden": (12,)}, "ple": {"expert_hidden": (12, 10)},
             "autoint": {"attn_layers": 1, "attn_heads": 2}, "star": {"aux_hidden": (4,)}}[name]
    model = make(name, extra=extra)
    rebuilt = build_model(name, ModelConfig.from_json(model.config.to_json()))
    shapes = {n: p.shape for n, p in model.state_dict().items()}
    assert {n: p.shape for n, p in rebuilt.state_dict().items()} == shapes


def one_domain_copy(model: CTRModel, d: int) -> CTRModel:
    """The model with every domain-indexed tensor cut to row d: what export builds for one domain."""
    single = copy.deepcopy(model)
    for name, row in model.domain_slice(d).items():
        module_name, _, attr = name.rpartition(".")
        module = single.get_submodule(module_name)
        value = row.detach().clone()
        setattr(module, attr, nn.Parameter(value) if isinstance(getattr(module, attr), nn.Parameter) else value)
    return single


class FixedDomain(nn.Module):
    """``score`` for one domain from user/item vectors: the graph serving runs."""

    def __init__(self, model: CTRModel, domain: int) -> None:
        super().__init__()
        self.model, self.domain = model, domain

    def forward(self, user_emb: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
        domain = torch.full((user_emb.shape[0],), self.domain, dtype=torch.long)
        return self.model.score(user_emb, item_emb, domain)


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_for_a_fixed_domain(name: str, tmp_path: Path) -> None:
    """Sliced tables + domain 0, and full tables + a constant domain: both export and match torch."""
    import onnxruntime as ort

    model = make(name)
    perturb(model)
    model.eval()
    d = 2
    cfg = model.config
    u_in, i_in = torch.randn(5, cfg.udim), torch.randn(5, cfg.idim)
    u_run, i_run = torch.randn(9, cfg.udim), torch.randn(9, cfg.idim)  # another batch size than traced
    with torch.no_grad():
        expected = model.score(u_run, i_run, torch.full((9,), d)).numpy()
    for kind, head in (("sliced", FixedDomain(one_domain_copy(model, d), 0)), ("full", FixedDomain(model, d))):
        path = tmp_path / f"{kind}.onnx"
        head.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript exporter keeps this test fast; the dynamo exporter was checked by hand.
            torch.onnx.export(head, (u_in, i_in), str(path), dynamo=False, input_names=["user", "item"],
                              output_names=["logit"],
                              dynamic_axes={"user": {0: "n"}, "item": {0: "n"}, "logit": {0: "n"}})
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"user": u_run.numpy(), "item": i_run.numpy()})[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=kind)


@pytest.mark.parametrize("name", ["mlp", "star", "ple"])
def test_row_deltas_score_like_full_size_deltas_and_do_not_grow_with_domains(name: str) -> None:
    """θi of a domain-indexed tensor is one row: same scores as the full-size delta (domain d only reads
    row d), a size independent of the number of domains, still valid after onboarding, and an older
    checkpoint's full-size delta loads as its row."""
    model = make(name)
    perturb(model)
    model.eval()
    params = DomainParameters(model)
    assert params.row_names and params.row_names <= set(model.domain_indexed)
    gen = torch.Generator().manual_seed(3)
    full = {n: 0.1 * torch.randn(p.shape, generator=gen) for n, p in params.shared_specific().items()}
    params.set_delta(1, full)  # the old representation: the row is taken
    for n in params.row_names:
        assert params.delta(1)[n].shape == (1, *full[n].shape[1:])
        torch.testing.assert_close(params.delta(1)[n], full[n][1:2])
    user, item, _ = batch(24)
    dom = torch.full_like(user, 1)
    reference = {n: p.detach() + full[n] for n, p in params.shared_specific().items()}
    with torch.no_grad():
        expected = functional_call(model, reference, (user, item, dom), strict=False)
        torch.testing.assert_close(params.forward_domain(1, user, item, dom), expected, **TOL)
    size = sum(t.numel() for t in params.delta(1).values())
    model.grow_domains(5)
    with torch.no_grad():
        torch.testing.assert_close(params.forward_domain(1, user, item, dom), expected, **TOL)
    assert sum(t.numel() for t in params.delta(7).values()) == size  # a new domain's θi: same size


def test_composed_row_delta_is_differentiable_in_both_parts() -> None:
    model = make("mlp")
    params = DomainParameters(model)
    delta = {n: t.clone().requires_grad_(True) for n, t in params.delta(2).items()}
    composed = params.composed(2, delta)
    composed["domain_embedding.weight"].sum().backward()
    assert torch.equal(delta["domain_embedding.weight"].grad, torch.ones_like(delta["domain_embedding.weight"]))
    assert torch.equal(model.domain_embedding.weight.grad, torch.ones_like(model.domain_embedding.weight))


# θi under ``specific="head"``: the layers that make the logit. None: the model declares no head (its towers are
# per-domain rows of θS already) and keeps the paper's scope.
EXPECTED_HEAD: dict[str, list[str] | None] = {
    "mlp": ["out.weight", "out.bias"], "autoint": ["out.weight", "out.bias"],
    "wdl": ["wide.weight", "wide.bias", "deep_out.weight", "deep_out.bias"],
    "deepfm": ["linear.weight", "linear.bias", "dnn_out.weight", "dnn_out.bias"],
    "neurfm": ["linear.weight", "linear.bias", "out.weight", "out.bias"],
    "star": ["out.weight", "out.bias", "out.domain_weight", "out.domain_bias", "aux_out.weight", "aux_out.bias"],
    "shared_bottom": None, "mmoe": None, "ple": None,
}


@pytest.mark.parametrize("name", NAMES)
def test_head_is_the_layers_that_make_the_logit(name: str) -> None:
    """``specific="head"`` (the continual trainer's θi scope) names the output layers of every zoo model, each
    with a dense part (DR's steps on other domains move only dense θi), and a change there moves the logits of
    every domain."""
    model = make(name)
    perturb(model)
    model.eval()
    head = DomainParameters(model, "head").specific_names
    every = DomainParameters(model, "default").specific_names
    assert name in EXPECTED_HEAD, f"declare {name}'s HEAD and list it here"
    want = EXPECTED_HEAD[name]
    if want is None:
        assert head == every
        return
    assert head == want
    assert set(head) - set(model.domain_indexed), name  # a dense part
    user, item, domain = batch(30)
    before = model(user, item, domain)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in head:
            params[n].add_(0.5)
    after = model(user, item, domain)
    for d in range(N_DOMAINS):
        assert not torch.allclose(before[domain == d], after[domain == d]), (name, d)


def test_head_falls_back_to_every_dense_parameter_when_a_model_declares_none() -> None:
    """A user's model without ``HEAD`` keeps the paper's θi (every parameter but the tables) under "head"."""

    class Plain(CTRModel):
        name = "plain_test"

        def __init__(self, config: ModelConfig) -> None:
            super().__init__(config)
            self.out = nn.Linear(self.in_dim, 1)

        def score(self, user_emb: torch.Tensor, item_emb: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
            return self.out(torch.cat([user_emb, item_emb, self.domain_embedding(domain)], -1)).squeeze(-1)

    model = Plain(ModelConfig(n_users=4, n_items=4, n_domains=2, emb_dim=4))
    assert DomainParameters(model, "head").specific_names == DomainParameters(model, None).specific_names
