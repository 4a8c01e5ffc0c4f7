"""Compact deltas: float16 θi is held as float16 by the feed composer and scores within the documented tolerance
of float32 θi (docs/serving.md, "Compact deltas")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contracts.artifacts import load_version
from serving.composition import DELTA_SUFFIX, FeedComposer, SessionComposer
from serving.scoring import sigmoid
from tests.support.tiny_model import TinyModel, cached_tiny
from trainer.export import export_version

# Click probabilities served from float16 deltas stay this close to float32's (absolute). float16 keeps 11
# significant bits, so each θi value moves by at most 2^-11 of itself; ml-latest-small's served holdout scores
# moved by at most 3.5e-5 (bench/delta_precision.py).
FLOAT16_SCORE_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyModel, Path]:
    tiny = cached_tiny("mlp", steps=8, delta_steps=4, n_domains=4)
    root = tmp_path_factory.mktemp("compact")
    export_version(tiny.params, tiny.domains, root, "f32", delta_dtype="float32")
    export_version(tiny.params, tiny.domains, root, "f16", delta_dtype="float16")
    return tiny, root


def _rows(seed: int, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 16), dtype=np.float32), rng.standard_normal((n, 16), dtype=np.float32)


def test_float16_deltas_score_within_the_tolerance_of_float32(versions) -> None:
    tiny, root = versions
    f32, f16 = FeedComposer(load_version(root / "f32")), FeedComposer(load_version(root / "f16"))
    assert (f32.delta_dtype, f16.delta_dtype) == ("float32", "float16")
    for k, domain in enumerate(tiny.domains):
        user, items = _rows(k)
        a, b = sigmoid(f32.logits(domain, user, items)), sigmoid(f16.logits(domain, user, items))
        assert np.abs(a - b).max() <= FLOAT16_SCORE_TOLERANCE, domain
        assert not np.array_equal(a, b) or domain not in f16.version.manifest.deltas  # really rounded
    # batched (grouped graph) scores equal one-by-one scores bit for bit with float16 deltas too
    runs = [(d, *_rows(10 + k, 5 + k)) for k, d in enumerate([*tiny.domains, "no-delta"])]
    for one, batched in zip([f16.logits(*r) for r in runs], f16.logits_many(runs), strict=True):
        assert np.array_equal(one, batched)


def test_float16_deltas_are_held_as_float16_at_half_the_bytes(versions) -> None:
    tiny, root = versions
    held = {}
    for name in ("f32", "f16"):
        composer = FeedComposer(load_version(root / name))
        shared_zeros = {id(z) for z in composer._zeros.values()}
        for domain in tiny.domains:
            composer.warm(domain)
        entry = composer._entry(next(iter(tiny.domains)))
        assert all(a.dtype.name == composer.delta_dtype for a in entry.values())
        assert all(n.endswith(DELTA_SUFFIX) for n in entry)
        held[name] = sum(a.nbytes for a in entry.values() if id(a) not in shared_zeros)
    assert held["f16"] * 2 == held["f32"] > 0


def test_feed_with_float32_deltas_scores_as_composing_in_numpy(versions) -> None:
    """The graph's Cast + Add computes θS + θi as the numpy composition did (the session strategy still does)."""
    tiny, root = versions
    loaded = load_version(root / "f32")
    feed, session = FeedComposer(loaded), SessionComposer(loaded)
    for k, domain in enumerate(tiny.domains):
        user, items = _rows(20 + k)
        np.testing.assert_allclose(feed.logits(domain, user, items), session.logits(domain, user, items),
                                   rtol=1e-5, atol=1e-6)
