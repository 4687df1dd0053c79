#!/usr/bin/python3
"""An independent WebRTC client for the appliance, built on aiortc.

It publishes a synthetic camera (a moving bar, VP8) and microphone (a
440 Hz tone, Opus) over WHIP with one participant's join token, subscribes
over WHEP with another participant's token in the same consult, and counts
the decoded video and audio frames that come back through the appliance.

Tokens come from the environment (SWITCHBOARD_PUBLISH_TOKEN,
SWITCHBOARD_SUBSCRIBE_TOKEN), not the command line, so they do not show in
process listings. The last line of stdout is a JSON summary; the exit status
is 0 only if at least --min-video-frames and --min-audio-frames arrived
within --timeout seconds. Both legs are deleted before exit.

Run with Debian's interpreter (python3-aiortc): /usr/bin/python3.
"""

import argparse
import asyncio
import fractions
import json
import logging
import math
import os
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import av
import numpy
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)

AUDIO_RATE = 48000
AUDIO_PTIME = 0.02


class MovingBar(VideoStreamTrack):
    """A 30 fps test picture whose content changes every frame."""

    def __init__(self, width, height):
        super().__init__()
        self.width = width
        self.height = height
        self.frames = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        img = numpy.full((self.height, self.width, 3), 40, dtype=numpy.uint8)
        x = (self.frames * 4) % self.width
        img[:, x : x + 16] = (230, 200, 30)
        img[: self.height // 8, :, 2] = self.frames % 256
        self.frames += 1
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = pts
        frame.time_base = time_base
        return frame


class Tone(MediaStreamTrack):
    """A 440 Hz mono tone in 20 ms frames, paced in real time."""

    kind = "audio"

    def __init__(self):
        super().__init__()
        self.samples = 0
        self.start = None

    async def recv(self):
        per_frame = int(AUDIO_RATE * AUDIO_PTIME)
        if self.start is None:
            self.start = time.monotonic()
        else:
            due = self.start + self.samples / AUDIO_RATE
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        t = (numpy.arange(per_frame) + self.samples) / AUDIO_RATE
        pcm = (8000 * numpy.sin(2 * math.pi * 440 * t)).astype(numpy.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self.samples
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self.samples += per_frame
        return frame


class DropCounter(logging.Handler):
    """Counts the datagrams aiortc's transport discards, by reason (it
    reports them only as debug log lines)."""

    REASONS = ("SRTP unprotect failed", "RTP parsing failed", "RTCP parsing failed")

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.counts = {}
        self.failures = []

    def emit(self, record):
        message = record.getMessage()
        for reason in self.REASONS:
            if reason in message:
                self.counts[reason] = self.counts.get(reason, 0) + 1
                return
        # Warnings (a traceback that ended the transport's receive loop)
        # and anything else marked as a failure ("x ...") are kept verbatim.
        failure = record.levelno >= logging.WARNING or ") x " in message
        if failure and len(self.failures) < 20:
            self.failures.append(message)

    @classmethod
    def install(cls):
        handler = cls()
        log = logging.getLogger("aiortc.rtcdtlstransport")
        log.setLevel(logging.DEBUG)
        log.propagate = False
        log.addHandler(handler)
        return handler


def http(method, url, token, body=None, content_type=None, timeout=10):
    """One blocking request; returns (status, headers, body text)."""
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode("utf-8", "replace")


def prefer_vp8(transceiver):
    codecs = RTCRtpSender.getCapabilities("video").codecs
    vp8 = [c for c in codecs if c.mimeType.lower() in ("video/vp8", "video/rtx")]
    transceiver.setCodecPreferences(vp8)


def unique_extension_ids(sdp):
    """Renumbers header extensions so one id means one extension across the
    whole offer.

    aiortc 1.4 numbers extensions per m-section (audio-level in the audio
    section and abs-send-time in the video section both get id 2), although
    a BUNDLE group shares one id space (RFC 8843 section 9.2), and it parses
    every packet of the bundle with a single map: an audio packet's 1-byte
    audio level is then read as a 3-byte abs-send-time, the parser raises
    and the transport's receive loop ends. The answer echoes the offer's
    ids, which aiortc then uses for both sending and parsing.
    """
    by_uri = {}
    used = set()
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=extmap:"):
            head, _, uri = line[len("a=extmap:"):].partition(" ")
            ext_id = int(head.split("/")[0])
            if uri not in by_uri:
                if ext_id in used:
                    ext_id = next(i for i in range(1, 15) if i not in used)
                by_uri[uri] = ext_id
                used.add(ext_id)
            line = f"a=extmap:{by_uri[uri]} {uri}"
        out.append(line)
    return "\r\n".join(out) + "\r\n"


async def negotiate(pc, url, token):
    """WHIP/WHEP: POST the offer, apply the answer; returns the leg URL."""
    await pc.setLocalDescription(await pc.createOffer())
    offer = unique_extension_ids(pc.localDescription.sdp)
    loop = asyncio.get_running_loop()
    status, headers, text = await loop.run_in_executor(
        None,
        lambda: http("POST", url, token, offer.encode(), "application/sdp"),
    )
    if status != 201:
        raise RuntimeError(f"POST {url}: {status} {text.strip()}")
    location = headers.get("Location") or headers.get("location")
    if not location:
        raise RuntimeError(f"POST {url}: 201 without Location")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer"))
    return urllib.parse.urljoin(url, location)


class Counter:
    def __init__(self):
        self.started = time.monotonic()
        self.video_frames = 0
        self.audio_frames = 0
        self.audio_samples = 0
        self.first_video_ms = None
        self.first_audio_ms = None
        self.sizes = set()
        self.done = asyncio.Event()
        self.want_video = 0
        self.want_audio = 0

    def check(self):
        if self.video_frames >= self.want_video and self.audio_frames >= self.want_audio:
            self.done.set()

    async def consume(self, track):
        while True:
            try:
                frame = await track.recv()
            except Exception:  # the track ended (MediaStreamError) or the pc closed
                return
            now_ms = round(1000 * (time.monotonic() - self.started))
            if track.kind == "video":
                self.video_frames += 1
                self.sizes.add(f"{frame.width}x{frame.height}")
                if self.first_video_ms is None:
                    self.first_video_ms = now_ms
            else:
                self.audio_frames += 1
                self.audio_samples += frame.samples
                if self.first_audio_ms is None:
                    self.first_audio_ms = now_ms
            self.check()


async def rtp_counts(pub, sub):
    """Packets sent and received per kind, from both connections' stats."""
    out = {}
    for pc, side in ((pub, "sent"), (sub, "received")):
        try:
            report = await pc.getStats()
        except Exception as e:  # a closed transport has no stats; say so
            out[side] = f"unavailable: {e}"
            continue
        for s in report.values():
            if s.type == "transport":
                out.setdefault(f"{side}_transport_packets_in", []).append(s.packetsReceived)
            if s.type in ("outbound-rtp", "inbound-rtp"):
                key = f"{side}_{s.kind}_packets"
                out[key] = out.get(key, 0) + (
                    s.packetsSent if s.type == "outbound-rtp" else s.packetsReceived
                )
    return out


async def run(args, summary):
    pub_token = os.environ["SWITCHBOARD_PUBLISH_TOKEN"]
    sub_token = os.environ["SWITCHBOARD_SUBSCRIBE_TOKEN"]
    base = args.base.rstrip("/")
    consult = urllib.parse.quote(args.consult, safe="")
    counter = Counter()
    counter.want_video = args.min_video_frames
    counter.want_audio = args.min_audio_frames
    tasks = []
    legs = []

    pub = RTCPeerConnection()
    sub = RTCPeerConnection()
    states = summary["states"]

    def watch(pc, name):
        @pc.on("connectionstatechange")
        def _():
            states.setdefault(name, []).append(pc.connectionState)

    watch(pub, "publish")
    watch(sub, "subscribe")

    @sub.on("track")
    def on_track(track):
        tasks.append(asyncio.ensure_future(counter.consume(track)))

    try:
        video = MovingBar(args.width, args.height)
        prefer_vp8(pub.addTransceiver(video, direction="sendonly"))
        pub.addTransceiver(Tone(), direction="sendonly")
        legs.append(await negotiate(pub, f"{base}/v1/consults/{consult}/whip", pub_token))
        summary["publish_leg"] = legs[-1]

        prefer_vp8(sub.addTransceiver("video", direction="recvonly"))
        sub.addTransceiver("audio", direction="recvonly")
        legs.append((await negotiate(sub, f"{base}/v1/consults/{consult}/whep", sub_token)))
        summary["subscribe_leg"] = legs[-1]

        try:
            await asyncio.wait_for(counter.done.wait(), args.timeout)
        except asyncio.TimeoutError:
            summary["error"] = f"not enough frames within {args.timeout} s"
    finally:
        summary["rtp"] = await rtp_counts(pub, sub)
        loop = asyncio.get_running_loop()
        tokens = [pub_token, sub_token]
        for leg, token in zip(legs, tokens):
            status, _, text = await loop.run_in_executor(
                None, lambda: http("DELETE", leg, token)
            )
            summary.setdefault("deleted", []).append(status)
        await pub.close()
        await sub.close()
        for t in tasks:
            t.cancel()
        summary.update(
            video_frames=counter.video_frames,
            audio_frames=counter.audio_frames,
            audio_seconds=round(counter.audio_samples / AUDIO_RATE, 2),
            time_to_first_video_frame_ms=counter.first_video_ms,
            time_to_first_audio_frame_ms=counter.first_audio_ms,
            video_sizes=sorted(counter.sizes),
            frames_sent=video.frames,
        )
    return counter.done.is_set()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="appliance URL, e.g. http://198.18.1.1:8080")
    p.add_argument("--consult", required=True)
    p.add_argument("--timeout", type=float, default=45.0, help="seconds to wait for the frames")
    p.add_argument("--min-video-frames", type=int, default=90)
    p.add_argument("--min-audio-frames", type=int, default=150)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    args = p.parse_args()
    # A backstop if the event loop itself wedges: SIGALRM ends the process.
    signal.alarm(int(args.timeout) + 30)
    summary = {"client": "aiortc", "states": {}, "error": None}
    try:
        import aiortc

        summary["version"] = aiortc.__version__
    except AttributeError:
        pass
    drops = DropCounter.install()
    ok = False
    try:
        ok = asyncio.run(run(args, summary))
    except Exception as e:  # reported in the summary; the exit status says it failed
        summary["error"] = f"{type(e).__name__}: {e}"
    summary["discarded"] = drops.counts
    summary["transport_failures"] = drops.failures
    summary["ok"] = ok
    print(json.dumps(summary), flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
