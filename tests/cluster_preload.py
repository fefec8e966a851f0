"""Loaded into the test cluster's workers (dask worker --preload): a stand-in for a decoder
that crashes the whole process on one particular master, every time."""

import os

import engine.schedule as schedule


def install() -> None:
    real = schedule.render_master
    if getattr(real, "crash_stand_in", False):  # dask may import a preload module twice
        return

    def crashing_render_master(mp, presets, settings):  # noqa: ANN001, ANN202
        if "crash-me" in mp.master.id:
            os._exit(70)  # what a segfault in a decoder looks like to dask: the worker is gone
        return real(mp, presets, settings)

    crashing_render_master.crash_stand_in = True
    schedule.render_master = crashing_render_master


install()
