"""Shared helpers for the aiortc test peers: loopback pinning and signaling.

Signaling modes (both peers take the same arguments):

- ``--whip URL`` / ``--whep URL``: RFC 9725. POST the offer (``application/sdp``,
  ``Authorization: Bearer TOKEN``), expect 201 + Location, DELETE it at the end.
- ``--ws URL``: Convene's WebSocket protocol (``ws://HOST:PORT/ws?token=TOKEN``).
  The first server message is ``welcome``; the peer sends ``rtc_offer`` and gets
  ``rtc_answer``; a later server ``rtc_offer`` (renegotiation) is answered with
  ``rtc_answer``. Sequenced ``event`` messages are collected.
"""

import asyncio
import json
import os
import sys
import time
from urllib.parse import urljoin

# Pin ICE to loopback before any peer connection exists (CONVENE_PEER_ADDRESS=::1 for IPv6).
import aioice.ice

PEER_ADDRESS = os.environ.get("CONVENE_PEER_ADDRESS", "127.0.0.1")
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [PEER_ADDRESS]

from aiortc import RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy  # noqa: E402


def add_signaling_args(parser):
    g = parser.add_mutually_exclusive_group(required=True)
    g.add_argument("--whip", help="WHIP endpoint URL (publisher)")
    g.add_argument("--whep", help="WHEP endpoint URL (subscriber)")
    g.add_argument("--ws", help="WebSocket URL ws://HOST:PORT/ws?token=TOKEN")
    parser.add_argument("--token", default="test", help="bearer token for WHIP/WHEP")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run, then exit")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


class HttpSignaling:
    """WHIP/WHEP: one offer, one answer, DELETE at the end."""

    def __init__(self, url, token):
        import aiohttp

        self.url = url
        self.token = token
        self.session = aiohttp.ClientSession()
        self.location = None
        self.status = None
        self.events = []

    async def connect(self, pc):
        await pc.setLocalDescription(await pc.createOffer())
        headers = {
            "Content-Type": "application/sdp",
            "Authorization": f"Bearer {self.token}",
        }
        # A cluster node that does not own the room answers 307 to its owner (RFC 9725 allows
        # it). Follow it by hand: aiohttp would drop Authorization on a cross-origin redirect.
        url = self.url
        self.redirects = []
        for _ in range(3):
            async with self.session.post(
                url, data=pc.localDescription.sdp, headers=headers, allow_redirects=False
            ) as resp:
                self.status = resp.status
                body = await resp.text()
                if resp.status in (307, 308):
                    url = urljoin(url, resp.headers["Location"])
                    self.redirects.append(url)
                    continue
                if resp.status != 201:
                    raise RuntimeError(f"POST {url}: {resp.status} {body}")
                self.location = urljoin(url, resp.headers.get("Location", ""))
                break
        else:
            raise RuntimeError(f"POST {self.url}: too many redirects {self.redirects}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    async def run(self, pc):
        # Nothing to do after the exchange: WHIP/WHEP do not renegotiate.
        await asyncio.Event().wait()

    async def close(self):
        if self.location:
            try:
                async with self.session.delete(
                    self.location, headers={"Authorization": f"Bearer {self.token}"}
                ) as resp:
                    self.delete_status = resp.status
            except Exception as e:  # noqa: BLE001
                log("DELETE failed:", e)
        await self.session.close()


class WsSignaling:
    """Convene WebSocket: rtc_offer/rtc_answer both ways, events collected."""

    def __init__(self, url):
        self.url = url
        self.ws = None
        self.welcome = None
        self.events = []
        self.renegotiations = 0
        self.answer = None

    async def connect(self, pc):
        import websockets

        self.ws = await websockets.connect(self.url, max_size=2**22)
        first = json.loads(await self.ws.recv())
        if first.get("type") != "welcome":
            raise RuntimeError(f"expected welcome, got {first}")
        self.welcome = first
        await pc.setLocalDescription(await pc.createOffer())
        await self.ws.send(json.dumps({"type": "rtc_offer", "sdp": pc.localDescription.sdp}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("type") == "rtc_answer":
                self.answer = msg["sdp"]
                await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="answer"))
                return
            await self.handle(pc, msg)

    async def handle(self, pc, msg):
        t = msg.get("type")
        if t == "rtc_offer":
            await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            await self.ws.send(json.dumps({"type": "rtc_answer", "sdp": pc.localDescription.sdp}))
            self.renegotiations += 1
        elif t == "event":
            self.events.append(msg)
        elif t == "error":
            log("server error:", msg)
            self.events.append(msg)

    async def run(self, pc):
        async for raw in self.ws:
            await self.handle(pc, json.loads(raw))

    async def close(self):
        if self.ws is not None:
            await self.ws.close()


def candidate_addresses(sdp):
    """The ``address:port`` of each host candidate in an SDP (where the server's media is)."""
    found = []
    for line in (sdp or "").splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) > 5:
                found.append(f"{parts[4]}:{parts[5]}")
    return sorted(set(found))


def parse_ice_links(values):
    """RFC 9725 section 4.4: ``Link: <turn:...>; rel="ice-server"; username=".."; credential=".."``."""
    import re

    servers = []
    for value in values:
        m = re.match(r"\s*<([^>]+)>\s*;(.*)$", value)
        if not m:
            continue
        params = dict(
            (k.lower(), v.replace('\\"', '"'))
            for k, v in re.findall(r'\s*([\w-]+)="((?:[^"\\]|\\.)*)"', m.group(2))
        )
        if params.get("rel") != "ice-server":
            continue
        servers.append(
            RTCIceServer(urls=m.group(1), username=params.get("username"), credential=params.get("credential"))
        )
    return servers


async def relay_config(url, token):
    """``OPTIONS`` the WHIP/WHEP endpoint and build a relay-only configuration from its Links."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.options(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            if resp.status != 204:
                raise RuntimeError(f"OPTIONS {url}: {resp.status}")
            servers = parse_ice_links(resp.headers.getall("Link", []))
    if not servers:
        raise RuntimeError(f"OPTIONS {url}: no ice-server Link")
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY)


def signaling_from_args(args):
    if args.ws:
        return WsSignaling(args.ws)
    return HttpSignaling(args.whip or args.whep, args.token)


async def run_for(duration, coro):
    """Runs ``coro`` until ``duration`` seconds have passed (or it ends)."""
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=duration)
    except asyncio.TimeoutError:
        pass
    finally:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):  # noqa: BLE001
            pass


def emit(result):
    print(json.dumps(result), flush=True)


def now():
    return time.monotonic()
