"""An aiortc subscriber: receives, decodes and counts frames; can send PLIs.

    subscriber.py (--whep URL | --ws URL) [--token T] [--duration S]
                  [--pli-burst N --pli-at S]
    subscriber.py --whep print-offer    (prints a recvonly offer and exits)

Offers recvonly (or --direction) video + audio. With --pli-burst N it sends N PLIs for the video
stream, spread over one second starting --pli-at seconds after the first
decoded frame. Prints one JSON line: {"video_frames", "audio_frames",
"plis_sent", "first_frame_s", ...}.
"""

import argparse
import asyncio
import time

import common  # noqa: F401  (pins ICE to loopback)
from common import add_signaling_args, emit, log, relay_config, run_for, signaling_from_args

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpreceiver import RTCRtpReceiver

AUTO_PLIS = []
_orig_pli = RTCRtpReceiver._send_rtcp_pli


async def _counting_pli(self, media_ssrc):
    AUTO_PLIS.append(time.monotonic())
    return await _orig_pli(self, media_ssrc)


RTCRtpReceiver._send_rtcp_pli = _counting_pli


async def main():
    p = argparse.ArgumentParser()
    add_signaling_args(p)
    p.add_argument("--pli-burst", type=int, default=0)
    p.add_argument("--pli-at", type=float, default=2.0)
    p.add_argument("--video-slots", type=int, default=1)
    p.add_argument("--audio-slots", type=int, default=1)
    p.add_argument("--relay", action="store_true", help="relay only, with the TURN servers from OPTIONS")
    p.add_argument("--direction", default="recvonly", help="the transceivers' direction (sendrecv: as some WHEP players offer)")
    args = p.parse_args()

    config = await relay_config(args.whep, args.token) if args.relay else None
    pc = RTCPeerConnection(configuration=config)
    for _ in range(args.video_slots):
        pc.addTransceiver("video", direction=args.direction)
    for _ in range(args.audio_slots):
        pc.addTransceiver("audio", direction=args.direction)
    if args.whep == "print-offer":
        # Only print a real client offer (for tests that POST it themselves).
        await pc.setLocalDescription(await pc.createOffer())
        emit({"offer": pc.localDescription.sdp})
        await pc.close()
        return
    sig = signaling_from_args(args)

    t0 = time.monotonic()
    counts = {"video": 0, "audio": 0}
    tracks = []
    first_video = asyncio.Event()
    first_frame_at = [None]
    sizes = set()

    async def consume(track, receiver):
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            counts[track.kind] += 1
            if track.kind == "video":
                sizes.add((frame.width, frame.height))
                if not first_video.is_set():
                    first_frame_at[0] = time.monotonic() - t0
                    first_video.set()

    @pc.on("track")
    def on_track(track):
        receiver = next((t.receiver for t in pc.getTransceivers() if t.receiver.track is track), None)
        log("subscriber: track", track.kind, track.id)
        tracks.append({"kind": track.kind, "id": track.id})
        asyncio.ensure_future(consume(track, receiver))

    @pc.on("connectionstatechange")
    def _():
        log("subscriber:", pc.connectionState)

    plis_sent = []

    async def pli_burst():
        if args.pli_burst <= 0:
            return
        await first_video.wait()
        await asyncio.sleep(args.pli_at)
        receivers = [t.receiver for t in pc.getTransceivers() if t.kind == "video"]
        for i in range(args.pli_burst):
            for r in receivers:
                for s in r.getSynchronizationSources():
                    await _orig_pli(r, s.source)
                    plis_sent.append(round(time.monotonic() - t0, 3))
            await asyncio.sleep(1.0 / args.pli_burst)

    result = {"role": "subscriber", "error": None}

    async def session():
        await sig.connect(pc)
        await asyncio.gather(sig.run(pc), pli_burst())

    try:
        await run_for(args.duration, session())
    except Exception as e:  # noqa: BLE001
        result["error"] = repr(e)
    result.update(
        {
            "connected": pc.connectionState == "connected",
            "video_frames": counts["video"],
            "audio_frames": counts["audio"],
            "first_frame_s": first_frame_at[0] and round(first_frame_at[0], 3),
            "video_sizes": sorted(sizes),
            "tracks": tracks,
            "plis_sent": len(plis_sent),
            "pli_sent_times": plis_sent,
            "auto_plis": len(AUTO_PLIS),
            "renegotiations": getattr(sig, "renegotiations", 0),
            "redirects": getattr(sig, "redirects", []),
            "events": [e.get("event", e) for e in getattr(sig, "events", [])],
            "welcome_tracks": ((getattr(sig, "welcome", None) or {}).get("snapshot") or {}).get("tracks", []),
        }
    )
    await sig.close()
    result["delete_status"] = getattr(sig, "delete_status", None)
    await pc.close()
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
