"""Fixtures of the fault-injection suite: the S3 fault proxy in front of moto's server and
health-URL stubs. The tools (site, child-process driver, proxy, checks) live in tests/support.

Everything is real: the PostgreSQL cluster, moto's S3 server over HTTP, the CLI as a child
process, real signals, real file-system limits. A case waits for what it needs to see (an
output line, a request at the proxy, a query in pg_stat_activity) instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.health import HealthStub
from tests.support.s3proxy import FaultProxy


def _serve_proxy(monkeypatch: pytest.MonkeyPatch, s3_server: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(s3_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def s3_proxy(s3: str, s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """The `s3` fixture (test database + fresh bucket), reached through a FaultProxy."""
    yield from _serve_proxy(monkeypatch, s3_server)


@pytest.fixture
def bucket_proxy(
    s3_bucket: str, s3_server: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultProxy]:
    """The `s3_bucket` fixture (no database), reached through a FaultProxy."""
    yield from _serve_proxy(monkeypatch, s3_server)


@pytest.fixture
def health_stub() -> Iterator[Callable[[int | None], HealthStub]]:
    stubs: list[HealthStub] = []

    def make(status: int | None) -> HealthStub:
        stubs.append(HealthStub(status))
        return stubs[-1]

    yield make
    for stub in stubs:
        stub.stop()
