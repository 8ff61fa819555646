"""An aiortc publisher: synthetic VP8 video + Opus audio, counts keyframe requests.

    publisher.py (--whip URL | --ws URL) [--token T] [--duration S] [--no-audio] [--receive]

With --receive (meeting rooms) it also decodes what others publish and reports
"frames_received".

Prints one JSON line: {"connected", "plis", "pli_times", "frames_sent", ...}.
"plis" counts PLI/FIR the publisher received (aiortc forces a keyframe for each;
we count calls of RTCRtpSender._send_keyframe).
"""

import argparse
import asyncio
import fractions
import time

import common  # noqa: F401  (pins ICE to loopback)
from common import add_signaling_args, candidate_addresses, emit, log, run_for, signaling_from_args

import av
from aiortc import AudioStreamTrack, RTCPeerConnection, VideoStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender

PLI_TIMES = []
_orig_send_keyframe = RTCRtpSender._send_keyframe


def _counting_send_keyframe(self):
    PLI_TIMES.append(time.monotonic())
    return _orig_send_keyframe(self)


RTCRtpSender._send_keyframe = _counting_send_keyframe


class MovingVideo(VideoStreamTrack):
    """320x240 frames with a moving bar, 30 fps."""

    def __init__(self):
        super().__init__()
        self.n = 0
        self.w, self.h = 320, 240

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.w, self.h, "yuv420p")
        y = bytearray(self.w * self.h)
        x0 = (self.n * 4) % self.w
        for row in range(0, self.h, 2):
            start = row * self.w + x0
            y[start : start + 16] = b"\xff" * len(y[start : start + 16])
        frame.planes[0].update(bytes(y))
        frame.planes[1].update(bytes([128]) * (self.w * self.h // 4))
        frame.planes[2].update(bytes([128]) * (self.w * self.h // 4))
        frame.pts = pts
        frame.time_base = time_base
        self.n += 1
        return frame


async def main():
    p = argparse.ArgumentParser()
    add_signaling_args(p)
    p.add_argument("--no-audio", action="store_true")
    p.add_argument("--receive", action="store_true", help="also count frames received from others")
    args = p.parse_args()

    pc = RTCPeerConnection()
    sig = signaling_from_args(args)
    video = MovingVideo()
    pc.addTrack(video)
    if not args.no_audio:
        pc.addTrack(AudioStreamTrack())
    connected = asyncio.Event()
    received = {"video": 0, "audio": 0}

    async def consume(track):
        while True:
            try:
                await track.recv()
            except Exception:  # noqa: BLE001  (track ended)
                return
            received[track.kind] += 1

    @pc.on("track")
    def on_track(track):
        if args.receive:
            asyncio.ensure_future(consume(track))

    @pc.on("connectionstatechange")
    def _():
        log("publisher:", pc.connectionState)
        if pc.connectionState == "connected":
            connected.set()

    result = {"role": "publisher", "connected": False, "error": None}
    t0 = time.monotonic()

    async def session():
        await sig.connect(pc)
        await sig.run(pc)

    try:
        await run_for(args.duration, session())
        result["connected"] = connected.is_set()
    except Exception as e:  # noqa: BLE001
        result["error"] = repr(e)
    result["frames_sent"] = video.n
    result["frames_received"] = received["video"]
    result["audio_received"] = received["audio"]
    result["plis"] = len(PLI_TIMES)
    result["pli_times"] = [round(t - t0, 3) for t in PLI_TIMES]
    result["events"] = [e.get("event", e) for e in getattr(sig, "events", [])]
    result["renegotiations"] = getattr(sig, "renegotiations", 0)
    result["redirects"] = getattr(sig, "redirects", [])
    result["answer_candidates"] = candidate_addresses(getattr(sig, "answer", None) or getattr(sig, "answer_sdp", None))
    await sig.close()
    result["delete_status"] = getattr(sig, "delete_status", None)
    await pc.close()
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
