"""Test helpers shared by every test file: real servers and processes, cleaned up.

Import as `from support import RedisServer, ...` (pytest puts tests/ on sys.path,
since tests/ is not a package). The fixtures in tests/conftest.py wrap these.
"""

from .broker import (
    AGENT,
    BROKER,
    BrokerProcess,
    add_rp,
    allow_numberless_push,
    assert_cli_error,
    console_script,
    new_rp,
    new_rp_sync,
    run_cli,
    set_policy,
    store_policy,
)
from .failed import FAILED_DIR
from .local_app import serving
from .ports import LOCALHOST, free_port, port_accepts
from .process import (
    ManagedProcess,
    ProcessFailed,
    children,
    cleanup_all,
    descendants,
    interruptible,
    line_on_stdout,
    pid_alive,
)
from .proxy import TcpProxy
from .redis_server import RedisServer, ping, redis_executable
from .waiting import DEADLINE, WaitTimeout, http_status, until, wait_until

__all__ = [
    "AGENT",
    "BROKER",
    "DEADLINE",
    "FAILED_DIR",
    "LOCALHOST",
    "BrokerProcess",
    "ManagedProcess",
    "ProcessFailed",
    "RedisServer",
    "TcpProxy",
    "WaitTimeout",
    "add_rp",
    "allow_numberless_push",
    "assert_cli_error",
    "children",
    "cleanup_all",
    "console_script",
    "descendants",
    "free_port",
    "http_status",
    "interruptible",
    "line_on_stdout",
    "new_rp",
    "new_rp_sync",
    "pid_alive",
    "ping",
    "port_accepts",
    "redis_executable",
    "run_cli",
    "serving",
    "set_policy",
    "store_policy",
    "until",
    "wait_until",
]
