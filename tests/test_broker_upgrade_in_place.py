"""An upgrade in place (docs/operations.md, "Upgrading and rolling back"): deploy/README.md installs the
broker as a git checkout with an editable install, so `git pull` puts the next release's
files on disk while every node of the last one runs on until it is restarted. A node
must go on describing the code it runs: the SDK reads the API version from
/v1/openapi.json to decide whether a create may be sent again (docs/http-api.md).
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path

from support import BrokerProcess, RedisServer

REPO = Path(__file__).resolve().parents[1]
# What the test changes in the copy: the document's title (its version lives in
# broker/versions.py, which the app imports at start whatever openapi.py does).
TITLE = re.compile(r'"title": "[^"]*"')


def served_title(broker: BrokerProcess) -> str:
    with urllib.request.urlopen(broker.http_url + "/v1/openapi.json", timeout=10) as resp:
        return str(json.loads(resp.read())["info"]["title"])


def test_a_running_node_serves_its_own_openapi_document_not_the_one_on_disk(
    tmp_path: Path, redis_server: RedisServer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    # The release the node runs: a copy of the source, found before the editable install
    # (PYTHONPATH), with a title of its own so that the test sees which document it serves.
    release = tmp_path / "release"
    for package in ("broker", "protocol"):
        shutil.copytree(REPO / package, release / package, ignore=shutil.ignore_patterns("__pycache__"))
    openapi = release / "broker" / "openapi.py"
    source = openapi.read_text()
    assert len(TITLE.findall(source)) == 1
    openapi.write_text(TITLE.sub('"title": "running"', source))
    broker = broker_factory(redis_url=redis_server.url, node="a", env={"PYTHONPATH": str(release)})

    # `git pull` of the next release, before this node is restarted; nothing asked for
    # the document yet.
    openapi.write_text(TITLE.sub('"title": "on disk"', source))

    assert served_title(broker) == "running"
