"""Each step of the image pipeline run alone on a tiny synthetic image, and the order itself."""

import pyvips
from helpers import distance

from engine.geometry import Box, Layout
from engine.image import decode as dec
from engine.image import pipeline, render
from engine.image.pipeline import STEPS, Work
from engine.spec.models import ImagePreset, Resize

RED, WHITE, BLUE, GREEN = (220, 30, 30), (255, 255, 255), (0, 0, 255), (0, 255, 0)
ORDER = ["base", "trim", "layout", "window", "scale", "crop", "pad", "encode"]


def solid(width: int, height: int, colour: tuple[int, ...]) -> pyvips.Image:
    image = (pyvips.Image.black(width, height, bands=len(colour)) + list(colour)).cast("uchar")
    return image.copy(interpretation="srgb")


def work_for(image: pyvips.Image, preset: ImagePreset, master_width: int | None = None) -> Work:
    """A Work at the start of the pipeline, as if `image` were a master decoded at some scale."""
    width = master_width or image.width
    height = round(image.height * width / image.width)
    decoded = dec.Decoded(image=image, width=width, height=height, scale=image.width / width)
    return Work(preset, decoded, {}, {})


def preset(format: str = "png", **resize: object) -> ImagePreset:
    return ImagePreset(resize=Resize(**{"width": 100, **resize}), format=format)


def after(work: Work, last: str) -> Work:
    """Run the steps before `last` (what `last` needs to have been decided), then `last`."""
    return pipeline.run(work, STEPS[: ORDER.index(last) + 1])


def test_steps_are_the_documented_order():
    assert [step.__name__ for step in STEPS] == ORDER
    assert "pipeline.STEPS" in render.__doc__  # render.py points here, repeats no list
    assert all(step.__doc__ and "\n" not in step.__doc__ for step in STEPS)  # one line each


def test_base_flattens_alpha_onto_the_background_for_jpeg_and_keeps_it_for_webp():
    cutout = solid(40, 30, (*RED, 0)).draw_rect([*RED, 255], 10, 10, 20, 10, fill=True)
    jpeg = ImagePreset(resize=Resize(width=40), format="jpeg", background="#00ff00")
    flat = pipeline.base(work_for(cutout, jpeg)).pyramid.base
    assert flat.bands == 3 and distance(flat.getpoint(1, 1), GREEN) <= 1
    assert distance(flat.getpoint(15, 15), RED) <= 1
    webp = pipeline.base(work_for(cutout, preset("webp", width=40)))
    assert webp.base_key == "alpha" and webp.pyramid.base is cutout  # kept, and not copied


def test_base_is_made_once_per_master_and_colour():
    first = pipeline.base(work_for(solid(20, 20, (*RED, 128)), preset("jpeg")))
    again = Work(preset("png", width=50, height=50, fit="pad"), first.decoded, first.pyramids, {})
    assert pipeline.base(again).pyramid is not first.pyramid  # png keeps alpha: another base
    second = Work(preset("jpeg", width=60), first.decoded, first.pyramids, {})
    assert pipeline.base(second).pyramid is first.pyramid


def test_trim_finds_the_box_of_a_red_square_on_white():
    image = solid(100, 120, WHITE).draw_rect(list(RED), 20, 30, 40, 50, fill=True)
    work = after(work_for(image, ImagePreset(resize=Resize(width=50), format="png",
                                             trim={"threshold": 10})), "trim")
    assert work.region == Box(19, 29, 42, 52)  # widened by a pixel: never cuts the content
    assert work.lineage.trim == work.region  # decoded at full size: base pixels are master's
    assert list(work.trims.values()) == [work.region]  # kept for the master's other outputs
    untrimmed = after(work_for(image, preset()), "trim")
    assert untrimmed.region is None and untrimmed.lineage.trim is None


def test_layout_plans_from_the_master_size_of_the_region():
    work = after(work_for(solid(200, 100, RED), preset(width=100), master_width=400), "layout")
    assert work.plan.scaled == (100, 50) and work.size == (100, 50)  # of 400x200, not 200x100
    assert work.lineage.scale == 0.25


def test_fill_window_keeps_the_gravity_side_and_resizes_only_the_window():
    image = solid(200, 100, RED)
    for gravity, left in (("west", 0), ("centre", 50), ("east", 100)):
        fill = preset(width=50, height=50, fit="fill", gravity=gravity)
        work = after(work_for(image, fill), "window")
        assert work.region == Box(left, 0, 100, 100) and work.size == (50, 50)
        assert not work.smart_cut and work.lineage.crop == gravity
        assert work.lineage.shown == Box(left, 0, 100, 100)
    fit = after(work_for(image, preset(width=50)), "window")
    assert fit.region is None and fit.size == (50, 25) and fit.lineage.crop is None


def busy_patch(width: int, height: int, left: int) -> pyvips.Image:
    """A grey field with a saturated, edgy patch at `left`: what attention looks for."""
    image = solid(width, height, (128, 128, 128))
    for i in range(0, 80, 8):
        image = image.draw_rect(list(RED if i % 16 else BLUE), left + i, 10, 8, height - 20,
                                fill=True)
    return image


def test_attention_window_follows_the_detail_and_analyses_a_shrunk_copy():
    fill = preset(width=100, height=100, fit="fill", gravity="attention")
    # 400x100 covering a 100x100 canvas is 4 canvases: analysed whole, after scale (by crop).
    small = after(work_for(busy_patch(400, 100, 300), fill), "window")
    assert small.region is None and small.size == (400, 100) and small.smart_cut
    # 1600x100 covering a 100x100 canvas is 16 canvases: analysed at 800x50, window in base.
    wide = after(work_for(busy_patch(1600, 100, 1500), fill), "window")
    assert not wide.smart_cut and wide.region is not None and wide.region.left >= 1400
    assert (800, 50) in [(level.width, level.height) for _, _, level in wide.pyramid.levels]
    assert wide.lineage.crop == "attention" and wide.lineage.shown == wide.region


def test_scale_resizes_the_region_once_per_size():
    image = solid(200, 100, RED)
    work = after(work_for(image, preset(width=50)), "scale")
    assert (work.image.width, work.image.height) == (50, 25)
    again = after(Work(work.preset, work.decoded, work.pyramids, {}), "scale")
    assert again.image is work.image  # the second ask comes from memory: resized once


def test_crop_cuts_the_attention_window_out_of_a_covering_image_resized_whole():
    fill = preset(width=100, height=100, fit="fill", gravity="attention")
    work = after(work_for(busy_patch(400, 100, 300), fill), "scale")
    covering = work.image
    out = pipeline.crop(work).image
    assert (out.width, out.height) == (100, 100)
    assert work.lineage.shown is not None and work.lineage.shown.left >= 280  # the busy side
    assert distance(out.getpoint(50, 50), (128, 128, 128)) > 50
    work.smart_cut, work.image = False, covering
    assert pipeline.crop(work).image is covering  # nothing left to cut: untouched


def test_pad_centres_on_the_background_colour():
    work = work_for(solid(60, 40, RED), ImagePreset(resize=Resize(width=100, height=100,
                    fit="pad"), format="png", background="#0000ff"))
    work.image = work.decoded.image
    work.plan = Layout((60, 40), None, False, (100, 100), (20, 30))
    out = pipeline.pad(work).image
    assert (out.width, out.height) == (100, 100)
    for (x, y), colour in {(19, 50): BLUE, (20, 30): RED, (79, 69): RED, (80, 70): BLUE,
                           (50, 29): BLUE, (50, 70): BLUE}.items():
        assert distance(out.getpoint(x, y), colour) == 0, (x, y)
    work.image = solid(60, 40, (*RED, 255))
    assert pipeline.pad(work).image.getpoint(0, 0)[3] == 0  # transparent where alpha is kept


def test_encode_returns_bytes_that_decode_to_the_size():
    for format, bands in (("jpeg", 3), ("webp", 4), ("png", 4)):
        work = work_for(solid(64, 48, (*RED, 200)), preset(format, width=64))
        work.image = work.decoded.image if bands == 4 else work.decoded.image[:3]
        work = pipeline.encode(work)
        out = pyvips.Image.new_from_buffer(work.data, "")
        assert (out.width, out.height, out.bands) == (64, 48, bands), format
        assert work.quality == work.preset.effective_quality


def test_run_fills_in_the_lineage():
    image = solid(400, 300, WHITE).draw_rect(list(RED), 100, 50, 200, 100, fill=True)
    fill = ImagePreset(resize=Resize(width=60, height=60, fit="fill", gravity="west"),
                       format="jpeg", trim={"threshold": 10})
    work = pipeline.run(work_for(image, fill, master_width=800))
    assert (work.image.width, work.image.height) == (60, 60) and work.data
    assert work.lineage.trim == Box(198, 98, 404, 204)  # master pixels: twice the base's
    assert work.lineage.shown == Box(198, 98, 204, 204) and work.lineage.crop == "west"
    assert work.lineage.scale == 119 / 404  # the covering width over the trimmed width
