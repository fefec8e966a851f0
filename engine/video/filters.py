"""The pass's FFmpeg filter graph, as data: turn upright, split, and one chain per output.

  buffer ─> [rotate upright] ─> split=N ─> per output: trim ─> fps cap ─> scale ─> crop
      ─> pad ─> format ─> setsar ─> buffersink

A chain is a list of (filter, arguments), so a benchmark can hand the very same chain to the
ffmpeg command line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction

import av

from ..geometry import Box, Layout, focus_offset
from ..spec.models import VideoPreset, parse_colour

Chain = list[tuple[str, str]]


def frame_rotation(frame: av.VideoFrame) -> int:
    """The frame's display rotation (counter-clockwise), to the nearest quarter turn."""
    try:
        return round(frame.rotation / 90) * 90
    except (AttributeError, TypeError, ValueError):
        return 0


def rotation_filters(rotation: int) -> Chain:
    """Filters that turn a frame with this display rotation (counter-clockwise) upright."""
    turn = rotation % 360
    if turn == 90:
        return [("transpose", "cclock")]
    if turn == 270:
        return [("transpose", "clock")]
    if turn == 180:
        return [("hflip", ""), ("vflip", "")]
    return []


def branch_filters(p: VideoPreset, plan: Layout, fps: Fraction | None) -> Chain:
    """One output's filter chain after the split: time range, fps cap, geometry, pixel format."""
    steps: Chain = []
    if p.start_s or p.max_duration_s:
        args = [f"start={p.start_s}"] if p.start_s else []
        if p.max_duration_s:
            args.append(f"duration={p.max_duration_s}")
        steps.append(("trim", ":".join(args)))
        if p.start_s:
            steps.append(("setpts", "PTS-STARTPTS"))
    if fps is not None:
        steps.append(("fps", f"fps={fps.numerator}/{fps.denominator}"))
    colour = "" if p.animated else ":out_color_matrix=bt709:out_range=tv"
    steps.append(("scale", f"w={plan.scaled[0]}:h={plan.scaled[1]}:flags=bicubic{colour}"))
    if plan.crop is not None:
        c = plan.crop
        steps.append(("crop", f"w={c.width}:h={c.height}:x={c.left}:y={c.top}:exact=1"))
    if plan.canvas != plan.scaled and plan.crop is None:
        r, g, b = parse_colour(p.background)
        (cw, ch), (ox, oy) = plan.canvas, plan.offset
        steps.append(("pad", f"w={cw}:h={ch}:x={ox}:y={oy}:color=0x{r:02x}{g:02x}{b:02x}"))
    steps.append(("format", "pix_fmts=" + ("rgb24" if p.animated else "yuv420p")))
    steps.append(("setsar", "1"))
    return steps


def focus_crop(plan: Layout, focus: tuple[float, float]) -> Layout:
    """A video_layout plan whose fill crop is placed on the editor's focal point (fractions of
    the upright frame) instead of by gravity: as near the window's centre as the frame allows,
    offsets even (4:2:0)."""
    if plan.crop is None:
        return plan
    (sw, sh), (cw, ch) = plan.scaled, plan.canvas
    x, y = focus_offset(sw, sh, cw, ch, focus[0] * sw, focus[1] * sh)
    left, top = min(round(x), sw - cw), min(round(y), sh - ch)
    return replace(plan, crop=Box(left - left % 2, top - top % 2, cw, ch))


def add_chain(graph: av.filter.Graph, upstream: av.filter.context.FilterContext, pad: int,
              steps: Chain) -> av.filter.context.FilterContext:
    """Append `steps` after `upstream`'s output `pad`; return the buffersink that ends them."""
    node, out_pad = upstream, pad
    for name, args in steps:
        nxt = graph.add(name, args)
        node.link_to(nxt, out_pad, 0)
        node, out_pad = nxt, 0
    sink = graph.add("buffersink")
    node.link_to(sink, out_pad, 0)
    return sink


def split_graph(
    width: int, height: int, pix_fmt: str, tb: Fraction, rotation: int, chains: list[Chain]
) -> tuple[av.filter.Graph, av.filter.context.FilterContext,
           list[av.filter.context.FilterContext]]:
    """The configured graph of one pass: (graph, its buffer source, one sink per chain)."""
    graph = av.filter.Graph()
    src = graph.add_buffer(width=width, height=height, format=pix_fmt, time_base=tb)
    node = src
    for name, args in rotation_filters(rotation):
        nxt = graph.add(name, args)
        node.link_to(nxt)
        node = nxt
    split = graph.add("split", str(len(chains)))
    node.link_to(split)
    sinks = [add_chain(graph, split, i, steps) for i, steps in enumerate(chains)]
    graph.configure()
    return graph, src, sinks


def drain(sink: av.filter.context.FilterContext) -> Iterator[av.VideoFrame]:
    """Every frame the sink has ready now."""
    while True:
        try:
            yield sink.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return
