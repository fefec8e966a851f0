from engine.geometry import Box, fit_inside, gravity_offset, jpeg_shrink, layout, needed_scale
from engine.spec.models import Resize


def test_fit_inside_binds_the_tighter_side_exactly():
    assert fit_inside(6000, 4000, 600, None) == (600, 400)
    assert fit_inside(4000, 6000, 1000, 1000) == (667, 1000)
    assert fit_inside(100, 100, None, 50) == (50, 50)


def test_fill_covers_then_crops_by_gravity():
    plan = layout(6000, 4000, Resize(width=1080, height=1080, fit="fill"))
    assert plan.scaled == (1620, 1080)
    assert plan.crop == Box(270, 0, 1080, 1080)
    assert plan.canvas == (1080, 1080)
    west = layout(6000, 4000, Resize(width=1080, height=1080, fit="fill", gravity="west"))
    assert west.crop == Box(0, 0, 1080, 1080)


def test_fill_attention_defers_the_crop_to_pixels():
    plan = layout(3000, 2000, Resize(width=1080, height=1920, fit="fill", gravity="attention"))
    assert plan.scaled == (2880, 1920) and plan.smart_crop and plan.crop is None


def test_pad_with_fill_ratio_centres_the_content():
    plan = layout(1000, 500, Resize(width=2000, height=2000, fit="pad", fill_ratio=0.85))
    assert plan.scaled == (1700, 850)
    assert plan.canvas == (2000, 2000)
    assert plan.offset == (150, 575)


def test_limit_never_upscales_and_fit_does():
    assert layout(400, 300, Resize(width=1080, fit="limit")).scaled == (400, 300)
    assert layout(4000, 3000, Resize(width=1080, fit="limit")).scaled == (1080, 810)
    assert layout(400, 300, Resize(width=1080, fit="fit")).scaled == (1080, 810)


def test_gravity_offsets():
    assert gravity_offset("centre", 100, 50, 50, 50) == (25, 0)
    assert gravity_offset("south-east", 100, 80, 50, 50) == (50, 30)
    assert gravity_offset("north-west", 100, 80, 50, 50) == (0, 0)


def test_needed_scale_and_jpeg_shrink():
    assert needed_scale(6000, 4000, Resize(width=600, fit="fit"), trims=False) == 0.1
    assert needed_scale(6000, 4000, Resize(width=600, fit="fit"), trims=True) == 1.0
    assert needed_scale(400, 300, Resize(width=1080, fit="fit"), trims=False) == 1.0
    assert jpeg_shrink(0.1) == 8
    assert jpeg_shrink(0.3) == 2
    assert jpeg_shrink(0.5) == 2
    assert jpeg_shrink(0.51) == 1
