"""Root fixtures. Server fixtures (a real redis-server, a real Kafka broker) live in tests/fixtures/.

Markers: unit (no server), integration (real servers started here on loopback), e2e, slow.
Tests under tests/unit are marked unit automatically, tests/integration integration, tests/e2e e2e.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.redis_server", "tests.fixtures.kafka_broker"]

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        if parts and parts[0] in {"unit", "integration", "e2e"}:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or $MAMDR_SHARED_DATA): real multi-domain data for tests."""
    path = Path(os.environ.get("MAMDR_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} not present")
    return path
