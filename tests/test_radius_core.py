"""pushauth-radius's sans-I/O parts: decisions, packet checks and the configuration.

No servers here: what a typed answer means, the user mapping, the RFC 5080 duplicate
cache with a clock passed in, the Message-Authenticator check of packets.parse on
packets pyrad builds, and the configuration's one-line errors.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import struct
import tomllib
from pathlib import Path

import pytest
from pyrad import packet as rp
from support import assert_cli_error, console_script, run_cli

from protocol.challenge import Status
from relying_party.host.config import TomlReader
from relying_party.radius import config, core, dictionary, packets
from relying_party.radius.core import Cached, DuplicateCache, InProgress, New, Outcome, Totp, WaitForPush
from relying_party.radius.state import Pending

CLIENT = config.Client("gw", ipaddress.ip_network("10.0.0.0/24"), b"s3cret")


@pytest.mark.parametrize(
    ("typed", "number", "meaning"),
    [
        ("", "47", WaitForPush()),
        ("47", "47", WaitForPush()),  # the number typed on the VPN too: not a code
        ("123456", "47", Totp("123456")),
        (" 12345678 ", "47", Totp("12345678")),
        ("123456", "123456", WaitForPush()),  # a 6-digit number typed back is the number
        ("12345", "47", WaitForPush()),
        ("123456789", "47", WaitForPush()),
        ("yes", "47", WaitForPush()),
        ("123456", None, Totp("123456")),  # push blocked: only a code was asked for
        ("", None, WaitForPush()),
    ],
)
def test_what_a_typed_answer_means(typed: str, number: str | None, meaning: object) -> None:
    assert core.read_answer(typed, number) == meaning


@pytest.mark.parametrize(
    ("name", "strip", "lower", "mapped"),
    [
        ("Alice@CORP.example", True, True, "alice"),
        ("CORP\\Alice", True, True, "alice"),
        ("alice@corp", False, True, "alice@corp"),
        ("Alice", True, False, "Alice"),
        ("", True, True, None),
        ("al ice", True, True, None),
        ("a" * 65, True, True, None),
        ("bob\x00", True, True, None),
    ],
)
def test_user_mapping(name: str, strip: bool, lower: bool, mapped: str | None) -> None:
    assert core.map_user(name, strip_realm=strip, lowercase=lower) == mapped


def test_only_a_verified_approval_accepts() -> None:
    assert core.outcome_of(Status.APPROVED) is Outcome.APPROVED
    for status in Status:
        outcome = core.outcome_of(status)
        assert (outcome in core.ACCEPTED) == (status is Status.APPROVED), status
        assert outcome in core.MESSAGES


def test_duplicates_are_processed_once_and_answered_alike() -> None:
    cache = DuplicateCache(window=30)
    key = ("10.0.0.1", 5000, 7, b"a" * 16)
    assert isinstance(cache.seen(key, 0.0), New)
    assert isinstance(cache.seen(key, 100.0), InProgress)  # however long processing takes
    cache.answered(key, b"reply", 100.0)
    assert cache.seen(key, 129.0) == Cached(b"reply")
    assert isinstance(cache.seen(key, 130.0), New)  # the window is over
    other = ("10.0.0.1", 5001, 7, b"a" * 16)
    assert isinstance(cache.seen(other, 130.0), New)  # another source port is another request
    cache.answered(other, None, 130.0)  # nothing sent: forgotten, a retransmission is processed
    assert isinstance(cache.seen(other, 131.0), New)


def _request(secret: bytes = b"s3cret", *, ma: bool = True) -> bytes:
    pkt = rp.AuthPacket(
        code=rp.AccessRequest, secret=secret, dict=dictionary.load(), message_authenticator=ma
    )
    pkt["User-Name"] = "alice"
    pkt["User-Password"] = pkt.PwCrypt("correct horse")
    pkt["State"] = b"\x01" * 16
    return pkt.RequestPacket()


def test_a_request_is_taken_only_with_a_valid_message_authenticator() -> None:
    parsed = packets.parse(_request(), CLIENT)
    assert isinstance(parsed, packets.AccessRequest)
    assert (parsed.user_name, parsed.password, parsed.state) == ("alice", "correct horse", b"\x01" * 16)
    assert packets.parse(_request(b"other"), CLIENT) is Outcome.BAD_MESSAGE_AUTHENTICATOR
    assert packets.parse(_request(ma=False), CLIENT) is Outcome.NO_MESSAGE_AUTHENTICATOR
    data = bytearray(_request())
    data[-1] ^= 1  # one bit of the State changed on the way
    assert packets.parse(bytes(data), CLIENT) is Outcome.BAD_MESSAGE_AUTHENTICATOR
    assert packets.parse(b"\x01\x02\x00\x10", CLIENT) is Outcome.MALFORMED
    accounting = bytearray(_request())
    accounting[0] = rp.AccountingRequest
    assert packets.parse(bytes(accounting), CLIENT) is Outcome.MALFORMED


def test_replies_verify_at_the_client_with_message_authenticator() -> None:
    raw = _request()
    request = packets.parse(raw, CLIENT)
    assert isinstance(request, packets.AccessRequest)
    sent = rp.AuthPacket(secret=b"s3cret", dict=dictionary.load(), packet=raw)
    for data in (
        packets.challenge(request, core.challenge_message("47"), b"\x02" * 16),
        packets.accept(request, "Approved."),
        packets.reject(request, "x" * 400),  # cut to one attribute
    ):
        reply = sent.CreateReply(packet=data)
        assert sent.VerifyReply(reply, data, enforce_ma=True)
    challenge = sent.CreateReply(
        packet=packets.challenge(request, core.challenge_message("47"), b"\x02" * 16)
    )
    assert challenge.code == rp.AccessChallenge
    assert challenge["State"] == [b"\x02" * 16]
    assert challenge["Reply-Message"] == ["Type 47 in your authenticator, then press Enter"]


def _secret(path: Path, text: str) -> None:
    """A secret's file as the server accepts it: others may not read it."""
    path.write_text(text)
    path.chmod(0o640)


def _config(tmp_path: Path, text: str) -> config.Config:
    _secret(tmp_path / "key", "k" * 20)
    path = tmp_path / "radius.toml"
    path.write_text('[broker]\nurl = "http://127.0.0.1:1"\napi_key_file = "key"\n' + text)
    return config.load(path)


CLIENTS = (
    '[[client]]\nname = "net"\naddress = "10.0.0.0/8"\nsecret = "a"\n'
    '[[client]]\nname = "host"\naddress = "10.1.2.3"\nsecret_file = "s"\npush_only = true\n'
)


def test_config_clients_most_specific_wins(tmp_path: Path) -> None:
    _secret(tmp_path / "s", "from-a-file\n")
    cfg = _config(tmp_path, CLIENTS)
    host = cfg.client_for("10.1.2.3")
    assert host is not None and host.name == "host" and host.push_only and host.secret == b"from-a-file"
    net = cfg.client_for("10.9.9.9")
    assert net is not None and net.name == "net" and not net.push_only
    assert cfg.client_for("192.0.2.1") is None
    assert cfg.client_for("::1") is None
    # Digits and lifetime left out: not sent, the RP's policy at the broker decides.
    assert (cfg.ttl, cfg.digits, cfg.first_factor, cfg.broker_down) == (None, None, "gateway", "reject")
    named = _config(tmp_path, "[challenge]\ndigits = 6\nttl = 120\n" + CLIENTS)
    assert (named.digits, named.ttl) == (6, 120)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("", "client"),
        ('[[client]]\naddress = "10.0.0.0/33"\nsecret = "a"\n', "client[0].address"),
        ('[[client]]\naddress = "10.0.0.1"\n', "client[0].secret"),
        ('[[client]]\naddress = "10.0.0.1"\nsecret_file = "missing"\n', "client[0].secret_file"),
        ("[challenge]\nttl = 5\n" + CLIENTS, "challenge.ttl"),
        ("[challenge]\ndigits = 9\n" + CLIENTS, "challenge.digits"),
        ('[challenge]\ndigits = "6"\n' + CLIENTS, "challenge.digits"),
        ('[first_factor]\nmode = "ldap"\n' + CLIENTS, "first_factor.mode"),
        ('[first_factor]\nmode = "upstream"\n' + CLIENTS, "first_factor.host"),
        ("[radius]\nport = 70000\n" + CLIENTS, "radius.port"),
        ("[limits]\nduplicate_window = 0\n" + CLIENTS, "limits.duplicate_window"),
        ("[limits]\nduplicate_window = nan\n" + CLIENTS, "limits.duplicate_window"),
        # A misspelled key or table would leave the default in force without a word.
        ("[radius]\nprot = 1812\n" + CLIENTS, "radius.prot"),
        ("[limitz]\n" + CLIENTS, "limitz"),
        ('[[client]]\naddress = "10.0.0.1"\nsecret = "a"\nsecrt = "b"\n', "client[0].secrt"),
        # A Redis URL redis-py cannot read: a traceback at start before.
        ('[radius]\nredis_url = "mysql://x"\n' + CLIENTS, "radius.redis_url"),
        ('[radius]\nredis_url = "redis://h:99999/0"\n' + CLIENTS, "radius.redis_url"),
        # Passed, then serve died at its first Redis connection with redis-py's TypeError.
        ('[radius]\nredis_url = "redis://h/0?foo=1"\n' + CLIENTS, "radius.redis_url: unknown option 'foo'"),
        ('[radius]\nredis_url = "redis://h/0?encoding=x"\n' + CLIENTS, "radius.redis_url: the option"),
        # Every push carries the app name in its context: one the broker refuses (400)
        # made every sign-in fail, while check-config said it was fine.
        ('[radius]\napp_name = "VPN\\u0007"\n' + CLIENTS, "radius.app_name: must not contain control"),
        ('[radius]\napp_name = "VPN\\u202e"\n' + CLIENTS, "radius.app_name: must not contain control"),
        ('[radius]\napp_name = ""\n' + CLIENTS, "radius.app_name: must be 1 to 256"),
        # So does the client's name (the context's "client"), and it starts audit lines.
        (
            '[[client]]\nname = "gw\\n"\naddress = "10.0.0.1"\nsecret = "a"\n',
            "client[0].name: must not contain",
        ),
        ('[[client]]\nname = ""\naddress = "10.0.0.1"\nsecret = "a"\n', "client[0].name: must be 1 to 256"),
        (f'[radius]\napp_name = "{"v" * 257}"\n' + CLIENTS, "radius.app_name: must be 1 to 256"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    _secret(tmp_path / "s", "x")
    with pytest.raises(config.ConfigError, match="radius.toml: " + re.escape(key)):
        _config(tmp_path, text)


@pytest.mark.parametrize("url", ["http://", "ftp://broker.example", "http://[::1"])
def test_config_refuses_a_broker_url_no_request_could_use(tmp_path: Path, url: str) -> None:
    _secret(tmp_path / "key", "k" * 20)
    path = tmp_path / "radius.toml"
    path.write_text(f'[broker]\nurl = "{url}"\napi_key_file = "key"\n' + CLIENTS)
    with pytest.raises(config.ConfigError, match=r"radius\.toml: broker\.url: "):
        config.load(path)


def test_the_shipped_example_holds_only_keys_the_server_reads() -> None:
    example = Path(__file__).resolve().parents[1] / "deploy" / "radius" / "radius.toml"
    reader = TomlReader(tomllib.loads(example.read_text()), example.parent, str(example))
    reader.refuse_unknown(config.KEYS, {"client": config.CLIENT_KEYS})


def test_config_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[broker\n")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load(path)


def _raw(*attrs: bytes, tail: bytes = b"", mas: int = 1) -> bytes:
    """An Access-Request of these encoded attributes (then `tail`, bytes as they are),
    with `mas` Message-Authenticators, the first one valid for CLIENT's secret."""
    body = b"".join(attrs) + b"".join(b"\x50\x12" + b"\x00" * 16 for _ in range(mas)) + tail
    head = bytes([rp.AccessRequest, 7]) + struct.pack("!H", 20 + len(body)) + b"\x05" * 16
    if not mas:
        return head + body
    at = len(b"".join(attrs)) + 2
    mac = hmac.new(CLIENT.secret, head + body, hashlib.md5).digest()
    body = body[:at] + mac + body[at + 16 :]
    return head + body


def _attr(code: int, value: bytes) -> bytes:
    return bytes([code, 2 + len(value)]) + value


def _pw(password: bytes = b"pw") -> bytes:
    pkt = rp.AuthPacket(code=rp.AccessRequest, secret=CLIENT.secret, authenticator=b"\x05" * 16)
    return _attr(2, pkt.PwCrypt(password))


def test_well_formed_raw_request_is_taken() -> None:
    parsed = packets.parse(_raw(_attr(1, b"alice"), _pw(), _attr(31, b"203.0.113.9")), CLIENT)
    assert isinstance(parsed, packets.AccessRequest)
    assert (parsed.user_name, parsed.password, parsed.calling_station) == ("alice", "pw", "203.0.113.9")


@pytest.mark.parametrize(
    "data",
    [
        # RFC 2865 section 3: at most 4096 bytes (here 20 Proxy-States of 253 bytes).
        _raw(_attr(1, b"alice"), _pw(), *[_attr(33, b"p" * 251)] * 20),
        # an attribute whose length runs past the end of the packet
        _raw(_attr(1, b"alice"), _pw(), tail=b"\x1f\x40abc"),
        _raw(_attr(1, b"alice"), _pw(), tail=b"\x1f\x01"),
        _raw(_attr(1, b"alice"), _pw(), tail=b"\x1f"),
        # RFC 3579 section 3.2: at most one Message-Authenticator
        _raw(_attr(1, b"alice"), _pw(), mas=2),
        # two User-Names: which one signs in?
        _raw(_attr(1, b"alice"), _attr(1, b"mallory"), _pw()),
        # under 4096 bytes, but the reply copying its Proxy-State would not be
        _raw(_attr(1, b"alice"), _pw(), *[_attr(33, b"p" * 251)] * 15),
    ],
    ids=["over-4096", "past-end", "length-1", "half-header", "two-MA", "two-user-names", "reply-too-big"],
)
def test_malformed_requests_are_dropped(data: bytes) -> None:
    assert packets.parse(data, CLIENT) is Outcome.MALFORMED


def test_replies_never_exceed_4096_bytes() -> None:
    # The most Proxy-State a request may carry: the longest reply still fits.
    states = [_attr(33, b"p" * 251)] * 14 + [_attr(33, b"q" * 20)]
    request = packets.parse(_raw(_attr(1, b"alice"), _pw(), *states), CLIENT)
    assert isinstance(request, packets.AccessRequest)
    data = packets.challenge(request, "x" * 400, b"\x02" * 16)
    assert len(data) <= packets.MAX_PACKET
    sent = rp.AuthPacket(secret=CLIENT.secret, dict=dictionary.load(), packet=request.packet.raw_packet)
    assert sent.VerifyReply(sent.CreateReply(packet=data), data, enforce_ma=True)


def test_text_attributes_that_are_not_utf8() -> None:
    parsed = packets.parse(_raw(_attr(1, b"\xff\xfe\xfd"), _pw(), _attr(31, b"10.0.0.\xff")), CLIENT)
    assert isinstance(parsed, packets.AccessRequest)
    assert parsed.user_name is None  # no usable user name: the engine's bad_request
    assert parsed.calling_station == "10.0.0.\\xff"  # escaped text, not a bytes repr


def test_push_only_clients_are_told_what_to_do_and_never_to_use_a_code() -> None:
    # A push-only request ends in one reply, with no prompt to type a code at (and in a
    # push-only setup no other client asks for one), nor a number shown to match.
    no_challenge = {Outcome.TOTP_OK, Outcome.TOTP_BAD, Outcome.TOTP_REPLAYED, Outcome.UNKNOWN_STATE}
    for outcome in core.MESSAGES.keys() - no_challenge:
        text = core.message(outcome, push_only=True)
        assert not re.search(r"\bcode\b|number typed", text), (outcome, text)
        assert len(text.encode()) <= packets.MAX_REPLY_MESSAGE
    # What to do: approve on the authenticator (online), or ask for push to be unblocked.
    assert "approve the request on your authenticator" in core.message(Outcome.EXPIRED, push_only=True)
    assert "is it online?" in core.message(Outcome.EXPIRED, push_only=True)
    for outcome in (Outcome.BLOCKED, Outcome.WITHDRAWN):
        assert "Ask your administrator to unblock it" in core.message(outcome, push_only=True)
    assert core.message(Outcome.WITHDRAWN, push_only=False) == core.MESSAGES[Outcome.WITHDRAWN]


def test_a_secret_file_every_local_user_may_read_is_refused(tmp_path: Path) -> None:
    # The API key lets its holder push to every user of the RP; a shared secret lets them
    # answer the gateway as this server: 0644 (what a plain write makes) passed before.
    _secret(tmp_path / "s", "from-a-file\n")
    assert _config(tmp_path, CLIENTS).client_for("10.1.2.3") is not None  # 0640: the group may
    (tmp_path / "s").chmod(0o644)
    with pytest.raises(
        config.ConfigError,
        match=r"client\[1\]\.secret_file: .*/s is readable or writable by others \(mode 0644\): refused",
    ):
        _config(tmp_path, CLIENTS)
    (tmp_path / "s").chmod(0o640)
    (tmp_path / "key").chmod(0o604)
    with pytest.raises(
        config.ConfigError,
        match=r"broker\.api_key_file: .*/key is readable or writable by others \(mode 0604\)",
    ):
        config.load(tmp_path / "radius.toml")


def test_an_api_key_or_secret_file_no_request_could_use_is_one_line(tmp_path: Path) -> None:
    """`pushauth-radius check-config` as run: a key file that is not UTF-8 was a traceback, and
    one with a space or a second line passed, then every request to the broker was one."""
    _config(tmp_path, CLIENTS.replace('secret_file = "s"', 'secret = "b"'))
    check = [console_script("pushauth-radius"), "--config", tmp_path / "radius.toml", "check-config"]
    for content, why in (
        (b"\xff\xfepak\n", "/key is not UTF-8 text"),
        (b"pak_one\npak_two\n", "holds no API key (one line of printable ASCII, no spaces)"),
        (b"pak one", "holds no API key"),
    ):
        (tmp_path / "key").write_bytes(content)
        assert_cli_error(run_cli(check), contains="radius.toml: broker.api_key_file: ")
        assert why in run_cli(check).stderr
    (tmp_path / "key").write_text("k" * 20)
    from_env = (tmp_path / "radius.toml").read_text().replace('api_key_file = "key"\n', "")
    (tmp_path / "radius.toml").write_text(from_env)
    line = assert_cli_error(run_cli(check, env={config.API_KEY_ENV: "pak\x01"}))
    assert f"${config.API_KEY_ENV}: holds no API key" in line
    _secret(tmp_path / "s", "")
    (tmp_path / "s").write_bytes(b"\xff")
    (tmp_path / "radius.toml").write_text('[broker]\nurl = "http://127.0.0.1:1"\n' + CLIENTS)
    line = assert_cli_error(run_cli(check, env={config.API_KEY_ENV: "k" * 20}))
    assert "client[1].secret_file: " in line and "/s is not UTF-8 text" in line
    (tmp_path / "s").unlink()
    os.mkfifo(tmp_path / "s")  # check-config waited for a writer for good
    line = assert_cli_error(run_cli(check, env={config.API_KEY_ENV: "k" * 20}, timeout=20))
    assert "client[1].secret_file: " in line and "/s is not a regular file" in line


def test_a_state_record_keeps_the_station_and_reads_one_written_without() -> None:
    """The follow-up's audit line names the first request's station; a record written by
    an instance of an earlier version (a rolling upgrade) has none and still reads."""
    pending = Pending(None, "alice", "vpn-gw1", "203.0.113.9")
    assert Pending.from_json(pending.to_json()) == pending
    assert Pending.from_json('{"challenge": null, "user": "alice", "client": "vpn-gw1"}') == Pending(
        None, "alice", "vpn-gw1"
    )
