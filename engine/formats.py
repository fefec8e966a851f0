"""Every format fanout reads or writes, in one table: a new format is one entry here.

A `Format` says what a file is (extension, MIME type, image or video), what fanout does with it
(decode it as a master, write it as an output, write it as an animated preview of a video), how
(the libvips loaders that read it, the libvips saver that writes it, the FFmpeg muxer and the
codecs a container may hold), its defaults and limits, and how a master of it is recognised
from its first bytes (never from its extension).

The registry's order is the order messages list formats in, and the order `sniff` tries the
signatures in: the ISO BMFF image brands and QuickTime come before the mp4 catch-all.

This module imports no pyvips, av or dask: the spec models derive their allowed values from it.
What is code rather than data stays beside the code that runs it, keyed by format name: the
saver options in image/encode.py (SAVE_OPTIONS) and video/encoders.py (ANIMATION_OPTIONS);
tests/test_formats.py checks that every output has its entry there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["image", "video"]
Match = Callable[[bytes], bool]

# How much of a file `sniff` needs: three M2TS packets (4 + 2 x 192 + 1 = 389 bytes) fit.
SNIFF_BYTES = 512
TS_PACKETS = 3  # sync bytes at this many packet starts make an MPEG-TS (one "G" is any text)


def prefix(*magics: bytes, at: int = 0) -> Match:
    """The head holds one of `magics` at offset `at`."""
    return lambda head: any(head[at:at + len(m)] == m for m in magics)


def riff(form: bytes) -> Match:
    """A RIFF file of the given form type (WEBP, AVI )."""
    return lambda head: head[:4] == b"RIFF" and head[8:12] == form


def ftyp(*brands: bytes) -> Match:
    """An ISO BMFF file (MP4, MOV, HEIF) whose major brand is one of `brands`; any brand when
    none are given (the catch-all, tried after the formats that name theirs)."""
    return lambda head: head[4:8] == b"ftyp" and (not brands or head[8:12] in brands)


def text(*starts: bytes) -> Match:
    """A text file starting with one of `starts` after leading whitespace (SVG, XML)."""
    return lambda head: head.lstrip()[:8].startswith(starts)


def svg_text() -> Match:
    """An SVG: `<svg` or `<?xml` first (after a BOM and whitespace), or a comment or DOCTYPE
    first with `<svg` in the head (Illustrator and Inkscape exports start so)."""
    def match(head: bytes) -> bool:
        start = head.removeprefix(b"\xef\xbb\xbf").lstrip()
        return start.startswith((b"<svg", b"<?xml")) or (
            start.startswith((b"<!--", b"<!DOCTYPE svg")) and b"<svg" in head)
    return match


def packets(size: int, sync_at: int = 0) -> Match:
    """A stream of `size`-byte packets with the MPEG-TS sync byte 0x47 at `sync_at` of each, for
    the first TS_PACKETS packets (so the head must hold them all)."""
    def match(head: bytes) -> bool:
        starts = [sync_at + i * size for i in range(TS_PACKETS)]
        return len(head) > starts[-1] and all(head[s] == 0x47 for s in starts)
    return match


@dataclass(frozen=True)
class Format:
    """One file format. Roles: `master` (fanout decodes it), `output` (a preset of its kind
    writes it: an image preset a still image, a video preset a video container) and `animated`
    (a video preset writes it as a short looping preview; libvips saves the frames). A format
    with none of them is recognised only, so that the decoder can refuse it by name."""

    name: str
    kind: Kind
    extensions: tuple[str, ...]  # the first is the one fanout writes
    mime: str
    master: bool = False
    output: bool = False
    animated: bool = False
    signatures: tuple[Match, ...] = ()  # any one of them recognises a master
    # Images: libvips operations (base names; `_buffer` and `_source` variants are the same).
    loaders: tuple[str, ...] = ()
    decoder: str | None = None  # a master libvips does not read: the library that decodes it
    saver: str | None = None
    alpha: bool = False  # an output keeps the alpha channel (otherwise it is flattened)
    lossy: bool = False  # a quality setting, hence a byte budget (max_bytes), applies
    quality: int | None = None  # default; a preset may override it
    effort: int | None = None  # default; a preset may override it, up to max_effort
    max_effort: int | None = None
    max_side: int | None = None  # the largest side the format can hold
    # Videos: the FFmpeg muxer and its options, and the codecs a container may hold (the first
    # is the default; audio may always be "none").
    muxer: str | None = None
    muxer_options: tuple[tuple[str, str], ...] = ()
    video_codecs: tuple[str, ...] = ()
    audio_codecs: tuple[str, ...] = ()

    @property
    def extension(self) -> str:
        return self.extensions[0]

    @property
    def writes(self) -> bool:
        return self.output or self.animated


REGISTRY: tuple[Format, ...] = (
    # An Ultra HDR JPEG (gain map) is sniffed by libvips as uhdrload: fanout reads its SDR
    # image with jpegload (image/decode.py), like any JPEG.
    Format("jpeg", "image", ("jpg", "jpeg"), "image/jpeg", master=True, output=True,
           signatures=(prefix(b"\xff\xd8\xff"),), loaders=("jpegload", "uhdrload"),
           saver="jpegsave",
           lossy=True, quality=85, effort=0, max_effort=0, max_side=65500),
    Format("gif", "image", ("gif",), "image/gif", master=True, animated=True,
           signatures=(prefix(b"GIF87a", b"GIF89a"),), loaders=("gifload",), saver="gifsave"),
    # WebP's default effort 4 is a fair middle; libwebp holds at most 16383 a side.
    Format("webp", "image", ("webp",), "image/webp", master=True, output=True, animated=True,
           signatures=(riff(b"WEBP"),), loaders=("webpload",), saver="webpsave", alpha=True,
           lossy=True, quality=80, effort=4, max_effort=6, max_side=16383),
    # Effort is chosen deliberately. AVIF (libaom via libheif), measured on the bytes
    # benchmark's 33 AVIF references (0.07-7.7 MP, one thread), each searched for the smallest
    # file at the same SSIMULACRA2 score (quality = "auto"'s matched target): effort 1/2/3 wrote
    # 114.5/92.8/82.7 KB in all, encoding for 3.4/6.6/10.3 s (sharp's default, effort 4 with
    # its own libaom: 64.1 KB). Effort 4 saved a further 16-30% on three of them for about 3x
    # effort 3's time. 3 it is: the files are written once and served many times.
    # 16384 a side is libheif's default limit.
    # mif1/msf1 are HEIF's generic brands, which AVIF encoders use too; an HEVC one goes to the
    # heif decoder (image/decode.py checks the compression: this libvips build has no HEVC).
    Format("avif", "image", ("avif",), "image/avif", master=True, output=True,
           signatures=(ftyp(b"avif", b"avis", b"mif1", b"msf1"),), loaders=("heifload",),
           saver="heifsave", alpha=True, lossy=True, quality=55, effort=3, max_effort=9,
           max_side=16384),
    # HEIC (HEVC) from phones: pi-heif's libheif with libde265 (image/heif.py).
    Format("heif", "image", ("heic", "heif"), "image/heif", master=True,
           signatures=(ftyp(b"heic", b"heix", b"heim", b"heis"),), decoder="pi-heif"),
    Format("png", "image", ("png",), "image/png", master=True, output=True,
           signatures=(prefix(b"\x89PNG\r\n\x1a\n"),), loaders=("pngload",), saver="pngsave",
           alpha=True, quality=100, effort=6, max_effort=9, max_side=1 << 31),
    Format("tiff", "image", ("tif", "tiff"), "image/tiff", master=True,  # and BigTIFF
           signatures=(prefix(b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),),
           loaders=("tiffload",)),
    # Recognised as images so that the image decoder refuses them with a clear error.
    Format("bmp", "image", ("bmp",), "image/bmp", signatures=(prefix(b"BM"),)),
    Format("jxl", "image", ("jxl",), "image/jxl",
           signatures=(prefix(b"\x00\x00\x00\x0cJXL \r\n\x87\n", b"\xff\x0a"),)),
    Format("jp2", "image", ("jp2",), "image/jp2", signatures=(prefix(b"\x00\x00\x00\x0cjP  "),)),
    # Rasterised by resvg after safety checks, never by libvips' librsvg (image/svg.py).
    Format("svg", "image", ("svg",), "image/svg+xml", master=True, signatures=(svg_text(),),
           decoder="resvg"),
    Format("pdf", "image", ("pdf",), "application/pdf", signatures=(prefix(b"%PDF"),)),
    # Videos: every container FFmpeg reads is a master.
    Format("mov", "video", ("mov",), "video/quicktime", master=True, signatures=(ftyp(b"qt  "),)),
    # An MP4 gets its index at the front, so playback starts at once.
    Format("mp4", "video", ("mp4", "m4v"), "video/mp4", master=True, output=True,
           signatures=(ftyp(),), muxer="mp4", muxer_options=(("movflags", "+faststart"),),
           video_codecs=("h264", "hevc", "av1"), audio_codecs=("aac",)),
    # WebM, and any Matroska (.mkv): one EBML signature.
    Format("webm", "video", ("webm", "mkv"), "video/webm", master=True, output=True,
           signatures=(prefix(b"\x1a\x45\xdf\xa3"),), muxer="webm",
           video_codecs=("vp9", "av1"), audio_codecs=("opus",)),
    Format("mpeg-ts", "video", ("ts", "mts"), "video/mp2t", master=True,
           signatures=(packets(188),)),
    # Blu-ray and AVCHD cameras: a 4-byte timestamp before each 188-byte packet.
    Format("m2ts", "video", ("m2ts", "mts"), "video/mp2t", master=True,
           signatures=(packets(192, sync_at=4),)),
    Format("mpeg-ps", "video", ("mpg", "mpeg"), "video/mpeg", master=True,
           signatures=(prefix(b"\x00\x00\x01\xba"),)),
    Format("ogg", "video", ("ogv", "ogg"), "video/ogg", master=True, signatures=(prefix(b"OggS"),)),
    Format("flv", "video", ("flv",), "video/x-flv", master=True, signatures=(prefix(b"FLV"),)),
    Format("avi", "video", ("avi",), "video/x-msvideo", master=True, signatures=(riff(b"AVI "),)),
)
FORMATS: dict[str, Format] = {f.name: f for f in REGISTRY}


@dataclass(frozen=True)
class Codec:
    """A video or audio codec a container may hold, and the FFmpeg encoder that writes it."""

    name: str
    kind: Literal["video", "audio"]
    encoder: str
    decoders: tuple[str, ...] = ()  # other names FFmpeg gives it when reading a file back
    tag: str | None = None  # the codec tag to write (Apple players look for hvc1 in an MP4)


CODECS: dict[str, Codec] = {c.name: c for c in (
    Codec("h264", "video", "libx264"),
    Codec("hevc", "video", "libx265", tag="hvc1"),
    Codec("vp9", "video", "libvpx-vp9"),
    Codec("av1", "video", "libsvtav1", decoders=("libdav1d", "libaom-av1")),
    Codec("aac", "audio", "aac"),
    Codec("opus", "audio", "libopus"),
)}

# Allowed values, in registry order (the order messages list them in).
IMAGE_OUTPUTS = tuple(f.name for f in REGISTRY if f.kind == "image" and f.output)
ANIMATED = tuple(f.name for f in REGISTRY if f.animated)
VIDEO_CONTAINERS = tuple(f.name for f in REGISTRY if f.kind == "video" and f.output)
VIDEO_OUTPUTS = VIDEO_CONTAINERS + ANIMATED
OUTPUTS = IMAGE_OUTPUTS + tuple(n for n in ANIMATED if n not in IMAGE_OUTPUTS) + VIDEO_CONTAINERS
VIDEO_CODECS = tuple(c.name for c in CODECS.values() if c.kind == "video")
AUDIO_CODECS = tuple(c.name for c in CODECS.values() if c.kind == "audio")


def output(name: str) -> Format:
    """The output format called `name`; KeyError naming the outputs when there is none."""
    fmt = FORMATS.get(name)
    if fmt is None or not fmt.writes:
        raise KeyError(f"expected an output format ({', '.join(OUTPUTS)}); found {name!r}")
    return fmt


def outputs(*names: str) -> tuple[str, ...]:
    """`names`, each checked to be an output format (a misspelt table fails at import)."""
    for name in names:
        output(name)
    return names


def extension(name: str) -> str:
    """The extension fanout writes for format `name` (an unknown name is its own extension)."""
    fmt = FORMATS.get(name)
    return fmt.extension if fmt is not None else name


def by_loader(loader: str) -> Format | None:
    """The format a libvips loader reads (jpegload, jpegload_buffer and jpegload_source alike);
    the first in registry order where several formats share one (heifload: avif)."""
    base = loader.removesuffix("_buffer").removesuffix("_source")
    return next((f for f in REGISTRY if base in f.loaders), None)


def sniff_format(head: bytes) -> Format | None:
    """The format of a file from its first SNIFF_BYTES bytes, or None when none matches."""
    return next((f for f in REGISTRY if any(match(head) for match in f.signatures)), None)


def sniff(head: bytes) -> Kind | None:
    """'image', 'video' or None, from the first bytes of a file (never from its extension)."""
    fmt = sniff_format(head)
    return fmt.kind if fmt is not None else None
