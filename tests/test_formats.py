"""The format registry (engine/formats.py): consistent, used by the models, and sniffing right."""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Literal, get_args, get_origin

import av
import numpy as np
import pytest
import pyvips
from problem_images import scene

from engine import formats
from engine.image.encode import SAVE_OPTIONS, encode
from engine.spec.models import (
    DEFAULT_CRF,
    DEFAULT_SPEED,
    ImagePreset,
    Resize,
    Rules,
    VideoPreset,
)
from engine.video.encoders import ANIMATION_OPTIONS

# --- the registry is whole ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [f for f in formats.REGISTRY if f.writes], ids=lambda f: f.name)
def test_every_output_says_how_it_is_written(fmt):
    assert fmt.extensions and fmt.mime.startswith(f"{fmt.kind}/")
    if fmt.kind == "image":
        assert fmt.saver and pyvips.type_find("VipsOperation", fmt.saver) != 0
        assert pyvips.type_find("VipsOperation", f"{fmt.saver}_buffer") != 0
        assert fmt.loaders  # `fanout check` reads every output back
    if fmt.output and fmt.kind == "image":
        assert None not in (fmt.quality, fmt.effort, fmt.max_effort, fmt.max_side)
        assert 0 <= fmt.effort <= fmt.max_effort and 1 <= fmt.quality <= 100
        assert fmt.name in SAVE_OPTIONS
    if fmt.animated:
        assert fmt.name in ANIMATION_OPTIONS and not fmt.video_codecs
    if fmt.kind == "video":
        assert fmt.muxer in av.formats_available and fmt.video_codecs
        assert set(fmt.video_codecs) <= set(formats.VIDEO_CODECS)
        assert set(fmt.audio_codecs) <= set(formats.AUDIO_CODECS)


def test_option_tables_name_only_registered_outputs():
    assert set(SAVE_OPTIONS) == set(formats.IMAGE_OUTPUTS)
    assert set(ANIMATION_OPTIONS) == set(formats.ANIMATED)


@pytest.mark.parametrize("fmt", [f for f in formats.REGISTRY if f.master], ids=lambda f: f.name)
def test_every_master_is_recognised_and_read(fmt):
    assert fmt.signatures and fmt.extensions and fmt.mime
    for loader in fmt.loaders:
        assert pyvips.type_find("VipsOperation", f"{loader}_buffer") != 0
        assert formats.by_loader(f"{loader}_buffer") is fmt
    # a video master is read by FFmpeg, any container; HEIC and SVG by their own decoder
    assert fmt.kind == "video" or fmt.loaders or fmt.decoder


def test_every_format_has_a_role_or_is_recognised_to_be_refused():
    for fmt in formats.REGISTRY:
        assert fmt.master or fmt.writes or (fmt.signatures and not fmt.loaders), fmt.name
    assert len(formats.FORMATS) == len(formats.REGISTRY)  # no name twice


def test_codecs_have_their_encoders():
    for codec in formats.CODECS.values():
        assert av.codec.Codec(codec.encoder, "w").type == codec.kind


def test_lookups():
    assert formats.output("jpeg").extension == "jpg"
    assert formats.extension("mp4") == "mp4" and formats.extension("unknown") == "unknown"
    assert formats.by_loader("heifload_buffer").name == "avif"
    assert formats.by_loader("svgload_buffer") is None
    with pytest.raises(KeyError, match="expected an output format"):
        formats.output("tiff")  # read as a master, never written
    with pytest.raises(KeyError):
        formats.outputs("jpeg", "jpg")


# --- the models take their allowed values from it -------------------------------------------


def _allowed(model, field: str) -> tuple:
    """The values of the Literal inside a field's type (X | None, list[X] | None)."""
    def literal(annotation) -> tuple:
        if get_origin(annotation) is Literal:
            return get_args(annotation)
        return next((found for arg in get_args(annotation) if (found := literal(arg))), ())
    return literal(model.model_fields[field].annotation)


def test_models_allow_exactly_the_registry():
    assert _allowed(ImagePreset, "format") == formats.IMAGE_OUTPUTS
    assert formats.IMAGE_OUTPUTS == ("jpeg", "webp", "avif", "png")  # the order messages show
    assert _allowed(VideoPreset, "format") == formats.VIDEO_OUTPUTS == ("mp4", "webm", "gif", "webp")
    assert _allowed(Rules, "formats") == formats.OUTPUTS
    assert set(formats.OUTPUTS) == {f.name for f in formats.REGISTRY if f.writes}
    assert _allowed(VideoPreset, "codec") == formats.VIDEO_CODECS == _allowed(Rules, "codecs")
    assert _allowed(VideoPreset, "audio") == (*formats.AUDIO_CODECS, "none")
    assert set(DEFAULT_CRF) == set(DEFAULT_SPEED) == set(formats.VIDEO_CODECS)


def test_presets_take_their_defaults_from_the_registry():
    for name in formats.IMAGE_OUTPUTS:
        fmt = formats.FORMATS[name]
        preset = ImagePreset(resize=Resize(width=10), format=name)
        assert (preset.effective_quality, preset.effective_effort) == (fmt.quality, fmt.effort)
        assert preset.extension == fmt.extension and preset.has_alpha_output == fmt.alpha
        with pytest.raises(ValueError, match="effort"):
            ImagePreset(resize=Resize(width=10), format=name, effort=fmt.max_effort + 1)
        if fmt.lossy:  # a byte budget needs a quality to search
            ImagePreset(resize=Resize(width=10), format=name, max_bytes=5000)
        else:
            with pytest.raises(ValueError, match="max_bytes"):
                ImagePreset(resize=Resize(width=10), format=name, max_bytes=5000)
    for name in formats.VIDEO_CONTAINERS:
        fmt = formats.FORMATS[name]
        preset = VideoPreset(kind="video", resize=Resize(width=10), format=name)
        assert preset.effective_codec == fmt.video_codecs[0]
        assert preset.effective_audio == fmt.audio_codecs[0]


# --- sniffing masters from their first bytes ------------------------------------------------


def _vips(suffix: str, **options) -> bytes:
    return scene(64, 48).write_to_buffer(suffix, **options)


@pytest.mark.parametrize(("suffix", "options", "name"), [
    (".jpg", {}, "jpeg"), (".png", {}, "png"), (".gif", {}, "gif"), (".webp", {}, "webp"),
    (".tif", {}, "tiff"), (".tif", {"bigtiff": True}, "tiff"),
    (".avif", {"compression": "av1", "effort": 0}, "avif"),
])
def test_sniffs_images_libvips_writes(suffix, options, name):
    data = _vips(suffix, **options)
    assert formats.sniff_format(data[:formats.SNIFF_BYTES]).name == name
    assert formats.sniff(data) == "image"
    loader = pyvips.Image.new_from_buffer(data, "").get("vips-loader")
    assert formats.by_loader(loader).name == name


@pytest.mark.parametrize("name", formats.IMAGE_OUTPUTS)
def test_every_image_output_reads_back_as_itself(name):
    data, _ = encode(scene(64, 48), ImagePreset(resize=Resize(width=64), format=name))
    assert formats.sniff_format(data).name == name
    assert formats.by_loader(pyvips.Image.new_from_buffer(data, "").get("vips-loader")).name == name


def _ftyp(brand: bytes) -> bytes:
    return b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00" + brand + b"\0" * 40


@pytest.mark.parametrize(("brand", "name", "kind"), [
    (b"avif", "avif", "image"), (b"avis", "avif", "image"), (b"mif1", "avif", "image"),
    (b"heic", "heif", "image"), (b"heix", "heif", "image"), (b"msf1", "avif", "image"),
    (b"qt  ", "mov", "video"), (b"isom", "mp4", "video"), (b"mp42", "mp4", "video"),
    (b"M4V ", "mp4", "video"), (b"3gp4", "mp4", "video"), (b"dash", "mp4", "video"),
])
def test_iso_bmff_brands(brand, name, kind):
    assert formats.sniff_format(_ftyp(brand)).name == name
    assert formats.sniff(_ftyp(brand)) == kind


def _video(container: str, codec: str = "mpeg4", **options: str) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container, options=options) as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * i, np.uint8), "rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize(("container", "codec", "options", "name"), [
    ("mp4", "mpeg4", {}, "mp4"),
    ("mov", "mpeg4", {}, "mov"),
    ("webm", "libvpx", {}, "webm"),
    ("matroska", "mpeg4", {}, "webm"),  # Matroska and WebM share the EBML signature
    ("mpegts", "mpeg2video", {}, "mpeg-ts"),
    ("mpegts", "mpeg2video", {"mpegts_m2ts_mode": "1"}, "m2ts"),
    ("mpeg", "mpeg2video", {}, "mpeg-ps"),
    ("avi", "mpeg4", {}, "avi"),
    ("flv", "flv", {}, "flv"),
])
def test_sniffs_videos_ffmpeg_writes(container, codec, options, name):
    data = _video(container, codec, **options)
    assert formats.sniff_format(data[:formats.SNIFF_BYTES]).name == name
    assert formats.sniff(data[:formats.SNIFF_BYTES]) == "video"
    av.open(io.BytesIO(data)).close()  # and FFmpeg reads what was sniffed


def test_mpeg_ts_needs_sync_bytes_packet_after_packet():
    packet = b"\x47" + bytes(187)
    assert formats.sniff(packet * 3) == "video"
    assert formats.sniff((b"\0" * 4 + packet) * 3) == "video"  # M2TS: 4-byte timestamp first
    # Any text starting with "G" was sniffed as video before; now it is nothing.
    assert formats.sniff(b"Generated catalogue export, 2026-11-28\n" * 20) is None
    assert formats.sniff(b"G") is None
    assert formats.sniff(packet * 2) is None  # two packets are not enough to tell
    broken = bytearray(packet * 3)
    broken[376] = 0x00
    assert formats.sniff(bytes(broken)) is None
    assert formats.SNIFF_BYTES >= 4 + 2 * 192 + 1  # the head read holds three M2TS packets


def test_video_containers_by_signature():
    assert formats.sniff_format(b"OggS\0\x02" + b"\0" * 40).name == "ogg"
    assert formats.sniff_format(b"RIFF\0\0\0\0AVI LIST").name == "avi"
    assert formats.sniff_format(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01").name == "webm"


@pytest.mark.parametrize(("head", "name"), [
    (b"BM" + b"\0" * 40, "bmp"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n" + b"\0" * 20, "jxl"),
    (b"\xff\x0a" + b"\0" * 20, "jxl"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\0" * 20, "jp2"),
    (b"%PDF-1.7\n", "pdf"),
])
def test_images_fanout_refuses_are_still_recognised(head, name):
    """Sniffed as images, so that the image decoder refuses them by name."""
    fmt = formats.sniff_format(head)
    assert fmt.name == name and fmt.kind == "image" and not fmt.master


@pytest.mark.parametrize("head", [b"", b"hello", b"\0" * 64, b"RIFF\0\0\0\0WAVEfmt "])
def test_unknown_content_is_nothing(head):
    assert formats.sniff(head) is None
