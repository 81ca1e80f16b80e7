"""Web Push wake-ups (docs/protocol.md, appendix A) from a real broker (`serve --push-key`)
to a local push service that stands in for the browsers' (which this machine cannot
reach): a device subscribes over its WebSocket, goes away, and the next challenge
reaches it as one push message that the test decrypts with the subscription's own keys
(RFC 8291, http_ece) and whose VAPID signature (RFC 8292) it checks. The payload says
only that a request is waiting: no number, no context, no ids.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import http_ece
import pytest
import pytest_asyncio
import redis
import websockets
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from multidict import CIMultiDict
from shared_broker import new_rp
from support import BrokerProcess, RedisServer, free_port, wait_until
from support.metrics import scrape, value
from webapp_world import Phone, PhoneMaker, enrolled

from broker.webpush import WAKE_PAYLOAD
from protocol import SUBPROTOCOLS, signing
from protocol.codec import encode
from protocol.frames import Challenge, Error, PushSubscribe, PushSubscribed
from protocol.session import ClientSession
from protocol.uri import parse
from relying_party.sdk import PushAuthClient

pytestmark = pytest.mark.asyncio(loop_scope="module")
FULL_CHROMIUM = True  # Web Push: the headless shell has no push service client
SUBJECT = "mailto:ops@contoso.example"
CONTEXT = {"app": "Payroll", "ip": "203.0.113.9", "location": "Zürich, CH", "browser": "Firefox 128"}


@pytest.fixture(scope="module")
def push_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def push_broker(tmp_path_factory: pytest.TempPathFactory, push_port: int) -> Iterator[BrokerProcess]:
    base = tmp_path_factory.mktemp("webpush")
    metrics_port = free_port()
    with RedisServer(base / "redis") as redis_server:
        node = BrokerProcess(
            log_dir=base / "logs",
            redis_url=redis_server.url,
            node="push",
            extra_args=[
                "--push-key", str(base / "vapid.pem"),
                "--push-subject", SUBJECT,
                "--push-service", f"http://127.0.0.1:{push_port}",
                "--webapp",
                "--metrics-port", str(metrics_port),
            ],
        ).start()  # fmt: skip
        node.vapid_pem = base / "vapid.pem"  # type: ignore[attr-defined]
        node.metrics_port = metrics_port  # type: ignore[attr-defined]
        yield node
        node.cleanup()


class PushService:
    """A push service on loopback: keeps each message it is sent, answers 201."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[tuple[str, CIMultiDict[str], bytes]] = asyncio.Queue()

    async def handle(self, request: web.Request) -> web.Response:
        await self.messages.put((request.path, request.headers.copy(), await request.read()))
        return web.Response(status=201)


@pytest_asyncio.fixture(loop_scope="module")
async def push_service(push_port: int) -> AsyncIterator[PushService]:
    service = PushService()
    app = web.Application()
    app.router.add_post("/push/{id}", service.handle)
    server = TestServer(app, host="127.0.0.1", port=push_port)
    await server.start_server()
    yield service
    await server.close()


class Device:
    """A device over the real WebSocket, with the Python protocol core."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = ClientSession()
        self.ws: Any = None

    async def __aenter__(self) -> Device:
        self.ws = await websockets.connect(self.url, subprotocols=list(SUBPROTOCOLS))
        self.session.receive(await self.ws.recv())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def send(self, frame: Any) -> None:
        await self.ws.send(frame if isinstance(frame, bytes) else encode(frame))

    async def next(self, kind: type) -> Any:
        while True:
            frame = self.session.receive(await asyncio.wait_for(self.ws.recv(), 10))
            if isinstance(frame, kind | Error):
                return frame


def subscription_keys() -> tuple[ec.EllipticCurvePrivateKey, bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return key, public, secrets.token_bytes(16)


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def wakeups(broker: BrokerProcess, outcome: str) -> float:
    """The broker's count of Web Push decisions with this outcome (`/metrics`)."""
    return value(scrape(broker.metrics_port), "pushauth_webpush_wakeups_total", outcome=outcome)  # type: ignore[attr-defined]


def check_vapid(header: str, public_key: bytes, audience: str) -> None:
    """`Authorization: vapid t=<JWT ES256>, k=<public key>` (RFC 8292)."""
    scheme, _, params = header.partition(" ")
    assert scheme == "vapid"
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    assert b64url_decode(fields["k"]) == public_key
    head, claims, sig = fields["t"].split(".")
    raw = b64url_decode(sig)
    der = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
    key.verify(der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
    body = json.loads(b64url_decode(claims))
    assert body["aud"] == audience and body["sub"] == SUBJECT


async def test_a_closed_device_is_woken_by_a_push_that_says_only_that_a_request_waits(
    push_broker: BrokerProcess, push_service: PushService, push_port: int
) -> None:
    created = await new_rp(push_broker, "Contoso Portal")
    async with PushAuthClient(push_broker.http_url, created["api_key"]) as rp:
        enrollment = await rp.create_enrollment("alice", "alice@contoso.example")
        link = parse(enrollment.uri or "")
        seed = signing.new_seed()
        async with Device(push_broker.ws_url) as device:
            await device.send(
                device.session.enroll_frame(
                    rid=1,
                    token=link.token,
                    seed=seed,
                    name="Phone",
                    rp=link.rp,
                    binding_secret=link.binding_secret,
                )
            )
            cid = (await device.next(object)).cid
            await device.send(device.session.authenticate_frame({}))
            await rp.wait_enrollment(enrollment, timeout=10)
            await rp.confirm_credential(cid)

            # The broker's key first (no subscription yet), then the subscription.
            await device.send(PushSubscribe(rid=2, cids=(cid,), endpoint=None, p256dh=None, auth=None))
            answer = await device.next(PushSubscribed)
            assert isinstance(answer, PushSubscribed) and answer.cids == ()
            vapid = serialization.load_pem_private_key(push_broker.vapid_pem.read_bytes(), None)  # type: ignore[attr-defined]
            vapid_public = vapid.public_key().public_bytes(  # type: ignore[union-attr]
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            assert answer.key == vapid_public
            # A push service the broker does not list is refused: it never POSTs anywhere.
            key, p256dh, auth = subscription_keys()
            await device.send(
                PushSubscribe(rid=3, cids=(cid,), endpoint="https://evil.example/x", p256dh=p256dh, auth=auth)
            )
            refused = await device.next(PushSubscribed)
            assert (
                isinstance(refused, Error) and refused.code == "push_service_refused" and refused.ref == "3"
            )
            endpoint = f"http://127.0.0.1:{push_port}/push/phone1"
            await device.send(PushSubscribe(rid=4, cids=(cid,), endpoint=endpoint, p256dh=p256dh, auth=auth))
            subscribed = await device.next(PushSubscribed)
            assert isinstance(subscribed, PushSubscribed) and subscribed.cids == (cid,)

            # Connected: the request comes over the socket, and no push is sent. (Presence
            # is written to Redis by a task of its own: wait until it is there, as the
            # offline half below waits until it is gone.)
            store = redis.Redis.from_url(push_broker.redis_url or "")
            try:
                wait_until(lambda: store.hlen(f"pa:wp:live:{cid}") == 1, message="the connection recorded")
            finally:
                store.close()
            connected_before = wakeups(push_broker, "connected")
            online = await rp.create_challenge("alice", CONTEXT, ttl=30)
            frame = await device.next(Challenge)
            assert isinstance(frame, Challenge) and frame.ch == online.id
            # The push decision is the broker's own task, after the creation: the device
            # stays connected until it is made (closing first would make it a push).
            await asyncio.to_thread(
                wait_until,
                lambda: wakeups(push_broker, "connected") == connected_before + 1,
                message="the broker's decision not to push the connected device",
            )
            assert push_service.messages.empty()

        # Closed: once the broker sees the connection gone, the next request is a push.
        # (a Redis state: the node's presence entry for the credential is removed on close).
        store = redis.Redis.from_url(push_broker.redis_url or "")
        try:
            wait_until(
                lambda: store.hlen(f"pa:wp:live:{cid}") == 0, message="the closed connection forgotten"
            )
        finally:
            store.close()
        sent_before = wakeups(push_broker, "sent")
        offline = await rp.create_challenge("alice", CONTEXT, ttl=45)
        path, headers, body = await asyncio.wait_for(push_service.messages.get(), 10)
        await asyncio.to_thread(
            wait_until, lambda: wakeups(push_broker, "sent") == sent_before + 1, message="the push counted"
        )
    assert path == "/push/phone1" and push_service.messages.empty()  # one message, for the second request
    assert (
        headers["TTL"] == "45" and headers["Content-Encoding"] == "aes128gcm" and headers["Urgency"] == "high"
    )
    check_vapid(headers["Authorization"], vapid_public, f"http://127.0.0.1:{push_port}")
    plain = http_ece.decrypt(body, private_key=key, auth_secret=auth, version="aes128gcm")
    assert plain == WAKE_PAYLOAD
    text = plain.decode()
    assert not any(ch.isdigit() for ch in text)  # no number
    for secret in (offline.id, online.id, cid, "alice", "Contoso", *CONTEXT.values()):
        assert secret not in text
    assert json.loads(text) == {"t": "waiting", "text": "A sign-in request is waiting"}


async def offered(push_broker: BrokerProcess, phones: PhoneMaker) -> Phone:
    """A phone with alice's account at a broker with push, offering to turn
    notifications on."""
    created = await new_rp(push_broker, "Contoso Portal")
    phone = await phones(push_broker.http_url + "/app/")
    async with PushAuthClient(push_broker.http_url, created["api_key"]) as rp:
        await enrolled(rp, phone)
    await phone.page.locator("#push-note[data-state='offered']").wait_for()
    return phone


async def test_the_app_offers_notifications_and_its_worker_shows_the_wake_up(
    push_broker: BrokerProcess, phones: PhoneMaker
) -> None:
    """The app on a broker with push: it offers to turn notifications on (without push it
    says to keep it open: the other webapp tests). Chromium here reaches no push service,
    so subscribing fails and the app says so; the service worker's handling of a push is
    shown by delivering one through DevTools (ServiceWorker.deliverPushMessage)."""
    phone = await offered(push_broker, phones)
    page = phone.page
    await page.get_by_role("button", name="Turn on notifications").wait_for()
    await phone.shot("18-notifications-offered")
    await phone.axe_clean("the home screen offering notifications")

    await phone.context.grant_permissions(["notifications"], origin=phone.url)
    await page.get_by_role("button", name="Turn on notifications").tap()
    await page.locator("#push-note[data-state='failed']").wait_for()
    assert "keep this app open" in await page.locator("#push-text").inner_text()
    await phone.shot("19-notifications-failed-here")

    cdp = await phone.context.new_cdp_session(page)
    registrations: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    cdp.on("ServiceWorker.workerRegistrationUpdated", lambda e: registrations.put_nowait(e))
    await cdp.send("ServiceWorker.enable")
    registration = (await asyncio.wait_for(registrations.get(), 10))["registrations"][0]
    await page.evaluate(
        """() => { window.pushTold = new Promise((resolve) => navigator.serviceWorker.addEventListener(
             'message', (e) => resolve(e.data), {once: true})); }"""
    )
    await cdp.send(
        "ServiceWorker.deliverPushMessage",
        {
            "origin": push_broker.http_url,
            "registrationId": registration["registrationId"],
            "data": WAKE_PAYLOAD.decode(),
        },
    )
    # The worker showed the notification, then told the open page (which reconnects).
    assert await asyncio.wait_for(page.evaluate("window.pushTold"), 10) == {"t": "push"}
    shown = await page.evaluate(
        "async () => (await (await navigator.serviceWorker.ready).getNotifications()).map((n) => n.body)"
    )
    assert shown == ["A sign-in request is waiting"]


async def test_an_account_removed_while_the_app_was_closed_does_not_hide_the_notifications_offer(
    push_broker: BrokerProcess, phones: PhoneMaker
) -> None:
    """One of two accounts is removed by its service while the app is closed. When the app
    opens, the broker refuses that account's key and the app drops it; the other account
    is still offered notifications. Before, the app asked for the broker's push key for
    both accounts, took the refusal for the removed one as "this server sends no push",
    and said "Push notifications are not set up on this server" until it was reopened."""
    created = await new_rp(push_broker, "Contoso Portal")
    phone = await phones(push_broker.http_url + "/app/")
    async with PushAuthClient(push_broker.http_url, created["api_key"]) as rp:
        await enrolled(rp, phone, "alice")
        bob = await enrolled(rp, phone, "bob")
        await phone.page.locator("#push-note[data-state='offered']").wait_for()
        await phone.page.close()
        await rp.revoke_credential(bob["cid"])
    page = await phone.open()
    await page.locator("#accounts li").nth(1).wait_for(state="detached")
    assert await page.locator("#accounts li").count() == 1
    await page.locator("#push-note:not([hidden])").wait_for()
    assert await page.locator("#push-note").get_attribute("data-state") == "offered"
    await page.get_by_role("button", name="Turn on notifications").wait_for()


async def test_no_notifications_are_offered_once_the_last_account_is_removed(
    push_broker: BrokerProcess, phones: PhoneMaker
) -> None:
    """Notifications are offered for the accounts of a server with push; once the last
    one is removed on this phone, the app has nothing to be woken for and says nothing
    about it, as before the first account was added (before, "Turn on notifications"
    stayed on the empty home screen)."""
    phone = await offered(push_broker, phones)
    page = phone.page
    await page.get_by_role("button", name="Manage alice@contoso.example").tap()
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name="Remove account").tap()
    await phone.toast("was removed from this phone")
    await page.locator("#empty").wait_for()
    await page.locator("#push-note").wait_for(state="hidden")
