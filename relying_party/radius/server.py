"""Run the server: Redis, the user store, the SDK and the UDP endpoint, until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import redis.asyncio as aioredis
import redis.exceptions

from ..errors import BrokerUnavailable, PushAuthError, Unauthorized
from ..host.store import UserStore
from ..sdk import PushAuthClient
from .config import Config, short_secrets
from .engine import Engine
from .state import StateStore
from .udp import RadiusProtocol

log = logging.getLogger("pushauth.radius")


class StartError(Exception):
    """The server cannot start (Redis unreachable, port taken): one line for the CLI."""


async def serve(config: Config) -> None:
    redis_client = aioredis.Redis.from_url(config.redis_url)
    try:
        await redis_client.ping()
    except (redis.exceptions.RedisError, OSError) as exc:
        await redis_client.aclose()
        raise StartError(f"cannot reach Redis at {config.redis_url}: {exc}") from None
    store = UserStore(config.store)
    states = StateStore(redis_client)
    loop = asyncio.get_running_loop()
    try:
        async with PushAuthClient(
            config.broker_url, config.api_key, request_timeout=config.broker_timeout
        ) as sdk:
            protocol = RadiusProtocol(config, Engine(config, sdk, states, store), states)
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: protocol, local_addr=(config.listen, config.port)
                )
            except OSError as exc:
                raise StartError(
                    f"cannot listen on udp {config.listen}:{config.port}: {exc.strerror}"
                ) from None
            host, port = transport.get_extra_info("sockname")[:2]
            # The line tests and service managers wait for.
            print(f"pushauth-radius listening on udp {host}:{port}", flush=True)
            log.info("serving %d client(s); first factor: %s", len(config.clients), config.first_factor)
            for warning in short_secrets(config):
                log.warning("%s", warning)
            # Said now, not at the first sign-in: a refused key otherwise looks like a
            # healthy start until every user is rejected.
            probe = asyncio.create_task(_ask_broker(config, sdk))
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            try:
                await stop.wait()
            finally:
                probe.cancel()
                transport.close()
                for task in list(protocol.tasks):
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.gather(*protocol.tasks, return_exceptions=True)
                print("pushauth-radius stopping", flush=True)
    finally:
        store.close()
        await redis_client.aclose()


async def _ask_broker(config: Config, sdk: PushAuthClient) -> None:
    """One authenticated request at start (GET /v1/rp), to log what every sign-in would
    meet: a refused API key (each one rejected, outcome=config_error) or a broker that
    cannot be reached now (each one decided by when_unreachable). It serves either way."""
    try:
        rp = await sdk.rp()
    except Unauthorized as exc:
        log.error(
            "at start: the broker at %s refused the API key of broker.api_key_file (%s): every "
            "sign-in is rejected (outcome=config_error) until the key is fixed",
            config.broker_url,
            exc,
        )
    except BrokerUnavailable as exc:
        then = "rejected" if config.broker_down == "reject" else "accepted on the first factor alone"
        log.warning("at start: %s; sign-ins are %s (broker.when_unreachable) until it can be", exc, then)
    except PushAuthError as exc:
        log.warning("at start: asking the broker at %s failed: %s", config.broker_url, exc)
    else:
        log.info("broker %s: relying party %s (%s)", config.broker_url, rp.id, rp.name)
