"""Loaded into the test cluster's workers (dask worker --preload): stand-ins for a decoder
that crashes the whole process on one particular master, every time (crash-me), one that needs
more memory than any worker has (hog-me), and a bug that raises an exception which can be
neither pickled nor printed (unpicklable-me)."""

import os
import threading
import time

import engine.schedule as schedule


class Unpicklable(Exception):
    """Holds a lock (cannot be pickled); its str() and repr() raise too."""

    def __init__(self, message: str, extra: int) -> None:
        super().__init__(message)
        self.lock = threading.Lock()

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def hog(limit_bytes: int = 3 * 2**30) -> None:
    """Take memory 32 MiB at a time (touched, so resident), the way a decoder would, until
    the worker's nanny restarts it for going over its memory limit (or 3 GiB: then it stops)."""
    import numpy as np

    held = []
    while len(held) * 32 * 2**20 < limit_bytes:
        held.append(np.ones(4 * 2**20))  # 32 MiB of float64
        time.sleep(0.01)  # a decoder's pace: the nanny looks every 100 ms


def install() -> None:
    real = schedule.render_master
    if getattr(real, "crash_stand_in", False):  # dask may import a preload module twice
        return

    def crashing_render_master(mp, presets, settings):  # noqa: ANN001, ANN202
        if "crash-me" in mp.master.id:
            os._exit(70)  # what a segfault in a decoder looks like to dask: the worker is gone
        if "hog-me" in mp.master.id:
            hog()
        if "unpicklable-me" in mp.master.id:
            raise Unpicklable("cannot travel", 1)
        return real(mp, presets, settings)

    crashing_render_master.crash_stand_in = True
    schedule.render_master = crashing_render_master


install()
