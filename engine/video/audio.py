"""Audio of the pass: decoded once; per distinct audio setting, resampled and encoded once.

Outputs whose presets give the same audio key (codec, bitrate, sample rate, time range) share
one encoder; its packets are copied into every one of those outputs.
"""

from __future__ import annotations

import av

from .branch import Branch
from .encoders import add_audio_stream


class AudioTrack:
    """One distinct audio setting: resampled and encoded once, muxed into each of its outputs."""

    def __init__(self, key: tuple, outputs: list[Branch], channels: int) -> None:
        codec, kbps, rate, start_s, max_duration_s = key
        del start_s  # audio with a start offset is refused by the preset model
        self.outputs = outputs
        self.end = max_duration_s
        layout = "mono" if channels == 1 else "stereo"
        first = outputs[0]
        assert first.container is not None
        stream = add_audio_stream(first.container, codec, kbps, rate, layout)
        first.audio_stream = stream
        self.encoder = stream
        for out in outputs[1:]:
            assert out.container is not None
            out.audio_stream = out.container.add_stream_from_template(stream)
        fmt = stream.codec_context.format.name
        self.resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate,
                                           frame_size=stream.codec_context.frame_size or None)
        self.done = False

    def push(self, frame: av.AudioFrame | None) -> None:
        """Encode one decoded frame (None: the end) for every output of this setting."""
        if self.done:
            return
        if frame is not None and self.end is not None and frame.time >= self.end:
            frame, self.done = None, True
        for resampled in self.resampler.resample(frame):
            self._mux(self.encoder.encode(resampled))
        if frame is None:
            self._mux(self.encoder.encode(None))
            self.done = True

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            for out in self.outputs:
                if out.audio_stream is None:
                    continue
                copy = av.Packet(bytes(packet))
                copy.pts, copy.dts, copy.duration = packet.pts, packet.dts, packet.duration
                copy.time_base = packet.time_base
                copy.is_keyframe = packet.is_keyframe
                copy.stream = out.audio_stream
                out.mux_audio(copy)


def audio_tracks(outputs: list[Branch], channels: int) -> list[AudioTrack]:
    """One track per distinct audio setting among the outputs that carry audio."""
    by_key: dict[tuple, list[Branch]] = {}
    for out in outputs:
        key = out.preset.audio_key()
        if key is not None and not out.preset.animated:
            by_key.setdefault(key, []).append(out)
    return [AudioTrack(k, outs, channels) for k, outs in by_key.items()]
