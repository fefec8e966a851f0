"""The files an HLS set is made of, by name: what planning needs to know of HLS without loading
a codec (engine.plan imports this; engine.video.hls writes the files)."""

from __future__ import annotations

MASTER = "master.m3u8"
PLAYLIST = "index.m3u8"
MEDIA = "media.m4s"


def hls_files(rungs: list[str]) -> list[tuple[str, str | None, str]]:
    """(file inside the HLS folder, rung or None, role) of every file an HLS set is made of,
    media files first, then the media playlists, then the master playlist: publishing order."""
    return ([(f"{r}/{MEDIA}", r, "media") for r in rungs]
            + [(f"{r}/{PLAYLIST}", r, "playlist") for r in rungs]
            + [(MASTER, None, "master")])
