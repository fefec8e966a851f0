"""What one master may be, by default: the limits that keep an untrusted catalog row from
taking a worker down. Plain numbers, importable without any codec library."""

from __future__ import annotations

DEFAULT_MAX_PIXELS = 268_402_689  # sharp's default limit (0x3FFF * 0x3FFF)
DEFAULT_MAX_VIDEO_PIXELS = 7680 * 4320  # 8K UHD
DEFAULT_MAX_VIDEO_S = 4 * 3600.0
# An image master is read whole into a worker's memory before it is decoded. 2 GiB covers the
# largest image the default pixel limit admits stored uncompressed (268 402 689 pixels x 4
# channels x 16 bits = 2 147 221 512 bytes of TIFF, just under 2 GiB), and refuses a runaway
# file (a disk image, a dump) before it takes a worker down. Video is streamed, never whole in
# memory, but one limit bounds what any row can make a worker read; --max-master-bytes raises it.
DEFAULT_MAX_MASTER_BYTES = 2 << 30
