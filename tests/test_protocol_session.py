"""protocol.session: both ends of a device connection, driven in memory.

The broker and the agent are shells around these two state machines: what they
accept in which state, and whose proofs they check, is decided here.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.protocol_samples import CHALLENGE, SAMPLES, SEED_A, SEED_B, TOKEN

from protocol import codec, signing
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import (
    Answer,
    AnswerResult,
    Authenticate,
    Cancel,
    Challenge,
    Enroll,
    Enrolled,
    Error,
    Frame,
    Hello,
    PushSubscribed,
    Revoke,
    Revoked,
    Sender,
    Welcome,
)
from protocol.session import ClientSession, ClientState, ServerSession, ServerState, sign_answer

NOW = 1_767_225_600_000
BROKER_FRAMES = [frame for frame in SAMPLES.values() if frame.SENDER is Sender.BROKER]
DEVICE_FRAMES = [frame for frame in SAMPLES.values() if frame.SENDER is Sender.DEVICE]
PK_A = signing.public_key(SEED_A)
PK_B = signing.public_key(SEED_B)


def code_of(session: ServerSession | ClientSession, frame: Frame | bytes) -> ErrorCode:
    data = frame if isinstance(frame, bytes) else codec.encode(frame)
    with pytest.raises(ProtocolError) as info:
        session.receive(data)
    return info.value.code


def server() -> ServerSession:
    return ServerSession(node="node-a", now_ms=NOW)


def connected_client(srv: ServerSession) -> ClientSession:
    client = ClientSession()
    client.receive(codec.encode(srv.hello_frame()))
    return client


def handshake(seeds: dict[str, bytes]) -> tuple[ServerSession, ClientSession]:
    """hello -> authenticate -> welcome, checking every proof as the broker does."""
    srv = server()
    client = connected_client(srv)
    frame = srv.receive(client.authenticate_frame(seeds))
    assert isinstance(frame, Authenticate)
    keys = {cid: signing.public_key(seed) for cid, seed in seeds.items()}
    accepted = []
    for cred in frame.creds:
        srv.verify_auth(cred["cid"], keys[cred["cid"]], cred["sig"])
        accepted.append(cred["cid"])
    srv.authenticated(accepted)
    client.receive(codec.encode(Welcome(accepted=tuple(accepted), rejected=(), pending=0)))
    return srv, client


# -- the broker's side --------------------------------------------------------------


def test_hello_carries_a_fresh_nonce_and_the_limits() -> None:
    srv = server()
    hello = srv.hello_frame()
    assert hello == Hello(nonce=srv.nonce, time=NOW, max_frame=codec.MAX_FRAME_SIZE, node="node-a")
    assert len(hello.nonce) == 32
    assert srv.state is ServerState.AWAITING_AUTH
    assert len({server().nonce for _ in range(50)}) == 50  # never reused across connections


@pytest.mark.parametrize("frame", BROKER_FRAMES, ids=[f.TYPE for f in BROKER_FRAMES])
def test_broker_refuses_frames_that_only_it_sends(frame: Frame) -> None:
    assert code_of(server(), frame) is ErrorCode.UNEXPECTED_FRAME
    srv, _ = handshake({"cred_A1": SEED_A})
    assert code_of(srv, frame) is ErrorCode.UNEXPECTED_FRAME


@pytest.mark.parametrize("frame", [SAMPLES[Answer], SAMPLES[Revoke]], ids=["answer", "revoke"])
def test_answer_and_revoke_before_authenticate(frame: Frame) -> None:
    srv = server()
    assert code_of(srv, frame) is ErrorCode.NOT_AUTHENTICATED
    assert ProtocolError(ErrorCode.NOT_AUTHENTICATED, "").close_code == 4401
    assert srv.state is ServerState.AWAITING_AUTH


def test_authenticate_then_ready() -> None:
    srv, client = handshake({"cred_A1": SEED_A, "cred_B1": SEED_B})
    assert srv.state is ServerState.READY
    assert srv.credentials == {"cred_A1", "cred_B1"}
    assert client.state is ClientState.READY
    assert client.credentials == {"cred_A1", "cred_B1"}
    assert isinstance(srv.receive(codec.encode(SAMPLES[Answer])), Answer)
    assert isinstance(srv.receive(codec.encode(SAMPLES[Revoke])), Revoke)


def test_authenticate_with_no_credentials_is_allowed() -> None:
    # A device whose accounts were all removed still connects (to enroll, say).
    srv, client = handshake({})
    assert srv.state is ServerState.READY
    assert srv.credentials == set()
    assert client.state is ClientState.READY


def test_authenticate_twice() -> None:
    srv, client = handshake({"cred_A1": SEED_A})
    assert code_of(srv, client.authenticate_frame({"cred_A1": SEED_A})) is ErrorCode.UNEXPECTED_FRAME


def test_enroll_is_allowed_before_and_after_authenticate() -> None:
    srv = server()
    client = connected_client(srv)
    data = client.enroll_frame(rid=1, token=TOKEN, seed=SEED_A, name="phone")
    frame = srv.receive(data)
    assert isinstance(frame, Enroll)
    assert frame.pk == PK_A
    srv.verify_enroll(frame)
    srv.enrolled("cred_new")
    srv.check_owned("cred_new")
    # Enrolling proves the new key but is not `authenticate`: answers still wait for it.
    assert srv.state is ServerState.AWAITING_AUTH
    assert code_of(srv, SAMPLES[Answer]) is ErrorCode.NOT_AUTHENTICATED
    srv.authenticated([])
    assert isinstance(srv.receive(codec.encode(SAMPLES[Answer])), Answer)
    again = srv.receive(client.enroll_frame(rid=2, token=TOKEN, seed=SEED_B, name="phone"))
    assert isinstance(again, Enroll)
    srv.verify_enroll(again)


def test_auth_proofs_are_checked() -> None:
    srv = server()
    client = connected_client(srv)
    frame = srv.receive(client.authenticate_frame({"cred_A1": SEED_A}))
    assert isinstance(frame, Authenticate)
    sig = frame.creds[0]["sig"]
    srv.verify_auth("cred_A1", PK_A, sig)
    for cid, key in [("cred_A1", PK_B), ("cred_A2", PK_A)]:  # another key; another credential
        with pytest.raises(ProtocolError) as info:
            srv.verify_auth(cid, key, sig)
        assert info.value.code is ErrorCode.BAD_SIGNATURE


def test_a_proof_from_another_connection_is_refused() -> None:
    # Replay: a proof recorded on one connection does not open another (fresh nonce).
    first, second = server(), server()
    proof = connected_client(first).authenticate_frame({"cred_A1": SEED_A})
    frame = second.receive(proof)
    assert isinstance(frame, Authenticate)
    with pytest.raises(ProtocolError) as info:
        second.verify_auth("cred_A1", PK_A, frame.creds[0]["sig"])
    assert info.value.code is ErrorCode.BAD_SIGNATURE
    enroll = second.receive(connected_client(first).enroll_frame(rid=1, token=TOKEN, seed=SEED_A, name="p"))
    assert isinstance(enroll, Enroll)
    with pytest.raises(ProtocolError) as info:
        second.verify_enroll(enroll)
    assert info.value.code is ErrorCode.BAD_SIGNATURE


@pytest.mark.parametrize(
    "change",
    [
        {"token": TOKEN + "x"},
        {"name": "other phone"},
        {"pk": signing.public_key(SEED_B)},  # someone else's key with our proof
        {"sig": bytes(64)},
    ],
)
def test_enroll_proof_covers_token_key_and_name(change: dict[str, object]) -> None:
    srv = server()
    frame = srv.receive(connected_client(srv).enroll_frame(rid=1, token=TOKEN, seed=SEED_A, name="phone"))
    assert isinstance(frame, Enroll)
    with pytest.raises(ProtocolError) as info:
        srv.verify_enroll(replace(frame, **change))  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.BAD_SIGNATURE


def test_check_owned() -> None:
    srv, _ = handshake({"cred_A1": SEED_A})
    srv.check_owned("cred_A1")
    with pytest.raises(ProtocolError) as info:
        srv.check_owned("cred_B1", ref="ch_1")
    assert info.value.code is ErrorCode.UNKNOWN_CREDENTIAL
    assert info.value.ref == "ch_1"
    assert not info.value.fatal  # refused with an error frame; the connection stays
    srv.revoked("cred_A1")
    with pytest.raises(ProtocolError):
        srv.check_owned("cred_A1")
    srv.revoked("cred_never")  # revoking what is not there is harmless


def test_a_credential_revoked_on_this_connection_is_told_apart() -> None:
    """A frame naming a credential revoked while it was authenticated here is refused
    with credential_revoked (what happened to it); one never proven here, with
    unknown_credential. Neither closes the connection."""
    srv, _ = handshake({"cred_A1": SEED_A})
    srv.revoked("cred_A1")
    srv.revoked("cred_never")
    with pytest.raises(ProtocolError) as info:
        srv.check_owned("cred_A1", ref="3")
    assert (info.value.code, info.value.ref, info.value.fatal) == (ErrorCode.CREDENTIAL_REVOKED, "3", False)
    with pytest.raises(ProtocolError) as info:
        srv.check_owned("cred_never")
    assert info.value.code is ErrorCode.UNKNOWN_CREDENTIAL


@pytest.mark.parametrize(("decision", "number"), [("deny", "42"), ("fraud", "42")])
def test_an_answer_of_the_wrong_shape_is_refused_at_decode(decision: str, number: str) -> None:
    """The shape of an answer that needs no state is checked before anything else,
    even for a credential this connection never proved: fatal invalid_field. (An
    approval without a number needs its challenge: the broker refuses it, as fatally,
    for one with number matching; test_broker_device_ws.py.)"""
    srv, _ = handshake({"cred_A1": SEED_A})
    bad = replace(SAMPLES[Answer], cid="cred_nobody", decision=decision, number=number)
    with pytest.raises(ProtocolError) as info:
        srv.receive(codec.encode(bad))
    assert (info.value.code, info.value.fatal, info.value.close_code) == (ErrorCode.INVALID_FIELD, True, 4400)


def test_proven_once_a_credential_is_authenticated_or_enrolled() -> None:
    """`proven` ends the authentication deadline; an authenticate whose credentials
    were all refused does not set it, and losing the credential does not unset it."""
    srv = server()
    srv.authenticated([])
    assert srv.state is ServerState.READY and not srv.proven
    srv.enrolled("cred_new")
    assert srv.proven
    srv.revoked("cred_new")
    assert srv.proven
    srv2, _ = handshake({"cred_A1": SEED_A})
    assert srv2.proven


def test_server_frame_size_limit() -> None:
    srv = ServerSession(node="n", now_ms=NOW, max_frame=1024)
    assert srv.hello_frame().max_frame == 1024
    big = Authenticate(creds=tuple({"cid": f"c{i}", "sig": bytes(64)} for i in range(20)))
    assert code_of(srv, big) is ErrorCode.FRAME_TOO_LARGE


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\xc1", ErrorCode.MALFORMED),
        (b"\x81\xa1v\x03", ErrorCode.UNSUPPORTED_VERSION),
        (b"\x81\xa1v\x01", ErrorCode.UNSUPPORTED_VERSION),  # a version 1 frame
        (b"\x82\xa1v\x02\xa1t\xa4nope", ErrorCode.UNKNOWN_FRAME),
    ],
)
def test_structural_errors_reach_both_sides(data: bytes, code: ErrorCode) -> None:
    assert code_of(server(), data) is code
    assert code_of(ClientSession(), data) is code


# -- the device's side ------------------------------------------------------------


@pytest.mark.parametrize("frame", [f for f in BROKER_FRAMES if f.TYPE != "hello"], ids=lambda f: f.TYPE)
def test_the_first_frame_must_be_hello(frame: Frame) -> None:
    client = ClientSession()
    assert code_of(client, frame) is ErrorCode.UNEXPECTED_FRAME
    assert client.state is ClientState.AWAITING_HELLO
    assert client.nonce is None


def test_hello_sets_the_nonce() -> None:
    srv = server()
    client = connected_client(srv)
    assert client.state is ClientState.CONNECTED
    assert client.nonce == srv.nonce
    assert client.hello == srv.hello_frame()


def test_hello_twice() -> None:
    srv = server()
    client = connected_client(srv)
    assert code_of(client, srv.hello_frame()) is ErrorCode.UNEXPECTED_FRAME
    _, ready = handshake({"cred_A1": SEED_A})
    assert code_of(ready, SAMPLES[Hello]) is ErrorCode.UNEXPECTED_FRAME


def test_challenge_before_welcome() -> None:
    client = connected_client(server())
    assert code_of(client, CHALLENGE) is ErrorCode.UNEXPECTED_FRAME
    client.receive(codec.encode(Welcome(accepted=("cred_A1",), rejected=(), pending=1)))
    assert client.receive(codec.encode(CHALLENGE)) == CHALLENGE


@pytest.mark.parametrize("frame", DEVICE_FRAMES, ids=[f.TYPE for f in DEVICE_FRAMES])
def test_device_refuses_frames_that_devices_send(frame: Frame) -> None:
    assert code_of(ClientSession(), frame) is ErrorCode.UNEXPECTED_FRAME
    _, client = handshake({"cred_A1": SEED_A})
    error = code_of(client, frame)
    assert error is ErrorCode.UNEXPECTED_FRAME


@pytest.mark.parametrize(
    "frame",
    [
        SAMPLES[Enrolled],
        SAMPLES[Error],
        Revoked(cid="cred_A1", reason="removed_by_rp", rid=None),
        SAMPLES[PushSubscribed],
    ],
    ids=["enrolled", "error", "revoked", "push_subscribed"],
)
def test_replies_to_enroll_may_come_before_welcome(frame: Frame) -> None:
    client = connected_client(server())
    assert client.receive(codec.encode(frame)) == frame
    assert client.state is ClientState.CONNECTED


def test_the_client_counts_an_enrolled_credential_as_its_own() -> None:
    """The new credential is authenticated on this connection (docs/protocol.md,
    `enrolled`): a `cancel.by` naming it is this connection's own credential."""
    client = connected_client(server())
    client.receive(codec.encode(SAMPLES[Enrolled]))
    assert client.credentials == {SAMPLES[Enrolled].cid}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "frame",
    [CHALLENGE, SAMPLES[Cancel], SAMPLES[AnswerResult], SAMPLES[Revoked], SAMPLES[Error]],
    ids=lambda f: f.TYPE,
)
def test_broker_frames_after_welcome(frame: Frame) -> None:
    _, client = handshake({"cred_A1": SEED_A})
    assert client.receive(codec.encode(frame)) == frame
    assert client.state is ClientState.READY


def test_frames_cannot_be_built_before_hello() -> None:
    client = ClientSession()
    with pytest.raises(RuntimeError, match="no hello"):
        client.authenticate_frame({"cred_A1": SEED_A})
    with pytest.raises(RuntimeError, match="no hello"):
        client.enroll_frame(rid=1, token=TOKEN, seed=SEED_A, name="phone")


def test_client_frame_size_limit() -> None:
    client = ClientSession(max_frame=1024)
    big = replace(CHALLENGE, ctx={f"k{i}": "v" * 200 for i in range(10)})
    client.receive(codec.encode(SAMPLES[Hello]))
    client.receive(codec.encode(SAMPLES[Welcome]))
    assert code_of(client, big) is ErrorCode.FRAME_TOO_LARGE


# -- a whole exchange -----------------------------------------------------------------


def test_challenge_answered_end_to_end_in_memory() -> None:
    srv, client = handshake({"cred_A1": SEED_A})
    challenge = client.receive(codec.encode(replace(CHALLENGE, cid="cred_A1")))
    assert isinstance(challenge, Challenge)
    answer = sign_answer(challenge, seed=SEED_A, decision="approve", number="42", ts=NOW + 5)
    received = srv.receive(codec.encode(answer))
    assert received == answer
    assert isinstance(received, Answer)
    srv.check_owned(received.cid, ref=received.ch)
    # The broker checks the signature over the challenge as it stored it.
    message = signing.answer_bytes(
        rp=CHALLENGE.rp,
        ch=CHALLENGE.ch,
        nonce=CHALLENGE.nonce,
        rp_nonce=CHALLENGE.rp_nonce,
        cid="cred_A1",
        decision=received.decision,
        number=received.number,
        ts=received.ts,
        ctx_hash=signing.context_hash(CHALLENGE.ctx),
    )
    signing.verify(PK_A, message, received.sig)


# -- random sequences ---------------------------------------------------------------------

ANY_FRAME = st.sampled_from([codec.encode(frame) for frame in SAMPLES.values()]) | st.binary(max_size=40)
CLIENT_ORDER = [ClientState.AWAITING_HELLO, ClientState.CONNECTED, ClientState.READY]


@settings(max_examples=400, deadline=None)
@given(st.lists(ANY_FRAME, max_size=12))
def test_client_session_under_any_sequence(sequence: list[bytes]) -> None:
    client = ClientSession()
    for data in sequence:
        before = client.state
        try:
            frame = client.receive(data)
        except ProtocolError:
            assert client.state is before  # a refused frame changes nothing
            continue
        assert frame.SENDER is Sender.BROKER
        assert CLIENT_ORDER.index(client.state) >= CLIENT_ORDER.index(before)  # never goes back
        if isinstance(frame, Challenge):
            assert before is ClientState.READY
        if before is ClientState.AWAITING_HELLO:
            assert isinstance(frame, Hello)
            assert client.nonce == frame.nonce


@settings(max_examples=400, deadline=None)
@given(st.lists(ANY_FRAME, max_size=12), st.booleans())
def test_server_session_under_any_sequence(sequence: list[bytes], authenticated: bool) -> None:
    srv = server()
    if authenticated:
        srv.authenticated(["cred_A1"])
    state, credentials = srv.state, set(srv.credentials)
    for data in sequence:
        try:
            frame = srv.receive(data)
        except ProtocolError:
            continue
        assert frame.SENDER is Sender.DEVICE
        if isinstance(frame, Answer | Revoke):
            assert authenticated
        if isinstance(frame, Authenticate):
            assert not authenticated
        # receive() only reads: the shell moves the state once it has checked proofs.
        assert (srv.state, srv.credentials) == (state, credentials)
