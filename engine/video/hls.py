"""HLS for a bitrate ladder: each rung's finished MP4 remuxed (packets copied, no re-encode)
into one fragmented MP4 per rung, cut into byte-range segments at the keyframes the preset
places (FFmpeg's `hls` muxer, `single_file`), a media playlist per rung, and a master playlist
naming every rung with its measured bandwidth, resolution, codecs and frame rate.

Every file of an HLS set has a name known before rendering (plan.py plans each one as a
derivative, so the manifest records each as its own row):

    <folder>/master.m3u8                 output <output>-hls
    <folder>/<rung>/index.m3u8           output <output>-hls-<rung>
    <folder>/<rung>/media.m4s            output <output>-hls-<rung>-media

The caller publishes the media files first and the playlists last (each by temporary name and
rename), so a playlist never names a file that is not there.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from ..errors import MasterError
from .layout import MASTER, MEDIA, PLAYLIST
from .probe import VideoFacts, av_message, describe_output

HLS_VERSION = 7  # EXT-X-MAP in a media playlist without I-frames only needs 6; FFmpeg writes 7


@dataclass(frozen=True)
class HlsRung:
    name: str
    facts: VideoFacts  # of the rung's fragmented MP4
    bandwidth: int  # peak segment bit rate, bit/s
    average_bandwidth: int
    codecs: str
    frame_rate: float | None


@dataclass(frozen=True)
class HlsSet:
    folder: Path  # local work folder holding the files named by hls_files()
    rungs: list[HlsRung]


def codecs_of(path: Path) -> str:
    """The RFC 6381 CODECS value of an MP4 ("avc1.64001f,mp4a.40.2"), from the encoded
    streams' own configuration records (profile, level)."""
    with av.open(str(path)) as container:
        parts = [_video_codec(s.codec_context.name, bytes(s.codec_context.extradata or b""))
                 for s in container.streams.video[:1]]
        parts += [_audio_codec(s.codec_context.name, s.codec_context.profile)
                  for s in container.streams.audio[:1]]
    return ",".join(parts)


def _video_codec(name: str, extra: bytes) -> str:
    if name == "h264" and len(extra) >= 4 and extra[0] == 1:  # avcC
        return f"avc1.{extra[1]:02x}{extra[2]:02x}{extra[3]:02x}"
    if name == "hevc" and len(extra) >= 13 and extra[0] == 1:  # hvcC
        space, tier, profile = extra[1] >> 6, (extra[1] >> 5) & 1, extra[1] & 0x1F
        compat = int.from_bytes(extra[2:6], "big")
        compat = int(f"{compat:032b}"[::-1], 2)  # written in reverse bit order
        constraints = list(extra[6:12])
        while constraints and constraints[-1] == 0:
            constraints.pop()
        return ".".join([f"hvc1.{'' if not space else 'ABC'[space - 1]}{profile}", f"{compat:x}",
                         f"{'HL'[tier == 0]}{extra[12]}", *(f"{b:x}" for b in constraints)])
    if name in ("av1", "libdav1d", "libaom-av1") and len(extra) >= 3 and extra[0] & 0x80:  # av1C
        profile, level = extra[1] >> 5, extra[1] & 0x1F
        tier, high, twelve = extra[2] >> 7, (extra[2] >> 6) & 1, (extra[2] >> 5) & 1
        depth = 12 if twelve else 10 if high else 8
        return f"av01.{profile}.{level:02d}{'MH'[tier]}.{depth:02d}"
    raise MasterError(f"hls: cannot name the {name} stream for CODECS (no configuration record)")


def _audio_codec(name: str, profile: str | None) -> str:
    if name == "aac":
        return {"HE-AAC": "mp4a.40.5", "HE-AACv2": "mp4a.40.29"}.get(profile or "", "mp4a.40.2")
    if name == "opus":
        return "Opus"
    raise MasterError(f"hls: cannot name the {name} audio stream for CODECS")


def remux(source: Path, folder: Path, segment_s: float) -> None:
    """Copy the packets of a finished MP4 into `folder`/index.m3u8 + media.m4s: fMP4, cut at
    the first keyframe after each `segment_s` (the encoder placed one there)."""
    folder.mkdir(parents=True, exist_ok=True)
    options = {"hls_time": f"{segment_s:g}", "hls_segment_type": "fmp4",
               "hls_playlist_type": "vod", "hls_list_size": "0",
               "hls_flags": "independent_segments+single_file",
               "hls_segment_filename": str(folder / MEDIA)}
    with av.open(str(source)) as src, av.open(str(folder / PLAYLIST), "w", format="hls",
                                                options=options) as dst:
        streams = {s.index: dst.add_stream_from_template(s)
                   for s in (*src.streams.video[:1], *src.streams.audio[:1])}
        for packet in src.demux(*src.streams.video[:1], *src.streams.audio[:1]):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.stream = streams[packet.stream.index]
            dst.mux(packet)


_EXTINF = re.compile(r"^#EXTINF:([0-9.]+)")
_RANGE = re.compile(r"^#EXT-X-BYTERANGE:(\d+)(?:@(\d+))?")


def segments(playlist: str) -> list[tuple[float, int]]:
    """(duration, bytes) of each media segment of a byte-range media playlist."""
    out, duration = [], None
    for line in playlist.splitlines():
        if m := _EXTINF.match(line):
            duration = float(m[1])
        elif (m := _RANGE.match(line)) and duration is not None:
            out.append((duration, int(m[1])))
            duration = None
    return out


def build(rungs: list[tuple[str, Path]], segment_s: float, folder: Path) -> HlsSet:
    """The HLS set of a ladder whose rungs' finished MP4s are `rungs` (name, file), in `folder`.

    Raises MasterError when a rung cannot be remuxed or described.
    """
    made = []
    try:
        for name, source in rungs:
            remux(source, folder / name, segment_s)
            media = folder / name / MEDIA
            cuts = segments((folder / name / PLAYLIST).read_text())
            if not cuts:
                raise MasterError(f"hls: rung {name}: no segments written")
            total_s = sum(d for d, _ in cuts)
            peak = max(b * 8 / max(d, 1e-3) for d, b in cuts)
            with av.open(str(source)) as c:
                rate = c.streams.video[0].average_rate
            made.append(HlsRung(
                name=name, facts=describe_output(media, "m4s"), bandwidth=math.ceil(peak),
                average_bandwidth=math.ceil(sum(b for _, b in cuts) * 8 / total_s),
                codecs=codecs_of(source),
                frame_rate=float(Fraction(rate)) if rate else None))
    except av.FFmpegError as exc:
        raise MasterError(f"hls: cannot remux: {av_message(exc)}") from None
    (folder / MASTER).write_text(master_playlist(made))
    return HlsSet(folder, made)


def master_playlist(rungs: list[HlsRung]) -> str:
    """The master playlist: one EXT-X-STREAM-INF per rung, in the ladder's order."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{HLS_VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for r in rungs:
        attrs = [f"BANDWIDTH={r.bandwidth}", f"AVERAGE-BANDWIDTH={r.average_bandwidth}",
                 f'CODECS="{r.codecs}"', f"RESOLUTION={r.facts.width}x{r.facts.height}"]
        if r.frame_rate:
            attrs.append(f"FRAME-RATE={r.frame_rate:.3f}")
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attrs), f"{r.name}/{PLAYLIST}"]
    return "\n".join(lines) + "\n"


def playlist_problems(path: Path) -> list[str]:
    """What is wrong with a published playlist: a URI it names that is missing, outside its
    folder's tree, or a byte range past the end of its file."""
    text = path.read_text(errors="replace")
    if not text.startswith("#EXTM3U"):
        return ["playlist: does not start with #EXTM3U"]
    found = []
    for line in text.splitlines():
        uri = re.search(r'URI="([^"]+)"', line) if line.startswith("#") else None
        name = uri[1] if uri else (line.strip() if line.strip() and not line.startswith("#")
                                   else None)
        if name is None:
            continue
        target = (path.parent / name).resolve()
        if "://" in name or name.startswith("/") or ".." in Path(name).parts:
            found.append(f"playlist: names {name!r}, outside its folder")
        elif not target.is_file():
            found.append(f"playlist: names {name!r}, which is missing")
    size_of: dict[str, int] = {}
    offset = 0
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if m := _RANGE.match(line):
            length, start = int(m[1]), int(m[2]) if m[2] is not None else offset
            name = next((x for x in lines[i + 1:] if x and not x.startswith("#")), None)
            if name is not None and (path.parent / name).is_file():
                size = size_of.setdefault(name, (path.parent / name).stat().st_size)
                if start + length > size:
                    found.append(f"playlist: byte range {length}@{start} past the end of "
                                 f"{name} ({size} bytes)")
            offset = start + length
    return found
