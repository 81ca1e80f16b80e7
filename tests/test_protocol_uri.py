"""protocol.uri: the enrollment URI (QR code) round-trips; every malformed one is refused."""

from __future__ import annotations

import base64
from dataclasses import replace
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import uri
from protocol.errors import ErrorCode, ProtocolError
from protocol.uri import EnrollmentURI, TotpParams

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # 160 bits
BASE = EnrollmentURI(
    broker="wss://push.example.com:8443/v1/device",
    token="enrolltoken_0123456789abcdef",
    rp="rp_example",
    rp_name="Example Corp",
    account="alice@example.com",
)
WITH_TOTP = BASE.with_totp(TotpParams(SECRET, "SHA256", 8, 60))


def query(**params: str) -> str:
    """A URI built by hand from BASE's parameters, with changes (None removes one)."""
    q: dict[str, str | None] = {
        "v": "2",
        "broker": BASE.broker,
        "token": BASE.token,
        "rp": BASE.rp,
        "rp_name": BASE.rp_name,
        "account": BASE.account,
    }
    q.update(params)
    return "pushauth://enroll?" + urlencode({k: v for k, v in q.items() if v is not None})


def refused(text: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        uri.parse(text)
    assert info.value.code is ErrorCode.INVALID_URI
    assert info.value.message.startswith("not a valid enrollment URI")
    return info.value


# -- round trips -------------------------------------------------------------------


@pytest.mark.parametrize("enrollment", [BASE, WITH_TOTP, BASE.with_totp(TotpParams(SECRET))])
def test_build_parse_round_trip(enrollment: EnrollmentURI) -> None:
    text = enrollment.build()
    assert text.startswith("pushauth://enroll?v=2&broker=")
    assert uri.parse(text) == enrollment


def test_text_fields_with_reserved_characters_round_trip() -> None:
    tricky = replace(
        BASE,
        broker="ws://127.0.0.1:8080/v1/device?x=1&y=2",
        rp_name="Bob & Alice's = Shop #1 + 100% 🛒",
        account="ä ö ü/?&=#+%20",
    )
    assert uri.parse(tricky.build()) == tricky


def test_with_totp_keeps_the_rest() -> None:
    assert WITH_TOTP.totp == TotpParams(SECRET, "SHA256", 8, 60)
    assert replace(WITH_TOTP, totp=None) == BASE
    assert TotpParams(SECRET) == TotpParams(SECRET, "SHA1", 6, 30)  # RFC 6238 defaults


ident = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=64
)
# Any character but surrogates; at most 64 so that two labels of 4-byte characters, each
# percent-encoded to 12 characters, stay within the 2048-character limit of a URI.
label = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=64)


@settings(max_examples=300, deadline=None)
@given(
    token=ident.filter(lambda s: len(s) >= 16),
    rp=ident,
    rp_name=label,
    account=label,
    host=st.sampled_from(["ws://localhost:1", "wss://push.example.com", "ws://[::1]:8080/v1/device"]),
    totp=st.none()
    | st.builds(
        TotpParams,
        secret=st.binary(min_size=10, max_size=64).map(lambda b: base64.b32encode(b).decode().rstrip("=")),
        algorithm=st.sampled_from(uri.ALGORITHMS),
        digits=st.sampled_from([6, 8]),
        period=st.integers(1, 3600),
    ),
)
def test_round_trip_fuzzed(
    token: str, rp: str, rp_name: str, account: str, host: str, totp: TotpParams | None
) -> None:
    enrollment = EnrollmentURI(host, token, rp, rp_name, account, totp)
    assert uri.parse(enrollment.build()) == enrollment


# -- what parsing forgives ----------------------------------------------------------------


def test_surrounding_whitespace_is_ignored() -> None:
    assert uri.parse(f"  {BASE.build()}\n") == BASE


def test_a_link_wrapped_across_lines_reads_as_the_link() -> None:
    """docs/protocol.md 11.1 (RFC 3986 Appendix C): a link an e-mail or a terminal wrapped
    is read as the link. Line breaks, the spaces and tabs beside them, and tabs go; they
    used to stay in the names ("Exam   ple Corp" after an indented next line)."""
    link = BASE.build()
    cut = link.index("Example") + 4
    for wrap in ("\n", "\r\n", " \r\n", "\r\n    ", "\n\t", " \n\n \r\n\t", "\t"):
        assert uri.parse(link[:cut] + wrap + link[cut:]) == BASE, repr(wrap)
    # Anywhere: in the scheme, a parameter name, the broker URL, an escape.
    at = link.index("%40") + 2
    assert uri.parse("push\r\n auth" + link[8:at] + "\n" + link[at:]) == BASE
    assert uri.unwrap("a \r\n b\tc d") == "abc d"
    # A space away from a line break is not wrapping: it stays, read as a space.
    assert uri.parse(link.replace("Example+Corp", "Example Corp")).rp_name == "Example Corp"
    # Only ASCII spaces and tabs beside a break: a no-break space stays (and is refused here).
    with pytest.raises(ProtocolError):
        uri.parse(link.replace("enrolltoken_", "enroll\u00a0\ntoken_"))


def test_scheme_is_case_insensitive() -> None:
    assert uri.parse(BASE.build().replace("pushauth://", "PushAuth://", 1)) == BASE


def test_unknown_parameters_are_ignored_for_forward_compatibility() -> None:
    assert uri.parse(query(future="1")) == BASE


@pytest.mark.parametrize(
    ("secret", "normalised"),
    [
        (SECRET.lower(), SECRET),
        ("JBSW Y3DP EHPK 3PXP", "JBSWY3DPEHPK3PXP"),  # as printed for typing in
        ("JBSWY3DPEHPK3PXP====", "JBSWY3DPEHPK3PXP"),  # padding
    ],
)
def test_totp_secret_is_normalised(secret: str, normalised: str) -> None:
    parsed = uri.parse(query(secret=secret))
    assert parsed.totp == TotpParams(normalised)


def test_totp_algorithm_case_is_normalised() -> None:
    parsed = uri.parse(query(secret=SECRET, algorithm="sha512"))
    assert parsed.totp is not None
    assert parsed.totp.algorithm == "SHA512"


# -- malformed ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "pushauth://",
        "pushauth://enroll",  # no parameters at all
        "pushauth:enroll?v=1",
        "https://example.com/enroll?v=1",
        "otpauth://totp/x?secret=" + SECRET,
        BASE.build().replace("pushauth://enroll", "pushauth://totp", 1),
        BASE.build().replace("pushauth://enroll", "pushauth://ENROLL", 1),
        BASE.build().replace("pushauth://enroll", "pushauth://enroll.example.com", 1),
        BASE.build().replace("pushauth://", "push auth://", 1),
        "x" * 3000,
        query(account="a" * 2100),  # over 2048 characters in all
        "pushauth://[::1",  # urllib raises ValueError for a broken IPv6 host
        "pushauth://enroll:99999?v=2",  # and for a port out of range
    ],
)
def test_not_an_enrollment_uri(text: str) -> None:
    refused(text)


@pytest.mark.parametrize("name", ["v", "broker", "token", "rp", "rp_name", "account"])
def test_every_required_parameter_missing_or_empty(name: str) -> None:
    refused(query(**{name: None}))  # type: ignore[arg-type]
    refused(query(**{name: ""}))


@pytest.mark.parametrize("name", ["v", "broker", "token", "rp", "rp_name", "account", "secret", "digits"])
def test_a_parameter_given_twice(name: str) -> None:
    text = query(secret=SECRET, digits="6")
    value = {"v": "2", "broker": BASE.broker, "secret": SECRET, "digits": "6"}.get(name, "x")
    error = refused(f"{text}&{name}={quote(value)}")
    assert "twice" in error.message


@pytest.mark.parametrize("version", ["1", "3", "0", "02", "2.0", " 2", "v2"])
def test_unsupported_version(version: str) -> None:
    refused(query(v=version))


@pytest.mark.parametrize(
    "broker",
    [
        "http://push.example.com/v1/device",
        "https://push.example.com",
        "ws://",
        "wss:///v1/device",
        "ws://:8700/v1/device",  # a port but no host
        "wss://user:pw@push.example.com/v1/device",  # user info is not allowed
        "wss://push.example.com:99999/v1/device",  # no such port
        "wss://push.example.com/v1/device#frag",
        "push.example.com:8443",
        "javascript:alert(1)",
        # urllib.parse raises ValueError for these: refused like the rest, not a traceback.
        "ws://[::1",
        "wss://[::1/v1/device",
        "ws://[not-an-address]/v1/device",
        "wss://[::1]:70000/v1/device",
        "ws://[::1]:-1/v1/device",
        "wss://push.example.com:port/v1/device",
    ],
)
def test_broker_must_be_a_websocket_url(broker: str) -> None:
    error = refused(query(broker=broker))
    assert "broker" in error.message


@pytest.mark.parametrize("broker", ["ws://[::1", "http://[::1/x", "wss://h:99999/", "ws://[zz]/"])
def test_split_url_and_insecure_transport_refuse_a_malformed_url(broker: str) -> None:
    assert uri.split_url(broker) is None
    why = uri.insecure_transport(broker)  # a device must not connect there either
    assert why is not None and "malformed" in why


def test_split_url_keeps_a_good_ipv6_url() -> None:
    parts = uri.split_url("ws://[::1]:8700/v1/device")
    assert parts is not None and parts.hostname == "::1" and parts.port == 8700
    assert uri.insecure_transport("ws://[::1]:8700/v1/device") is None


@pytest.mark.parametrize(
    "token",
    [
        "t" * 15,
        "t" * 129,
        "token with spaces 0123",
        "token/0123456789abcdef",
        "tökén0123456789abcdef",
        "t" * 20 + "\n",
    ],
)
def test_malformed_token(token: str) -> None:
    refused(query(token=token))


@pytest.mark.parametrize("rp", ["r" * 65, "rp example", "rp.example", "rp_example\n", "rp_é"])
def test_malformed_rp_id(rp: str) -> None:
    refused(query(rp=rp))


def test_labels_are_at_most_256_characters() -> None:
    assert uri.parse(query(rp_name="n" * 256, account="a" * 256)).rp_name == "n" * 256
    refused(query(rp_name="n" * 257))
    refused(query(account="a" * 257))


@pytest.mark.parametrize(
    "params",
    [
        {"secret": "JBSWY3DPEHPK3PX1"},  # 1 is not base32
        {"secret": "JBSWY3DPEHPK3PX8"},
        {"secret": "JBSWY3DP=HPK3PXP"},  # padding in the middle
        {"secret": "JBSWY3DPEHPK3PXP\n"},
        {"secret": "===="},
        {"secret": " "},
        {"secret": ""},
        {"secret": "JBSWY3DPEHPK3PX"},  # 15 characters: not a whole number of bytes
        {"secret": "JBSWY3DPEHPK3P"},  # 70 bits: shorter than the 80 RFC 4226 asks for
        {"secret": SECRET, "algorithm": "MD5"},
        {"secret": SECRET, "algorithm": ""},
        {"secret": SECRET, "digits": "7"},
        {"secret": SECRET, "digits": "10"},
        {"secret": SECRET, "digits": "six"},
        {"secret": SECRET, "digits": " 6"},
        {"secret": SECRET, "digits": "+6"},
        {"secret": SECRET, "digits": "0_6"},
        {"secret": SECRET, "digits": "\u0666"},  # ARABIC-INDIC DIGIT SIX: int() would take it
        {"secret": SECRET, "digits": ""},
        {"secret": SECRET, "period": "0"},
        {"secret": SECRET, "period": "3601"},
        {"secret": SECRET, "period": "-30"},
        {"secret": SECRET, "period": "30.5"},
        {"secret": SECRET, "period": "9" * 40},
        {"digits": "6"},  # TOTP parameters without a secret
        {"algorithm": "SHA1"},
        {"period": "30"},
    ],
)
def test_malformed_totp(params: dict[str, str]) -> None:
    refused(query(**params))


def test_totp_edges_are_accepted() -> None:
    assert uri.parse(query(secret="JBSWY3DPEHPK3PXP", period="1")).totp == TotpParams(
        "JBSWY3DPEHPK3PXP", period=1
    )
    assert uri.parse(query(secret=SECRET, period="3600", digits="8")).totp == TotpParams(
        SECRET, "SHA1", 8, 3600
    )


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        (
            "account=alice%40example.com",
            "account=al%FFice",
            "the account name in the link is not valid UTF-8",
        ),
        ("account=alice%40example.com", "account=%C3%28", "the account name in the link is not valid UTF-8"),
        ("account=alice%40example.com", "account=100%", "the account name in the link is not valid percent-"),
        ("rp_name=Example+Corp", "rp_name=Ex%FE", "the service name in the link is not valid UTF-8"),
        ("token=", "token=%FF", "parameter 'token' in the link is not valid UTF-8"),
        ("v=2", "%FF=2", "a parameter name in the link is not valid UTF-8"),
    ],
)
def test_text_that_is_not_utf8_is_refused_by_the_parameters_name(old: str, new: str, said: str) -> None:
    # It was "a parameter is not valid percent-encoded UTF-8", naming none: the account
    # name is the one a person can hold against the service's page.
    text = BASE.build()
    assert old in text
    assert said in refused(text.replace(old, new, 1)).message


def test_uri_errors_keep_their_code_and_are_not_fatal() -> None:
    error = refused("nope")
    assert not error.fatal  # a local parsing error, not a broken connection


# -- version 2: the RP's binding secret and the recoverable flag -----------------------


def test_binding_secret_and_recoverable_round_trip() -> None:
    secret = bytes(range(32))
    enrollment = replace(BASE, recoverable=True).with_binding_secret(secret)
    text = enrollment.build()
    assert "&recoverable=1&" in text + "&"
    assert "&es=" in text
    assert uri.parse(text) == enrollment
    assert uri.parse(query(recoverable="0")).recoverable is False
    assert uri.parse(query()).binding_secret is None


@pytest.mark.parametrize(
    "es",
    [
        "",
        "AAAA",
        base64.urlsafe_b64encode(bytes(31)).decode().rstrip("="),
        "A" * 43 + "=",
        "+" * 43,
        "A" * 44,
    ],
)
def test_a_binding_secret_is_32_bytes_of_base64url(es: str) -> None:
    error = refused(query(es=es))
    assert "es" in error.message


@pytest.mark.parametrize("flag", ["", "2", "true", "yes", " 1"])
def test_recoverable_is_0_or_1(flag: str) -> None:
    refused(query(recoverable=flag))
