"""Tests of the test helpers themselves, on real processes, servers and sockets."""

from __future__ import annotations

import os
import signal
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

from support import (
    DEADLINE,
    BrokerProcess,
    ManagedProcess,
    ProcessFailed,
    RedisServer,
    TcpProxy,
    WaitTimeout,
    assert_cli_error,
    free_port,
    http_status,
    line_on_stdout,
    pid_alive,
    ping,
    port_accepts,
    run_cli,
    wait_until,
)

PY = sys.executable

# A tiny HTTP server: /healthz answers 200 once it is up, anything else 404.
HTTP_SERVER = textwrap.dedent(
    """
    import http.server, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()
        def log_message(self, *a):
            pass
    srv = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
    print("listening", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    srv.serve_forever()
    """
)

# A line-echo server that prefixes its name: tells the proxy's backends apart.
ECHO_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    name, port = sys.argv[1], int(sys.argv[2])
    async def handle(r, w):
        while line := await r.readline():
            w.write(name.encode() + b":" + line)
            await w.drain()
        w.close()
    async def main():
        srv = await asyncio.start_server(handle, "127.0.0.1", port, limit=1 << 20)
        print("ready", flush=True)
        async with srv:
            await srv.serve_forever()
    asyncio.run(main())
    """
)


# -- ports ---------------------------------------------------------------------


def test_free_port_is_bindable_and_not_listening() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    assert not port_accepts(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert port_accepts(port)


# -- ManagedProcess ------------------------------------------------------------


def start_http(tmp_path: Path, **kwargs: object) -> tuple[ManagedProcess, int]:
    port = free_port()
    proc = ManagedProcess(
        [PY, "-c", HTTP_SERVER, str(port)],
        log_dir=tmp_path,
        name="http",
        ready=lambda _p: http_status(f"http://127.0.0.1:{port}/healthz") == 200,
        **kwargs,  # type: ignore[arg-type]
    )
    return proc.start(), port


def test_process_ready_by_http_and_output_captured(tmp_path: Path) -> None:
    proc, port = start_http(tmp_path)
    assert proc.running
    assert http_status(f"http://127.0.0.1:{port}/other") == 404
    assert "listening" in proc.stdout()
    assert "to stderr" in proc.stderr()
    assert "listening" in proc.output()
    assert "to stderr" in proc.output()
    assert proc.stdout_path.parent == tmp_path
    assert proc.terminate() == -signal.SIGTERM
    assert not proc.running
    assert http_status(f"http://127.0.0.1:{port}/healthz") is None


def test_process_ready_by_stdout_line(tmp_path: Path) -> None:
    code = "import time; print('warming up'); time.sleep(0.3); print('ready on 1234'); time.sleep(60)"
    proc = ManagedProcess(
        [PY, "-c", code], log_dir=tmp_path, name="liner", ready=line_on_stdout(r"^ready on \d+")
    )
    proc.start()
    assert "ready on 1234" in proc.stdout()
    assert proc.wait_for_output(r"ready on (\d+)").group(1) == "1234"
    proc.terminate()


def test_process_dying_before_ready_fails_with_its_output(tmp_path: Path) -> None:
    code = "import sys; print('config error: no such file', file=sys.stderr); sys.exit(3)"
    proc = ManagedProcess([PY, "-c", code], log_dir=tmp_path, name="dies", ready=lambda _p: False)
    with pytest.raises(
        ProcessFailed, match=r"(?s)exited with 3 before it was ready.*config error: no such file"
    ):
        proc.start()
    assert not proc.running


def test_process_not_ready_in_time_is_stopped(tmp_path: Path) -> None:
    proc = ManagedProcess(
        [PY, "-c", "import time; time.sleep(60)"],
        log_dir=tmp_path,
        name="slow",
        ready=lambda _p: False,
        ready_timeout=0.5,
    )
    with pytest.raises(ProcessFailed, match=r"not ready after 0\.5 s"):
        proc.start()
    assert not proc.running
    assert not pid_alive(proc.pid)


def test_terminate_falls_back_to_sigkill(tmp_path: Path) -> None:
    code = "import signal as s, time; s.signal(s.SIGTERM, s.SIG_IGN); print('ignoring'); time.sleep(60)"
    proc = ManagedProcess(
        [PY, "-c", code], log_dir=tmp_path, name="stubborn", ready=line_on_stdout("ignoring")
    )
    proc.start()
    assert proc.terminate(timeout=0.5) == -signal.SIGKILL
    assert not pid_alive(proc.pid)


def test_kill_signal_and_restart_keep_output(tmp_path: Path) -> None:
    proc, port = start_http(tmp_path)
    first_pid = proc.pid
    assert proc.kill() == -signal.SIGKILL
    assert not proc.running
    assert http_status(f"http://127.0.0.1:{port}/healthz") is None
    proc.start()  # same argv, same port
    assert proc.pid != first_pid
    assert http_status(f"http://127.0.0.1:{port}/healthz") == 200
    assert proc.stdout().count("listening") == 2
    assert "--- restart 2 ---" in proc.stdout()
    proc.restart()
    assert proc.stdout().count("listening") == 3
    proc.terminate()


def test_kill_with_other_signal_delivers_it(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import signal, time
        signal.signal(signal.SIGUSR1, lambda *a: print("got usr1", flush=True))
        print("ready", flush=True)
        while True:
            time.sleep(0.05)
        """
    )
    proc = ManagedProcess([PY, "-c", code], log_dir=tmp_path, name="usr1", ready=line_on_stdout("ready"))
    proc.start()
    assert proc.kill(signal.SIGUSR1) is None
    proc.wait_for_output("got usr1")
    assert proc.running
    proc.terminate()
    with pytest.raises(ProcessFailed, match="not running"):
        proc.kill()


def test_send_lines_to_stdin(tmp_path: Path) -> None:
    code = "import sys\nprint('ready', flush=True)\nfor line in sys.stdin: print('got', line, end='')"
    proc = ManagedProcess(
        [PY, "-c", code], log_dir=tmp_path, name="typist", stdin=True, ready=line_on_stdout("ready")
    )
    proc.start()
    proc.send_line("42")
    proc.wait_for_output("got 42")
    proc.close_stdin()
    assert proc.wait(10) == 0
    without = ManagedProcess(
        [PY, "-c", "import time; time.sleep(5)"], log_dir=tmp_path, name="nostdin"
    ).start()
    with pytest.raises(RuntimeError, match="stdin=True"):
        without.send_line("x")
    without.terminate()


def test_wait_for_output_fails_when_process_exits(tmp_path: Path) -> None:
    proc = ManagedProcess([PY, "-c", "print('bye')"], log_dir=tmp_path, name="short")
    proc.start()
    proc.wait(10)
    with pytest.raises(ProcessFailed, match=r"(?s)exited without printing /hello/.*bye"):
        proc.wait_for_output("hello", timeout=5)


def test_cleanup_ends_the_whole_group(tmp_path: Path) -> None:
    # The leader starts a child (as a broker may start its own Redis) and is then SIGKILLed.
    code = textwrap.dedent(
        f"""
        import subprocess, time
        child = subprocess.Popen([{PY!r}, "-c", "import time; time.sleep(60)"])
        print("child", child.pid, flush=True)
        time.sleep(60)
        """
    )
    proc = ManagedProcess(
        [PY, "-c", code], log_dir=tmp_path, name="parent", ready=line_on_stdout(r"child \d+")
    )
    proc.start()
    child = int(proc.wait_for_output(r"child (\d+)").group(1))
    proc.kill()
    assert pid_alive(child), "a crash of the leader does not take its children down"
    proc.cleanup()
    wait_until(lambda: not pid_alive(child), timeout=5, message="the child to be ended")
    assert proc not in ManagedProcess.live


def test_unfinished_processes_are_ended_and_shown_when_a_test_fails(pytester: pytest.Pytester) -> None:
    # A child pytest run with our conftest: its test starts a process and fails.
    tests_dir = Path(__file__).resolve().parent.parent
    pytester.makeconftest((tests_dir / "conftest.py").read_text())
    pidfile = pytester.path / "pid"
    pytester.makepyfile(
        test_leak=f"""
        import sys
        import pytest
        from support import ManagedProcess, line_on_stdout

        @pytest.fixture
        def server(tmp_path):
            code = "import time; print('fixture server up', flush=True); time.sleep(60)"
            proc = ManagedProcess([sys.executable, "-c", code], log_dir=tmp_path / "f", name="fixtured",
                                  ready=line_on_stdout("up"))
            yield proc.start()
            proc.terminate()  # stopped before the report is printed: its output must still show

        def test_fixture_process_shown(server):
            assert False, "fails on purpose"

        def test_leaks(tmp_path):
            code = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(60)"
            proc = ManagedProcess([sys.executable, "-c", code], log_dir=tmp_path, name="leaky",
                                  ready=line_on_stdout("pid"))
            proc.start()
            open({str(pidfile)!r}, "w").write(str(proc.pid))
            assert False, "fails on purpose"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", f"pythonpath={tests_dir}")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*- process fixtured -*", "fixture server up"])
    result.stdout.fnmatch_lines(["*- process leaky -*", "pid *"])
    pid = int(pidfile.read_text())
    assert not pid_alive(pid)


def test_processes_of_module_fixtures_outlive_each_test(pytester: pytest.Pytester) -> None:
    tests_dir = Path(__file__).resolve().parent.parent
    pytester.makeconftest((tests_dir / "conftest.py").read_text())
    pytester.makepyfile(
        test_shared="""
        import sys
        import pytest
        from support import ManagedProcess, line_on_stdout

        @pytest.fixture(scope="module")
        def shared(tmp_path_factory):
            code = "import time; print('up', flush=True); time.sleep(60)"
            proc = ManagedProcess([sys.executable, "-c", code], log_dir=tmp_path_factory.mktemp("s"),
                                  name="common", ready=line_on_stdout("up"))
            yield proc.start()
            proc.cleanup()

        def test_one(shared):
            assert shared.running

        def test_two(shared):
            assert shared.running
            assert shared.starts == 1
            assert False, "fails on purpose"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", f"pythonpath={tests_dir}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*- process common, shared -*"])


FAILING_WITH_LOGS = """
    import sys
    from support import ManagedProcess, line_on_stdout

    def test_ok():
        pass

    def test_fails(tmp_path):
        (tmp_path / "notes.log").write_text("a log of the test itself")
        code = "import time; print('server says hi', flush=True); time.sleep(60)"
        ManagedProcess([sys.executable, "-c", code], log_dir=tmp_path / "logs", name="chatty",
                       ready=line_on_stdout("hi")).start()
        assert False, "fails on purpose"
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_failed_test_is_named_at_the_end_with_its_kept_logs(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    tests_dir = Path(__file__).resolve().parent.parent
    pytester.makeconftest((tests_dir / "conftest.py").read_text())
    pytester.makepyfile(test_kept=FAILING_WITH_LOGS)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-o", f"pythonpath={tests_dir}", *workers
    )
    result.assert_outcomes(passed=1, failed=1)
    kept = pytester.path / "artifacts" / "failed" / "test_kept.py__test_fails"
    # The last lines before pytest's own closing line name the test and its logs.
    tail = result.outlines[result.outlines.index(next(x for x in result.outlines if "kept logs" in x)) :]
    assert any(line.startswith("FAILED test_kept.py::test_fails  logs: artifacts/failed/") for line in tail)
    assert "test_ok" not in "\n".join(tail)
    assert "fails on purpose" in (kept / "report.txt").read_text()
    assert "server says hi" in (kept / "processes" / "01-chatty.stdout.log").read_text()
    assert (kept / "tmp" / "notes.log").read_text() == "a log of the test itself"
    assert not (pytester.path / "artifacts" / "failed" / "test_kept.py__test_ok").exists()


# -- RedisServer ---------------------------------------------------------------


def test_redis_fixture_serves_and_starts_empty(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert ping(redis_server.port)
    client = redis_server.client()
    assert client.dbsize() == 0
    client.set("k", "v")
    assert client.get("k") == b"v"
    assert client.config_get("appendonly") == {"appendonly": "no"}
    assert client.config_get("save") == {"save": ""}
    client.close()


def test_redis_kill_and_restart_same_port_without_persistence(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "r") as server:
        port = server.port
        client = server.client()
        client.set("k", "v")
        server.kill()
        assert not server.running
        assert not ping(port)
        server.restart()
        assert server.port == port
        assert ping(port)
        assert client.get("k") is None  # nothing persisted by default
        client.close()
    assert not ping(port)


def test_redis_appendonly_survives_sigkill(tmp_path: Path) -> None:
    # appendfsync always, as the durability tests run it: with everysec, Redis holds the
    # append-only file's writes back while a background fsync is still running (up to
    # 2 s) and a SIGKILL loses them (a loaded clean-clone run kept 1 key of 100).
    with RedisServer(tmp_path / "r", appendonly=True, appendfsync="always") as server:
        client = server.client()
        for i in range(100):
            client.set(f"k{i}", i)
        server.kill()
        server.restart()
        assert client.dbsize() == 100
        assert client.get("k99") == b"99"
        client.close()


def test_redis_stop_then_restart(redis_factory: object) -> None:
    server = redis_factory(appendonly=True)  # type: ignore[operator]
    client = server.client()
    client.set("a", "1")
    server.stop()
    assert not server.running
    server.restart()
    assert client.get("a") == b"1"
    client.close()


def test_redis_factory_gives_separate_servers(redis_factory: object) -> None:
    one, two = redis_factory(), redis_factory()  # type: ignore[operator]
    assert one.port != two.port
    assert one.directory != two.directory
    c1, c2 = one.client(), two.client()
    c1.set("only", "one")
    assert c2.get("only") is None
    c1.close()
    c2.close()


def test_redis_on_taken_port_fails_clearly(tmp_path: Path, redis_server: RedisServer) -> None:
    clash = RedisServer(tmp_path / "clash", port=redis_server.port)
    with pytest.raises(ProcessFailed, match="exited with"):
        clash.start()


# -- TcpProxy ------------------------------------------------------------------


def start_echo(tmp_path: Path, name: str) -> tuple[ManagedProcess, int]:
    port = free_port()
    proc = ManagedProcess(
        [PY, "-c", ECHO_SERVER, name, str(port)],
        log_dir=tmp_path,
        name=f"echo-{name}",
        ready=line_on_stdout("ready"),
    )
    return proc.start(), port


def exchange(sock: socket.socket, text: str) -> str:
    sock.sendall(text.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data.decode()


def connect(proxy: TcpProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=DEADLINE)


def cut_off(sock: socket.socket) -> bool:
    """Whether the other end closed the connection: end of stream, or a reset."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:  # data of ours was still unread when it closed
        return True


def test_proxy_fails_over_to_the_next_backend(tmp_path: Path, tcp_proxy: object) -> None:
    a, port_a = start_echo(tmp_path, "a")
    _b, port_b = start_echo(tmp_path, "b")
    proxy: TcpProxy = tcp_proxy([port_a, ("127.0.0.1", port_b)])  # type: ignore[operator]
    with connect(proxy) as first:
        assert exchange(first, "hi") == "a:hi\n"
        a.kill()
        # The open connection was to A: it is cut off, as behind a load balancer. (Wait
        # for that without sending: data sent while the proxy closes makes the end a
        # reset instead of end-of-stream, a race that once failed this test.)
        assert cut_off(first)
    with connect(proxy) as second:
        assert exchange(second, "hi") == "b:hi\n"
    assert proxy.routed[("127.0.0.1", port_a)] == 1
    assert proxy.routed[("127.0.0.1", port_b)] == 1
    # A back up: new connections prefer it again (it is first in the list).
    a.start()
    with connect(proxy) as third:
        assert exchange(third, "x") == "a:x\n"


def test_proxy_many_connections_and_large_data(tmp_path: Path, tcp_proxy: object) -> None:
    _a, port_a = start_echo(tmp_path, "a")
    proxy: TcpProxy = tcp_proxy([port_a])  # type: ignore[operator]
    socks = [connect(proxy) for _ in range(20)]
    big = "x" * 300_000
    for i, sock in enumerate(socks):
        assert exchange(sock, f"{i}") == f"a:{i}\n"
    assert exchange(socks[0], big) == f"a:{big}\n"
    for sock in socks:
        sock.close()


def test_proxy_without_live_backend_closes_the_client(tcp_proxy: object) -> None:
    proxy: TcpProxy = tcp_proxy([free_port()])  # type: ignore[operator]
    with connect(proxy) as sock:
        assert sock.recv(10) == b""
    wait_until(lambda: proxy.refused == 1, timeout=5, message="the refusal to be counted")


def test_proxy_set_backends_and_drop_connections(tmp_path: Path, tcp_proxy: object) -> None:
    _a, port_a = start_echo(tmp_path, "a")
    _b, port_b = start_echo(tmp_path, "b")
    proxy: TcpProxy = tcp_proxy([port_a])  # type: ignore[operator]
    with connect(proxy) as sock:
        assert exchange(sock, "1") == "a:1\n"
        proxy.set_backends([port_b, port_a])
        assert exchange(sock, "2") == "a:2\n"  # existing connections stay
        proxy.drop_connections()
        assert exchange(sock, "3") == ""
    with connect(proxy) as sock:
        assert exchange(sock, "4") == "b:4\n"
    assert proxy.ws_url == f"ws://127.0.0.1:{proxy.port}/v1/device"
    assert proxy.http_url == f"http://127.0.0.1:{proxy.port}"


def test_proxy_close_stops_listening(tmp_path: Path) -> None:
    _a, port_a = start_echo(tmp_path, "a")
    proxy = TcpProxy([port_a]).start()
    sock = connect(proxy)
    assert exchange(sock, "x") == "a:x\n"
    proxy.close()
    assert exchange(sock, "y") == ""
    sock.close()
    assert not port_accepts(proxy.port)


# -- waiting and CLI helpers -----------------------------------------------------


def test_wait_until_returns_value_or_fails() -> None:
    start = time.monotonic()
    assert wait_until(lambda: time.monotonic() - start > 0.1 and "done", timeout=5) == "done"
    with pytest.raises(WaitTimeout, match=r"timed out after 0\.2 s waiting for the impossible"):
        wait_until(lambda: False, timeout=0.2, message="the impossible")


def test_assert_cli_error_accepts_a_clean_error_only() -> None:
    clean = run_cli([PY, "-c", "import sys; sys.exit('pushauth: no such account')"])
    assert assert_cli_error(clean, contains="no such account") == "pushauth: no such account"
    traceback = run_cli([PY, "-c", "raise ValueError('boom')"])
    with pytest.raises(AssertionError, match="traceback"):
        assert_cli_error(traceback)
    success = run_cli([PY, "-c", "print('ok')"])
    with pytest.raises(AssertionError, match="expected a failure"):
        assert_cli_error(success)
    two_lines = run_cli([PY, "-c", "import sys; print('a\\nb', file=sys.stderr); sys.exit(2)"])
    with pytest.raises(AssertionError, match="one line"):
        assert_cli_error(two_lines)


def test_run_cli_passes_input_and_env() -> None:
    code = "import os, sys; print(sys.stdin.read().upper(), os.environ['PUSHAUTH_X'])"
    result = run_cli([PY, "-c", code], input="abc", env={"PUSHAUTH_X": "y"})
    assert result.returncode == 0
    assert result.stdout == "ABC y\n"


def test_tmp_home_isolates_home(tmp_home: Path) -> None:
    assert Path.home() == tmp_home
    assert os.environ["XDG_CONFIG_HOME"].startswith(str(tmp_home))
    result = run_cli([PY, "-c", "import os; print(os.environ['HOME'])"])
    assert result.stdout.strip() == str(tmp_home)


# -- BrokerProcess -----------------------------------------------------------------


def test_broker_process_command_line(tmp_path: Path) -> None:
    broker = BrokerProcess(
        log_dir=tmp_path, redis_url="redis://127.0.0.1:1/0", data_dir=tmp_path / "d", node="n1", port=1234
    )
    assert broker.argv[0] == str(Path(sys.executable).parent / "pushauth-broker")
    assert broker.argv[1:] == [
        "serve", "--host", "127.0.0.1", "--port", "1234",
        "--redis-url", "redis://127.0.0.1:1/0", "--data-dir", str(tmp_path / "d"), "--node", "n1",
    ]  # fmt: skip
    assert broker.http_url == "http://127.0.0.1:1234"
    assert broker.ws_url == "ws://127.0.0.1:1234/v1/device"
    embedded = BrokerProcess(log_dir=tmp_path, redis_url=None)
    assert "--redis-url" not in embedded.argv
    assert "--node" not in embedded.argv


def test_broker_fixture_serves_healthz_and_registers_an_rp(
    broker: BrokerProcess, rp: dict[str, object]
) -> None:
    # Needs the real broker CLI (broker/cli.py): serve and rp add.
    assert http_status(broker.http_url + "/healthz") == 200
    assert rp["name"] == "Example RP"
    assert isinstance(rp["api_key"], str)
    assert rp["api_key"]
    other = broker.add_rp("Other RP")
    assert other["id"] != rp["id"]
    assert other["api_key"] != rp["api_key"]


FAILING_WEB_APP_TEST = """
    import pytest
    from webapp_world import chromium_args, chromium_path

    pytestmark = pytest.mark.asyncio(loop_scope="module")

    async def test_fails(phone, phones, browser, opened):
        await phone.page.evaluate("console.log('the app says hi')")
        other = await phones(phone.url)
        await other.page.evaluate("console.log('the other phone says hi')")
        # A browser of its own (as the camera tests launch), given to `opened`.
        own = await browser.browser_type.launch(executable_path=chromium_path(), args=chromium_args())
        opened("camera", own)
        page = await (await own.new_context()).new_page()
        await page.evaluate("console.log('the camera says hi')")
        assert False, "fails on purpose"
"""


def test_a_failed_web_app_test_keeps_its_pages(pytester: pytest.Pytester) -> None:
    # The web app's tests drive async Playwright pages, which the report hook cannot
    # reach: the `opened` fixture (under `phone` and `phones`) keeps them in its
    # teardown, beside the test's logs, before it closes them.
    tests_dir = Path(__file__).resolve().parent.parent
    pytester.makeconftest((tests_dir / "conftest.py").read_text())
    webapp = pytester.mkpydir("webapp_kept")
    (webapp / "conftest.py").write_text((tests_dir / "webapp" / "conftest.py").read_text())
    (webapp / "test_page.py").write_text(textwrap.dedent(FAILING_WEB_APP_TEST))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", f"pythonpath={tests_dir}")
    result.assert_outcomes(failed=1)
    kept = pytester.path / "artifacts" / "failed" / "webapp_kept_test_page.py__test_fails"
    assert "fails on purpose" in (kept / "report.txt").read_text()
    assert (kept / "phone-page1.png").read_bytes().startswith(b"\x89PNG")
    assert "/app/" in (kept / "phone-page1.html").read_text().splitlines()[0]
    assert "log: the app says hi" in (kept / "phone-page1.console.txt").read_text()
    # A phone the test made itself (the `phones` fixture) is kept too, before it closes.
    assert (kept / "phone2-page1.png").read_bytes().startswith(b"\x89PNG")
    assert "log: the other phone says hi" in (kept / "phone2-page1.console.txt").read_text()
    # And the pages of a browser the test launched itself.
    assert (kept / "camera-page1.png").read_bytes().startswith(b"\x89PNG")
    assert "log: the camera says hi" in (kept / "camera-page1.console.txt").read_text()
