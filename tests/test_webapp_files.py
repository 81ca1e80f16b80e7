"""The web authenticator's files where an operator installs pushauth: a wheel built from
the checkout carries them (deploy/webapp.md; `serve --webapp`), and a copy without them is
refused by name rather than served as 404s or as an app that fails on the phone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support import assert_cli_error, free_port, run_cli

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("protocol", "broker", "device_agent", "relying_party", "loadtest")
BROKER_MAIN = "import sys; from broker.cli import main; sys.exit(main())"
SERVE_WEBAPP = (sys.executable, "-c", BROKER_MAIN, "serve", "--webapp", "--port", "0")
PIP_WHEEL = (sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation")


def checksums(pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m broker.webapp_static` (the list deploy/webapp.md publishes), importing the
    broker from `pythonpath` (an unpacked wheel) or from the checkout."""
    env = {"PYTHONPATH": os.fspath(pythonpath)} if pythonpath else {}
    return run_cli([sys.executable, "-m", "broker.webapp_static"], env=env, cwd=pythonpath or REPO)


@pytest.mark.parametrize("args", [[], ["--import-map"]])
def test_a_reader_that_goes_away_ends_the_list_quietly(args: list[str]) -> None:
    """`python -m broker.webapp_static | head -1`: no traceback once head has its line,
    the status of a tool that SIGPIPE ended. The reader is gone before the first write, so
    the write fails whatever the pipe's buffer would hold."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "broker.webapp_static", *args],
            stdout=writer,
            stderr=subprocess.PIPE,
            cwd=REPO,
            timeout=60,
            check=False,
        )
    finally:
        os.close(writer)
    assert (result.returncode, result.stderr) == (141, b"")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built as an operator builds one (`pip wheel` of the checkout, after
    scripts/build-webapp), unpacked: what `pip install` puts in site-packages."""
    if checksums().returncode != 0:
        pytest.fail("the checkout's web authenticator is incomplete: run scripts/build-webapp")
    top = tmp_path_factory.mktemp("wheel")
    source = top / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "node_modules", "*.egg-info")
    for package in PACKAGES:
        shutil.copytree(REPO / package, source / package, ignore=skip)
    built = subprocess.run(
        [*PIP_WHEEL, "--wheel-dir", os.fspath(top / "dist"), os.fspath(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = (top / "dist").glob("pushauth-*.whl")
    site = top / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def test_a_wheel_carries_the_web_authenticator(installed: Path) -> None:
    from_wheel = checksums(installed)
    assert from_wheel.returncode == 0, from_wheel.stderr
    # Every file the checkout's copy serves, with the same bytes.
    assert from_wheel.stdout == checksums().stdout
    assert "vendor/jsQR.js" in from_wheel.stdout


def test_an_incomplete_copy_is_refused_by_name(installed: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(installed, site)
    (site / "device_agent" / "webapp" / "vendor" / "jsQR.js").unlink()
    line = assert_cli_error(checksums(site), contains="missing vendor/jsQR.js")
    assert "scripts/build-webapp" in line
    # serve --webapp says so before anything starts (no Redis is reached for it).
    served = run_cli(
        [*SERVE_WEBAPP, "--redis-url", f"redis://127.0.0.1:{free_port()}/0"],
        env={"PYTHONPATH": os.fspath(site)},
        cwd=site,
    )
    assert served.returncode == 2
    assert_cli_error(served, contains="--webapp: the web authenticator's files")
