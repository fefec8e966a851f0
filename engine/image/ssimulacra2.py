"""SSIMULACRA2: how far a derivative looks from its reference, on a 100-point scale.

The metric is Jon Sneyers' (libjxl tools/ssimulacra2.cc, version 2.1 constants): 100 means
identical, 90 visually lossless at 1:1, 70 high quality, 50 medium, 30 low. Its steps, in order:
sRGB -> linear RGB -> XYB, made positive (X*14+0.42, Y+0.01, B-Y+0.55); six scales, each a 2x2
box average of the one before in linear RGB (edge pixels repeated), converted to XYB again; at
each scale and XYB channel a Gaussian blur (sigma 1.5) of both images, of their squares and of
their product, giving an SSIM map (1 - SSIM, with SSIMULACRA2's mean term that has no
denominator) and an edge map (the ratio of local detail: ringing where the distorted image has
edges the reference lacks, blur where it lost them); the 1-norm and 4-norm of each of the three
maps, 6 scales x 3 channels x 3 maps x 2 norms = 108 numbers, weighted and mapped to the score.

How it is fast, on a 2 MP image on a 2-core VM (benchmarks/ssimulacra2.py): the Python reference
takes 2.7-3.0 s; `score` 0.10-0.12 s of wall time (0.18-0.20 s of CPU on two threads; when the
other core is busy it falls back towards that CPU time), and a candidate against a prepared
`Reference` 0.09-0.10 s on one thread:
- libvips decodes and linearises (a lookup table); the pyramid averages linear RGB (column pairs
  as a small matrix product, 3x numpy's strided adds); numpy mixes each scale to the opsin
  space (a matrix product per row that writes planes, half the CPU of libvips' recomb, and
  only the two mixes X and Y need at the full size), takes the cube root (a tenth of libvips'
  pow) and the per-pixel maps, in chunks of rows that stay in the CPU cache;
- the blur is a banded matrix product in small BLAS calls, about 4x libvips' float conv;
- only the maps that carry weight are computed: 56 of the 108 weights are zero and 27 more are
  negligible (NEGLIGIBLE_WEIGHT), so the full-size scale, three quarters of the pixels, needs
  only Y's maps, and the smallest scale nothing;
- `Reference` keeps the reference's half (its XYB planes, blurs and variances: about 20 bytes
  a pixel), so a quality search that scores five encodes of one image prepares it once; it
  runs on the calling thread only (the engine calls it inside a task that has its own core);
- `score`, one pair, uses a second thread: the candidate's pyramid and XYB planes are built
  beside the reference's pyramid, then both threads take bands of about _BAND_ROWS rows of
  every scale from one queue, each band computing both halves (its reference XYB and blurs
  read _HALO rows more on either side, the blur's reach). The bands cut the same chunks and
  blur tiles as a whole scale, and lay their rows out in the same matrix products (_DOWN),
  so the score is `Reference`'s to the bit on any CPU; smaller pieces of
  work also stay in the cache (one thread over bands takes 0.15 s, Reference + score 0.2 s).

Where libjxl and the Python port on PyPI (`ssimulacra2`, the tests' oracle) differ, this follows
the port, whose agreement the tests check:
- the blur is a truncated Gaussian (radius 5) with zeros beyond the left and right edges and
  mirrored rows beyond the top and bottom, the port's stand-in for libjxl's recursive Gaussian;
- a scale is computed only while it is at least 8x8 (libjxl computes one more, smaller, scale
  for images whose short side is 224 px or less); an image under 8x8 scores 100.
Both read the 108 weights in order over the scales there are, so an image with a side under
FULL_SCALES_MIN_SIDE (225 px) has fewer than six scales and is weighted with other scales'
weights: its score is not comparable with a larger image's (a 64x64 JPEG at q40 scores about
-40, a 640x480 one about 60).
Alpha is done as libjxl does it (the port drops alpha): an image with alpha is blended onto a
grey in gamma-encoded sRGB before linearising; when the reference has alpha the score is the
worse of a dark (0.1) and a light (0.9) background, otherwise the grey is 0.5.
"""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
import pyvips
from numpy.lib.stride_tricks import as_strided

NUM_SCALES = 6
MIN_SIZE = 8  # a scale smaller than this is not scored
FULL_SCALES_MIN_SIDE = MIN_SIZE * 2 ** (NUM_SCALES - 1) - 31  # 225: ceil(225 / 32) = 8
# Maps whose weights are all below this are not computed (their norms count as 0): 27 weights,
# 0.02 together, against norms that are mostly under 0.01; leaving them out halves the work
# (the full-size X and B channels, and the smallest scale, need nothing else) and moves a score
# by a few hundredths of a point at most (tests/test_ssimulacra2.py measures it).
NEGLIGIBLE_WEIGHT = 0.0025
_C2 = 0.0009
X, Y, B = 0, 1, 2

# Opsin absorbance (libjxl opsin_params.h): linear RGB -> cone-like mix, plus a bias that keeps
# the cube root off its infinitely steep start. Every entry is positive, so for sRGB input the
# mix is positive and libjxl's clamp at zero never acts.
_OPSIN = [
    [0.30, 1.0 - 0.078 - 0.30, 0.078],
    [0.23, 1.0 - 0.078 - 0.23, 0.078],
    [0.24342268924547819, 0.20476744424496821,
     1.0 - 0.24342268924547819 - 0.20476744424496821],
]
_BIAS = 0.0037930732552754493
_OPSIN_F32 = np.array(_OPSIN, np.float32)
_CBRT_BIAS = _BIAS ** (1 / 3)

# The blur: sigma 1.5 truncated at 3.33 sigma (radius 5) and normalised, as the port's scipy call.
_SIGMA = 1.5
_RADIUS = int(3.33 * _SIGMA + 0.5)
_TAPS = [math.exp(-0.5 * (i / _SIGMA) ** 2) for i in range(-_RADIUS, _RADIUS + 1)]
_CHUNK = 65536  # pixels per chunk of the per-pixel maps (about: whole multiples of 8 rows):
# their arrays stay in the CPU cache, and two threads hand the GIL over half as often as at 32K
_BAND_ROWS = 128  # rows per band of a scale in `score`
_HALO = 8  # rows beyond a band that its blur reads: the radius, rounded up to the tile of rows
_BAND = 8  # output rows per small matrix product in the blur
_STRIP = 512  # columns per product: 8 x 18 x 512 stays under OpenBLAS' threading threshold
# Rows per product of the horizontal pass. How OpenBLAS computes a row of a product depends on
# where the row sits in it (on AVX-512 the last rows of a 64-row product go to a narrower
# kernel, whose rounding differs), so a band lays its rows out as the whole scale does: the
# products start at the scale's rows 0, 64, 128... (_blur's `origin`). Then a band's score is
# Reference's to the bit on every CPU.
_DOWN = 64
_BAND_MATRIX = np.zeros((_BAND, _BAND + 2 * _RADIUS), np.float32)
for _i in range(_BAND):
    _BAND_MATRIX[_i, _i: _i + 2 * _RADIUS + 1] = np.array(_TAPS) / sum(_TAPS)
_BAND_MATRIX_T = np.ascontiguousarray(_BAND_MATRIX.T)
# Two neighbouring RGB pixels (6 values) -> their average (3): the pyramid's column pairs.
_PAIRS = np.vstack([np.eye(3), np.eye(3)]).astype(np.float32) * 0.25

_RGB_OR_GREY = frozenset({"srgb", "rgb", "rgb16", "b-w", "grey16", "multiband"})
# sRGB decoding (IEC 61966-2-1) of 8-bit values plus the opsin bias, as a lookup table: each
# row of _OPSIN sums to 1, so adding the bias to R, G and B adds it to every mix.
_LINEAR_LUT = pyvips.Image.new_from_list([[
    _BIAS + ((v / 255 / 12.92) if v / 255 <= 0.04045 else ((v / 255 + 0.055) / 1.055) ** 2.4)
    for v in range(256)
]]).cast("float")

# The 108 weights of SSIMULACRA 2.1 in libjxl's order: channel, scale, then for the 1-norm and
# the 4-norm in turn: SSIM, ringing, blur.
_WEIGHTS = np.array([
    0.0, 0.0007376606707406586, 0.0, 0.0, 0.0007793481682867309, 0.0, 0.0,
    0.0004371155730107379, 0.0, 1.1041726426657346, 0.00066284834129271,
    0.00015231632783718752, 0.0, 0.0016406437456599754, 0.0, 1.8422455520539298,
    11.441172603757666, 0.0, 0.0007989109436015163, 0.000176816438078653, 0.0,
    1.8787594979546387, 10.94906990605142, 0.0, 0.0007289346991508072, 0.9677937080626833,
    0.0, 0.00014003424285435884, 0.9981766977854967, 0.00031949755934435053,
    0.0004550992113792063, 0.0, 0.0, 0.0013648766163243398, 0.0, 0.0, 0.0, 0.0, 0.0,
    7.466890328078848, 0.0, 17.445833984131262, 0.0006235601634041466, 0.0, 0.0,
    6.683678146179332, 0.00037724407979611296, 1.027889937768264, 225.20515300849274, 0.0,
    0.0, 19.213238186143016, 0.0011401524586618361, 0.001237755635509985,
    176.39317598450694, 0.0, 0.0, 24.43300999870476, 0.28520802612117757,
    0.0004485436923833408, 0.0, 0.0, 0.0, 34.77906344483772, 44.835625328877896, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0008680556573291698, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0005313191874358747, 0.0, 0.00016533814161379112, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0004179171803251336, 0.0017290828234722833, 0.0, 0.0020827005846636437, 0.0, 0.0,
    8.826982764996862, 23.19243343998926, 0.0, 95.1080498811086, 0.9863978034400682,
    0.9834382792465353, 0.0012286405048278493, 171.2667255897307, 0.9807858872435379, 0.0,
    0.0, 0.0, 0.0005130064588990679, 0.0, 0.00010854057858411537,
])


def score(reference: pyvips.Image, distorted: pyvips.Image) -> float:
    """SSIMULACRA2 of `distorted` against `reference` (same size; 8-bit sRGB, with or without
    alpha, as the reference implementation treats them).

    Unlike `Reference`, this uses a second thread: one image's pyramid is built beside the
    other's, then each scale is cut into bands of rows, scored on either thread (numpy, BLAS
    and libvips release the GIL). The score is the one `Reference(reference).score(distorted)`
    gives, to the bit."""
    _check_size(reference.width, reference.height, distorted)
    backgrounds = _backgrounds(reference)
    if len(backgrounds) > 1:  # decoded once, read once per background
        reference, distorted = reference.copy_memory(), distorted.copy_memory()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return min(_score_pair(pool, reference, distorted, bg) for bg in backgrounds)


def _score_pair(pool: ThreadPoolExecutor, reference: pyvips.Image, distorted: pyvips.Image,
                bg: float) -> float:
    """One background of `score`. The second thread builds the candidate's pyramid and XYB
    planes (all of its work that does not need the reference) while this one builds the
    reference's pyramid; then both take bands of rows, the largest first, from one queue until
    it is empty, so that neither waits while the other has work left."""
    def candidate() -> list[dict[int, np.ndarray]]:
        pyramid = _pyramid(_linear(distorted, bg))
        return [_xyb(rgb, need.blurred) for rgb, need in zip(pyramid, _needs(len(pyramid), False))]

    theirs = pool.submit(candidate)
    ours = _pyramid(_linear(reference, bg))
    needs, xyb = _needs(len(ours), False), theirs.result()
    bands = {s: _bands(*rgb.shape[:2]) if need.blurred else [] for s, (rgb, need)
             in enumerate(zip(ours, needs))}
    queue = deque(sorted(((s, rows) for s in bands for rows in bands[s]),  # the largest first
                         key=lambda b: -len(b[1]) * ours[b[0]].shape[1]
                         * len(needs[b[0]].blurred)))

    def run() -> dict[tuple[int, int], np.ndarray]:
        done = {}
        while queue:
            try:
                s, rows = queue.popleft()
            except IndexError:  # the other thread took the last one
                break
            done[s, rows.start] = _band_sums(ours[s], xyb[s], needs[s], rows)
        return done

    other = pool.submit(run)
    done = run() | other.result()
    norms = np.array([_norms([done[s, rows.start] for rows in bands[s]],
                             rgb.shape[0] * rgb.shape[1]) for s, rgb in enumerate(ours)])
    return _final(norms, len(ours))


def _bands(height: int, width: int) -> list[range]:
    """The rows of a scale cut into bands of about _BAND_ROWS rows (one band when it is short).
    The cuts are at multiples of the chunk of rows, so that the bands cut the same chunks as
    the whole scale, and of 8, the blur's tile of rows, so that every blurred value is the
    same."""
    step = _chunk_rows(width)
    count = max(1, min(round(height / _BAND_ROWS), height // (2 * step)))
    cuts = sorted({round(height * i / count / step) * step for i in range(1, count)} - {0})
    return [range(a, b) for a, b in zip([0, *cuts], [*cuts, height])]


def _band_sums(ours: np.ndarray, theirs: dict[int, np.ndarray], need: _Need,
               rows: range) -> np.ndarray:
    """The chunk sums (`_Scale.sums`) of `rows` of one scale, from those rows and _HALO more on
    each side inside the image (the blur reaches 5 rows; beyond the image it mirrors, as the
    whole scale does)."""
    top, bottom = max(0, rows.start - _HALO), min(ours.shape[0], rows.stop + _HALO)
    scale = _Scale(ours[top: bottom], need, range(rows.start - top, rows.stop - top), rows.start)
    return scale.sums({c: plane[top: bottom] for c, plane in theirs.items()})


def _check_size(width: int, height: int, distorted: pyvips.Image) -> None:
    if (distorted.width, distorted.height) != (width, height):
        raise ValueError(f"SSIMULACRA2 needs images of one size: the reference is "
                         f"{width}x{height}, the distorted image "
                         f"{distorted.width}x{distorted.height}")


def _backgrounds(reference: pyvips.Image) -> tuple[float, ...]:
    """libjxl: a reference with alpha is judged on a dark and on a light background."""
    return (0.1, 0.9) if reference.hasalpha() else (0.5,)


class Reference:
    """A reference image prepared once (its pyramid, XYB planes and blurs, per background), so
    that each candidate scored against it costs only its own half of the work. It runs on the
    calling thread only (the engine calls it inside a task that has its own core)."""

    def __init__(self, reference: pyvips.Image, *, exact: bool = False) -> None:
        """`exact` computes every map with a nonzero weight (slower, for validation)."""
        self.width, self.height = reference.width, reference.height
        self._backgrounds = _backgrounds(reference)
        if len(self._backgrounds) > 1:
            reference = reference.copy_memory()  # decoded once, read once per background
        self._scales = {}
        for bg in self._backgrounds:
            pyramid = _pyramid(_linear(reference, bg))
            needs = _needs(len(pyramid), exact)
            self._scales[bg] = [_Scale(mix, need) for mix, need in zip(pyramid, needs)]

    def score(self, distorted: pyvips.Image) -> float:
        """SSIMULACRA2 of `distorted` against this reference."""
        _check_size(self.width, self.height, distorted)
        if len(self._backgrounds) > 1:
            distorted = distorted.copy_memory()  # decoded once, read once per background
        return min(self._score(bg, distorted) for bg in self._backgrounds)

    def _score(self, bg: float, distorted: pyvips.Image) -> float:
        scales = self._scales[bg]
        pyramid = _pyramid(_linear(distorted, bg), len(scales))
        norms = np.array([_norms([s.sums(_xyb(rgb, s.need.blurred))], rgb.shape[0] * rgb.shape[1])
                          for s, rgb in zip(scales, pyramid)])
        return _final(norms, len(scales))


class _Need:
    """What one scale computes per channel: the blur (for the edge maps) and the SSIM map."""

    def __init__(self, edge: tuple[bool, ...], ssim: tuple[bool, ...]) -> None:
        self.edge, self.ssim = edge, ssim
        self.blurred = tuple(c for c in (X, Y, B) if edge[c] or ssim[c])


@cache
def _needs(num_scales: int, exact: bool) -> list[_Need]:
    """Per scale, the maps that count: with a weight of at least NEGLIGIBLE_WEIGHT (any weight
    above zero when exact). Like libjxl, the weights are read in order over the scales there
    are, so an image with fewer scales reads other weights."""
    w = _WEIGHTS[: 3 * 6 * num_scales].reshape(3, num_scales, 2, 3)  # channel, scale, norm, map
    counts = w > 0 if exact else w >= NEGLIGIBLE_WEIGHT
    return [_Need(edge=tuple(bool(counts[c, s, :, 1:].any()) for c in (X, Y, B)),
                  ssim=tuple(bool(counts[c, s, :, 0].any()) for c in (X, Y, B)))
            for s in range(num_scales)]


class _Scale:
    """One scale of the reference (or a band of its rows): its XYB planes and the blurs that do
    not involve the candidate, as float32 numpy arrays.

    The candidate enters as its difference from the reference, e = img2 - img1. That is the
    same SSIM algebraically, but the variances then come out of small numbers: in float32,
    blur(img^2) - mu^2 of values near 0.5 carries an error of about 1e-7, a tenth of a percent of
    the constant C2 that the SSIM ratio is measured against, enough to move a score by 0.2."""

    def __init__(self, rgb: np.ndarray, need: _Need, rows: range | None = None,
                 origin: int = 0) -> None:
        """`rows`: the rows of `rgb` that are scored (a band); the others are only read by
        the blur. All of them by default. `origin`: the scale's row the first of them is."""
        self.need, self.width, self.origin = need, rgb.shape[1], origin
        self.rows = range(rgb.shape[0]) if rows is None else rows
        self.xyb = _xyb(rgb, need.blurred)
        c_ssim = [c for c in (X, Y, B) if need.ssim[c]]
        blurred = _blur([self.xyb[c] for c in need.blurred] +
                        [self.xyb[c] * self.xyb[c] for c in c_ssim], self.rows, origin)
        self.mu = dict(zip(need.blurred, blurred))
        self.variance = {c: sq - self.mu[c] * self.mu[c]
                         for c, sq in zip(c_ssim, blurred[len(need.blurred):])}

    def sums(self, img2: dict[int, np.ndarray]) -> np.ndarray:
        """Per chunk of the scored rows (chunks small enough for the CPU cache: the maps take
        some 15 operations per pixel, which is memory-bound over whole planes) and per channel,
        the sums of the SSIM, ringing and blur maps and of their 4th powers against the
        candidate's XYB planes `img2` (all the rows of `rgb`): (chunks, 3, 6), zero where
        unused. Summed over the chunks in order they give the norms (`_norms`)."""
        need, img1, rows = self.need, self.xyb, self.rows
        step = _chunk_rows(self.width)
        out = np.zeros((-(-len(rows) // step), 3, 6))  # chunk, channel, (map, power)
        if not need.blurred:
            return out
        c_ssim = [c for c in (X, Y, B) if need.ssim[c]]
        diff = {c: img2[c] - img1[c] for c in need.blurred}
        blurred = _blur([diff[c] for c in need.blurred] +
                        [diff[c] * diff[c] for c in c_ssim] +
                        [img1[c] * diff[c] for c in c_ssim], rows, self.origin)
        k = len(need.blurred)
        mean_diff = dict(zip(need.blurred, blurred))
        ssim = {c: (self.mu[c], self.variance[c], mean_diff[c], blurred[k + i],
                    blurred[k + len(c_ssim) + i]) for i, c in enumerate(c_ssim)}
        scored = slice(rows.start, rows.stop)  # the blurred planes hold these rows only
        edge = {c: (img1[c][scored], self.mu[c], diff[c][scored], mean_diff[c])
                for c in (X, Y, B) if need.edge[c]}
        for i, y in enumerate(range(0, len(rows), step)):
            chunk = slice(y, y + step)
            for c, planes in ssim.items():
                out[i, c, :2] = _ssim_sums(*(p[chunk] for p in planes))
            for c, planes in edge.items():
                out[i, c, 2:] = _edge_sums(*(p[chunk] for p in planes))
        return out


def _chunk_rows(width: int) -> int:
    """Rows per chunk of the per-pixel maps: about _CHUNK pixels, a multiple of 8 rows."""
    return max(8, _CHUNK // width // 8 * 8)


def _norms(bands: list[np.ndarray], pixels: int) -> np.ndarray:
    """The 18 norms of a scale from its chunk sums (`_Scale.sums`, per band of rows, the bands
    and chunks in order), in libjxl's order: per channel, the 1-norms of the SSIM, ringing and
    blur maps, then their 4-norms."""
    # One chunk at a time, in order: the same total whether the scale was cut into bands or not.
    total = sum((chunk for band in bands for chunk in band), np.zeros((3, 6)))
    total /= pixels
    total[:, 1::2] **= 0.25
    return total.reshape(3, 3, 2).transpose(0, 2, 1).reshape(-1)


def _ssim_sums(mu1: np.ndarray, var1: np.ndarray, m: np.ndarray, sq: np.ndarray,
               cross: np.ndarray) -> list[float]:
    """Sums of d = max(0, 1 - SSIM') and d^4, where SSIM' has 1 - (mu1 - mu2)^2 as its mean
    term (SSIMULACRA2 drops SSIM's denominator there: XYB is already perceptual). With e the
    difference, m = blur(e), sq = blur(e^2), cross = blur(img1 e):
        var_e = sq - m^2, cov(img1, e) = cross - mu1 m,
        denominator = var1 + var2 + C2 = 2 var1 + 2 cov(img1, e) + var_e + C2,
        d = m^2 + (1 - m^2) var_e / denominator."""
    m2 = m * m
    var_e = sq - m2
    denom = cross - mu1 * m
    denom += var1
    denom *= 2
    denom += var_e
    denom += _C2
    var_e /= denom
    d = 1 - m2
    d *= var_e
    d += m2
    np.maximum(d, 0, out=d)
    return _power_sums(d)


def _edge_sums(img1: np.ndarray, mu1: np.ndarray, e: np.ndarray, m: np.ndarray) -> list[float]:
    """Sums (and sums of 4th powers) of the two sides of the edge ratio
    (1 + |img2 - mu2|) / (1 + |img1 - mu1|) - 1, where img2 - mu2 = (img1 - mu1) + (e - m):
    above zero the distorted image has edges the reference lacks (ringing, blocking), below
    zero it lost them (blur). The ratio is a division, as in libjxl, so that an identical
    image gives exactly 0."""
    detail1 = img1 - mu1
    ratio = e - m
    ratio += detail1
    np.abs(ratio, out=ratio)
    ratio += 1
    np.abs(detail1, out=detail1)
    detail1 += 1
    ratio /= detail1
    ratio -= 1
    ringing = np.maximum(ratio, 0)
    np.negative(ratio, out=ratio)
    np.maximum(ratio, 0, out=ratio)
    return _power_sums(ringing) + _power_sums(ratio)


def _power_sums(values: np.ndarray) -> list[float]:
    """The sum of `values` and of their 4th powers; `values` is consumed."""
    total = float(values.sum())
    np.square(values, out=values)
    np.square(values, out=values)
    return [total, float(values.sum())]


def _final(norms: np.ndarray, num_scales: int) -> float:
    """The weighted sum of the 108 norms (fewer for a small image) and libjxl's mapping of it to
    the 100-point score."""
    # norms: scale, channel, norm, map -> the weights' order: channel, scale, norm, map.
    ordered = norms.reshape(num_scales, 3, 2, 3).transpose(1, 0, 2, 3).reshape(-1)
    x = float(np.dot(_WEIGHTS[: ordered.size], np.abs(ordered))) * 0.9562382616834844
    x = 2.326765642916932 * x - 0.020884521182843837 * x * x + 6.248496625763138e-05 * x ** 3
    return 100.0 - 10.0 * x ** 0.6276336467831387 if x > 0 else 100.0


def _linear(image: pyvips.Image, bg: float) -> pyvips.Image:
    """Linear-light RGB floats, plus the opsin bias, from 8-bit (or 16-bit) sRGB; grey is spread
    to three bands and alpha blended onto `bg` in gamma-encoded sRGB first, as libjxl does."""
    if image.interpretation not in _RGB_OR_GREY:
        image = image.colourspace("srgb")  # CMYK, Lab...: not what fanout scores, but defined
    alpha = None
    if image.hasalpha():
        alpha = image[image.bands - 1]
        image = image.extract_band(0, n=image.bands - 1)
    if image.bands == 1:
        image = image.bandjoin([image, image])
    image = image.extract_band(0, n=3)
    if alpha is None and image.format == "uchar":
        return image.maplut(_LINEAR_LUT)
    peak = 255.0 if image.format == "uchar" else 65535.0
    encoded = image.cast("float") / peak
    if alpha is not None:
        a = alpha.cast("float") / peak
        encoded = encoded * a + (1 - a) * bg
    low = encoded / 12.92
    high = ((encoded + 0.055) / 1.055) ** 2.4
    return (encoded <= 0.04045).ifthenelse(low, high) + _BIAS


def _pyramid(linear: pyvips.Image, limit: int = NUM_SCALES) -> list[np.ndarray]:
    """Per scale that is scored, its linear RGB plus the bias (H x W x 3 float32; `linear`
    carries the bias already): libjxl's 2x2 box averages of linear RGB, the last row and column
    repeated where a size is odd. `_xyb` mixes each scale to the opsin space."""
    current = linear.numpy().astype(np.float32, copy=False)
    scales: list[np.ndarray] = []
    while len(scales) < limit and min(current.shape[:2]) >= MIN_SIZE:
        scales.append(current)
        if len(scales) < limit:
            current = _half(current)
    return scales


def _half(rgb: np.ndarray) -> np.ndarray:
    """2x2 box average, the last row and column repeated where a size is odd: rows first, as
    whole contiguous rows, then pairs of pixels as one small matrix product (3x numpy's
    strided adds)."""
    h, w, c = rgb.shape
    rows = rgb[0: h - h % 2: 2] + rgb[1::2]
    if h % 2:
        rows = np.concatenate([rows, 2 * rgb[-1:]])
    out = rows[:, : w - w % 2].reshape(rows.shape[0], w // 2, 2 * c) @ _PAIRS
    if w % 2:
        out = np.concatenate([out, 0.25 * (2 * rows[:, -1:])], axis=1)
    return out


def _xyb(rgb: np.ndarray, channels: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Linear RGB (plus the bias) -> opsin mix -> positive XYB, as float32 planes, for the
    channels asked for. The mix is a matrix product that writes planes (X and Y need only two
    of the three mixes), so the cube roots and the rest run over contiguous memory."""
    if not channels:
        return {}
    h, w, _ = rgb.shape
    k = 3 if B in channels else 2
    mix = np.empty((k, h, w), np.float32)  # a product per row: each under OpenBLAS' threading
    np.matmul(_OPSIN_F32[:k], rgb.transpose(0, 2, 1), out=mix.transpose(1, 0, 2))
    c0, c1 = np.cbrt(mix[0], out=mix[0]), np.cbrt(mix[1], out=mix[1])
    planes = {}
    if X in channels:
        planes[X] = c0 - c1
        planes[X] *= 7.0  # 14 * (c0 - c1) / 2; the biases cancel
        planes[X] += 0.42
    y = c0 + c1  # new arrays from here: a plane kept must not hold the whole of `mix`
    y *= 0.5
    if B in channels:
        planes[B] = np.cbrt(mix[2], out=mix[2]) - y  # B - Y, the biases cancel
        planes[B] += 0.55
    if Y in channels:
        y += 0.01 - _CBRT_BIAS
        planes[Y] = y
    return planes


def _blur(planes: list[np.ndarray], rows: range | None = None,
          origin: int = 0) -> list[np.ndarray]:
    """The port's Gaussian over each plane: rows mirrored beyond the top and bottom, zeros beyond
    the left and right edges (the port blurs transposed arrays, zero-padding their first axis).
    With `rows`, only those rows are blurred (a band of a scale: the planes' other rows are the
    halo the blur reads); `origin` is the scale's row the first of them is (see _DOWN).

    Each pass is a banded matrix product done as many small ones: 8 output rows (or columns)
    from 18 inputs, over strips of up to 512 columns (or rows). BLAS does those at several
    times the speed of libvips' float convolution (benchmarks/ssimulacra2.py measures both),
    and each product stays under OpenBLAS' threading threshold, so it runs on the calling
    thread, like the rest of a fanout task.
    """
    if not planes:
        return []
    k, (h, w), r, n = len(planes), planes[0].shape, _RADIUS, _BAND
    rows = range(h) if rows is None else rows
    tall, across = -(-len(rows) // n) * n, _strip(w)  # vertical pass: n rows by `across` columns
    wide, down = -(-w // across) * across, _DOWN  # horizontal: `down` rows by n columns
    lead = origin % down  # rows before ours in the first product, as in the whole scale
    height, cols = -(-(lead + tall) // down) * down, -(-w // n) * n
    # Buffers are not zeroed whole (np.empty), only where zeros are read.
    padded = np.empty((k, max(h, rows.start + tall) + 2 * r, wide), np.float32)
    padded[:, :, w:] = 0
    padded[:, 2 * r + h:] = 0
    for i, plane in enumerate(planes):
        padded[i, r: r + h, :w] = plane
        padded[i, :r, :w] = plane[r - 1:: -1]
        padded[i, r + h: 2 * r + h, :w] = plane[: h - r - 1: -1]
    # The vertical pass writes into columns r.. of `mid`: zeros on both sides (and the blurred
    # zero columns right of w) are the horizontal pass's padding.
    mid = np.empty((k, height, max(cols, wide) + 2 * r), np.float32)
    mid[:, :, :r] = 0
    mid[:, :, r + wide:] = 0
    mid[:, :lead] = 0
    mid[:, lead + tall:] = 0
    np.matmul(_BAND_MATRIX, _tiles(padded[:, rows.start: rows.start + tall + 2 * r],
                                   (n, across), (n + 2 * r, across)),
              out=_tiles(mid[:, lead: lead + tall, r: r + wide], (n, across), (n, across)))
    out = np.empty((k, height, cols), np.float32)
    np.matmul(_tiles(mid[:, :, : cols + 2 * r], (down, n), (down, n + 2 * r)), _BAND_MATRIX_T,
              out=_tiles(out, (down, n), (down, n)))
    return [out[i, lead: lead + len(rows), :w] for i in range(k)]


def _strip(size: int) -> int:
    """The strip length for `size`: at most _STRIP, in equal parts, so little is padding."""
    return -(-size // -(-size // _STRIP))


def _tiles(a: np.ndarray, step: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """A view of a (k, H, W) array as (k, H / step_y, W / step_x, size_y, size_x) tiles that
    start every `step` and may overlap (a window of the padded input)."""
    k, h, w = a.shape
    s0, s1, s2 = a.strides
    return as_strided(a, (k, (h - size[0]) // step[0] + 1, (w - size[1]) // step[1] + 1, *size),
                      (s0, step[0] * s1, step[1] * s2, s1, s2), writeable=True)
