"""``trainer.precision``: DN's pass under bfloat16 autocast where the CPU has it (``auto``), float32 on request;
weights, optimizer state and everything after DN stay float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from contracts.errors import ConfigError
from tests.unit.test_trainer_scale import DOMAINS, _produce, _trainer
from trainer.frameworks import FrameworkConfig, precision


@pytest.mark.parametrize(("avx512_bf16", "amx", "expected"),
                         [(True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")])
def test_auto_means_bf16_only_where_the_cpu_has_it_in_hardware(monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool,
                                                               amx: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)  # not asked
    assert precision.resolve("auto") == expected
    assert precision.resolve("fp32") == "fp32" and precision.resolve("bf16") == "bf16"


def test_the_forward_runs_in_bf16_and_nothing_else_is_asked_for() -> None:
    layer = torch.nn.Linear(4, 2)
    x = torch.randn(3, 4)
    with precision.autocast("bf16"):
        assert layer(x).dtype == torch.bfloat16
    with precision.autocast("fp32"):
        assert layer(x).dtype == torch.float32
    with pytest.raises(ConfigError, match="precision"):
        FrameworkConfig(precision="auto")


def _round(tmp: Path, setting: str) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """One round of 600 clicks (an item's parity decides its click: learnable); the weights and θS's scores."""
    torch.manual_seed(0)
    trainer, url = _trainer(tmp, round_events=600, precision=setting)
    _produce(url, 0, 600)
    reports = trainer.run(max_rounds=1, idle_exit_s=1.0)
    assert reports and reports[0].valid == 600
    state = trainer.state
    assert state is not None and trainer.precision == setting
    weights = {n: p.detach().clone() for n, p in state.model.named_parameters()}
    slots = np.array([state.slots()[DOMAINS[k % 3]] for k in range(600)])
    users = state.users.rows([f"u{k}" for k in range(600)], add=False)
    items = state.items.rows([f"i{k % 40}" for k in range(600)], add=False)
    with torch.no_grad():
        probs = state.predict_rows(slots, users, items)[0]
    trainer.close()
    return weights, probs


def test_a_bf16_round_learns_what_a_fp32_round_learns_in_float32_weights(tmp_path: Path) -> None:
    half, p_half = _round(tmp_path / "bf16", "bf16")
    full, p_full = _round(tmp_path / "fp32", "fp32")
    assert all(t.dtype == torch.float32 for t in half.values())
    assert any(not torch.equal(half[n], full[n]) for n in full)  # the matmuls really ran in bfloat16
    labels = np.arange(600) % 2

    def log_loss(p: np.ndarray) -> float:
        p = np.clip(p, 1e-7, 1 - 1e-7)
        return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))

    assert log_loss(p_full) < 0.69  # the fp32 round learned something (log 2 = 0.693 knows nothing)
    assert abs(log_loss(p_half) - log_loss(p_full)) < 0.01
    assert float(np.corrcoef(p_half, p_full)[0, 1]) > 0.97
