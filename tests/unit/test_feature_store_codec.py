"""Key layout, names and the vector wire format."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from contracts.errors import ConfigError, DataError
from contracts.settings import FeatureStoreSettings
from feature_store import open_store
from feature_store.codec import check_vectors, decode, decode_into, encode, encode_rows
from feature_store.keys import KeyLayout, check_name


def test_key_layout() -> None:
    k = KeyLayout("mamdr")
    assert k.current == "mamdr:current"
    assert k.versions == "mamdr:versions"
    assert k.floor_prefix("20260101", "user") + "42" == "mamdr:t:20260101:u:42"
    assert k.writes_prefix("20260101", "item") + "a:b" == "mamdr:t:20260101:hi:a:b"  # ids may contain ':'
    assert k.meta("v1") == "mamdr:v:v1:meta" and k.live("v1") == "mamdr:v:v1:live"
    assert k.version_glob("v1") == "mamdr:v:v1:*"  # cannot match v10 (the ':' follows the name)
    with pytest.raises(ConfigError, match="NAMESPACE"):
        KeyLayout("a*b")


@pytest.mark.parametrize("name", ["v1", "2026-11-27T10.00_x", "a" * 64])
def test_good_names(name: str) -> None:
    assert check_name(name, "version") == name


@pytest.mark.parametrize("name", ["", "-v", "v 1", "v*", "v:1", "a" * 65, "v[1]"])
def test_bad_names(name: str) -> None:
    with pytest.raises(DataError):
        check_name(name, "version")


def test_float32_round_trip_is_exact_little_endian() -> None:
    vec = np.random.default_rng(0).standard_normal(128).astype(np.float32)
    raw = encode(vec, 128)
    assert len(raw) == 512
    assert raw[:4] == vec[:1].astype("<f4").tobytes()
    np.testing.assert_array_equal(decode(raw, 128), vec)


def test_float16_round_trip() -> None:
    vec = np.array([0.5, -1.25, 65504.0, 1e-4], dtype=np.float32)
    raw = encode(vec, 4, "float16")
    assert len(raw) == 8
    out = decode(raw, 4, "float16")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, vec, rtol=1e-3)


def test_wrong_dim_nan_and_length_refused() -> None:
    with pytest.raises(DataError, match="dimension 3"):
        encode(np.zeros(3), 4)
    with pytest.raises(DataError, match="NaN"):
        encode(np.array([0.0, np.nan]), 2)
    with pytest.raises(DataError, match="float16"):
        encode(np.array([1e5, 0.0]), 2, "float16")
    with pytest.raises(DataError, match="corrupt"):
        decode(b"\x00" * 7, 2)
    with pytest.raises(DataError, match="2-D"):
        check_vectors(["a"], np.zeros(4), 4, "float32", "x")
    with pytest.raises(ConfigError, match="float16"):
        encode(np.zeros(2), 2, "float64")


def test_decode_into_fills_present_rows_and_reports_missing() -> None:
    rows = encode_rows(check_vectors(["a", "b"], np.array([[1.0, 2.0], [3.0, 4.0]]), 2, "float32", "x"))
    out = np.full((4, 2), 9.0, dtype=np.float32)
    out[:] = 0
    missing = decode_into(out, [rows[1], None, rows[0], None], 2, "float32")
    assert missing == [1, 3]
    np.testing.assert_array_equal(out, [[3, 4], [0, 0], [1, 2], [0, 0]])
    with pytest.raises(DataError, match="corrupt"):
        decode_into(out[:2], [rows[0], b"\x01"], 2, "float32")


def test_open_store_resolves_by_scheme(tmp_path) -> None:
    assert type(open_store("memory://")).__name__ == "MemoryStore"
    assert type(open_store(f"file://{tmp_path}/x")).__name__ == "SqliteStore"
    assert (tmp_path / "x" / "embeddings.sqlite3").exists()
    with pytest.raises(ConfigError, match="redis://"):
        open_store("s3://bucket/x")
    with pytest.raises(ConfigError, match="no scheme"):
        open_store("localhost:6379")
    with pytest.raises(ValidationError, match="float16"):  # refused where the settings are built
        FeatureStoreSettings(dtype="int8")
    with pytest.raises(ConfigError, match="invalid"):
        open_store("redis://127.0.0.1:notaport/0")
    (tmp_path / "plain").write_text("")
    with pytest.raises(ConfigError, match="writable"):
        open_store(f"file://{tmp_path}/plain/sub")


def test_memory_names_share_within_process() -> None:
    a, b, c = open_store("memory://shared-t"), open_store("memory://shared-t"), open_store("memory://")
    a.declare("v1", {"user": 2})
    assert b.versions() == ["v1"] and c.versions() == []


def test_feature_store_never_imports_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, feature_store, mamdr.commands.features, feature_store.loaders, feature_store.memory_store, "
            "feature_store.sqlite_store, feature_store.redis_store; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
