"""The RP's SDK talking to a real broker only through a HostileBroker proxy.

Import both fixtures into a test module that has `broker` and `rp` (e.g. from
shared_broker): `from hostile_fixtures import client, hostile`. That module's `client`
is then the SDK behind the proxy, in place of conftest's direct one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from support import BrokerProcess
from support.hostile_broker import HostileBroker

from relying_party import PushAuthClient


@pytest.fixture
def hostile(broker: BrokerProcess) -> Iterator[HostileBroker]:
    with HostileBroker(broker.http_url) as proxy:
        yield proxy
    proxy.check()


@pytest.fixture
async def client(hostile: HostileBroker, rp: dict[str, Any]) -> AsyncIterator[PushAuthClient]:
    """The RP's SDK, talking to the broker only through the hostile proxy."""
    async with PushAuthClient(hostile.http_url, rp["api_key"]) as sdk:
        yield sdk
