"""keeper/chart.py: the stdlib PNG line chart. Each chart is decoded back here (chunks, CRCs,
IDAT, filter bytes) and its pixels are checked: series colors, title text, the zero line,
the "no data" note, and a line pixel where a known data point must be."""

from __future__ import annotations

import struct
import zlib

import pytest

from keeper import chart
from keeper.chart import COLORS, line_chart

Pixels = list[list[tuple[int, int, int]]]


def decode(png: bytes) -> tuple[int, int, Pixels]:
    """(width, height, rows of RGB pixels) of an 8-bit RGB, non-interlaced PNG, checking its
    structure on the way: signature, CRC of every chunk, IHDR first, IEND last, filter 0 rows."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    i, chunks = 8, []
    while i < len(png):
        (n,) = struct.unpack(">I", png[i:i + 4])
        kind, data = png[i + 4:i + 8], png[i + 8:i + 8 + n]
        (crc,) = struct.unpack(">I", png[i + 8 + n:i + 12 + n])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF, kind
        chunks.append((kind, data))
        i += 12 + n
    assert i == len(png)
    kinds = [k for k, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds and chunks[-1][1] == b""
    w, h, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, ctype, comp, filt, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(d for k, d in chunks if k == b"IDAT"))
    stride = 3 * w + 1
    assert len(raw) == h * stride
    assert all(raw[r * stride] == 0 for r in range(h))  # filter type 0 (None) on every row
    rows = [[tuple(raw[r * stride + 1 + 3 * x:r * stride + 4 + 3 * x]) for x in range(w)] for r in range(h)]
    return w, h, rows  # type: ignore[return-value]


def count(px: Pixels, color: tuple[int, int, int], rows: range | None = None) -> int:
    return sum(row.count(color) for row in (px if rows is None else px[rows.start:rows.stop]))


def near(px: Pixels, x: int, y: int, color: tuple[int, int, int], r: int = 2) -> bool:
    return any(px[j][i] == color for j in range(y - r, y + r + 1) for i in range(x - r, x + r + 1)
               if 0 <= j < len(px) and 0 <= i < len(px[0]))


def axes(px: Pixels) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the plot box, found from the axis color alone: the y axis is the
    column with the most axis pixels (it runs y0..y1), the x axis the row with the most (x0..x1)."""
    w, h = len(px[0]), len(px)
    col = max(range(w), key=lambda x: sum(px[y][x] == chart.AXIS for y in range(h)))
    row = max(range(h), key=lambda y: px[y].count(chart.AXIS))
    y0 = min(y for y in range(h) if px[y][col] == chart.AXIS)
    x1 = max(x for x in range(w) if px[row][x] == chart.AXIS)
    return col, y0, x1, row


RISK = [(name, [(float(m), max(0.0, -m) * k * 1e4) for m in range(-50, 51)]) for name, k in
        (("WETH", 3), ("WBTC", 2), ("USDC", 1))]


def test_valid_png_with_the_asked_size():
    png = line_chart(RISK, title="Liquidatable debt", x_label="price move (%)", y_label="USD",
                     width=640, height=360)
    w, h, px = decode(png)
    assert (w, h) == (640, 360)
    assert px[0][0] == (255, 255, 255)  # white background


def test_every_series_color_is_drawn():
    w, h, px = decode(line_chart(RISK, title="t", x_label="x", y_label="y", width=640, height=360))
    for c in COLORS[:3]:
        assert count(px, c) > 200  # far more than the legend swatch (14 x 3): the line itself
    assert count(px, COLORS[3]) == 0  # a fourth series' color: no fourth series


def test_title_text_is_drawn_in_the_title_area():
    band = range(0, 30)  # the title is 2x (14 px) from y = 10
    _, _, with_title = decode(line_chart(RISK, title="Liquidatable debt by price move", x_label="x", y_label="y"))
    _, _, without = decode(line_chart(RISK, title="", x_label="x", y_label="y"))
    assert count(with_title, chart.TITLE, band) > 150
    assert count(without, chart.TITLE) == 0
    # at 2x: 2x2 blocks, so the title's glyph pixels come in pairs of columns
    row = next(r for r in band if chart.TITLE in with_title[r])
    xs = [x for x, p in enumerate(with_title[row]) if p == chart.TITLE]
    assert all((x - 1 in xs) or (x + 1 in xs) for x in xs)


def test_axis_labels_and_legend_names_are_drawn():
    # the same chart without any text: every text pixel of the first comes from the labels
    _, _, bare = decode(line_chart([("a", [(0, 1), (1, 2)])], title="", x_label="", y_label=""))
    _, _, full = decode(line_chart([("a", [(0, 1), (1, 2)])], title="", x_label="price move", y_label="debt"))
    assert count(full, chart.TEXT) > count(bare, chart.TEXT) + 60


def test_negative_x_spans_zero_with_a_zero_line():
    w, h, px = decode(line_chart(RISK, title="move", x_label="x", y_label="y", width=640, height=360,
                                 x_format=lambda v: f"{v:+.0f}%"))
    x0, y0, x1, y1 = axes(px)
    # x runs -50..+50: the zero line is the column halfway along the axis, from top to bottom
    zero_cols = [x for x in range(w) if sum(px[y][x] == chart.ZERO for y in range(y0, y1)) > (y1 - y0) // 2]
    assert len(zero_cols) == 1 and abs(zero_cols[0] - (x0 + x1) / 2) <= 1
    # at -50% (the left edge) WETH (3x) is above WBTC (2x), above USDC (1x), in those proportions
    ys = [min(y for y in range(h) if px[y][x0 + 2] == c) for c in COLORS[:3]]
    assert ys[0] < ys[1] < ys[2] < y1
    assert abs((y1 - ys[0]) / (y1 - ys[2]) - 3) < 0.1 and abs((y1 - ys[1]) / (y1 - ys[2]) - 2) < 0.1


def test_no_x_zero_line_when_x_does_not_span_zero():
    w, h, px = decode(line_chart([("a", [(1, 1), (5, 3)])], title="", x_label="", y_label=""))
    x0, y0, x1, y1 = axes(px)
    assert not any(sum(px[y][x] == chart.ZERO for y in range(y0, y1)) > (y1 - y0) // 2 for x in range(w))


@pytest.mark.parametrize("series", [[], [("WETH", [])], [("a", [(0, 0), (10, 0)]), ("b", [(5, 0)])],
                                    [("nan", [(float("nan"), 1.0), (1.0, float("inf"))])]])
def test_nothing_to_draw_still_gives_a_png_with_a_no_data_note(series):
    w, h, px = decode(line_chart(series, title="Empty", x_label="x", y_label="y", width=400, height=300))
    assert (w, h) == (400, 300)
    assert count(px, chart.NOTE) > 50


def test_no_note_when_there_is_data():
    _, _, px = decode(line_chart(RISK, title="t", x_label="x", y_label="y"))
    assert count(px, chart.NOTE) == 0


def test_a_known_data_point_is_on_the_line():
    # y = x over 0..10: the y ticks are 0..10 (step 2), the x axis spans 0..10 exactly, so
    # (0, 0) is the axis corner, (10, 10) the top right of the plot box, (5, 5) its middle
    w, h, px = decode(line_chart([("diag", [(0, 0), (10, 10)])], title="diag", x_label="x", y_label="y",
                                 width=400, height=300, y_format=lambda v: f"{v:g}"))
    x0, y0, x1, y1 = axes(px)
    blue = COLORS[0]
    assert x1 - x0 > 250 and y1 - y0 > 150
    for fx, fy in ((0, 0), (0.5, 0.5), (1, 1), (0.25, 0.25), (0.8, 0.8)):
        assert near(px, round(x0 + fx * (x1 - x0)), round(y1 - fy * (y1 - y0)), blue, 2), (fx, fy)
    for fx, fy in ((0.75, 0.25), (0.25, 0.75)):  # off the line: nothing blue there
        assert not near(px, round(x0 + fx * (x1 - x0)), round(y1 - fy * (y1 - y0)), blue, 4)


def test_steps_hold_the_value_until_the_next_x():
    series = [("s", [(0, 0), (5, 10), (10, 10)])]
    _, _, lines = decode(line_chart(series, title="", x_label="", y_label="", width=400, height=300))
    _, _, steps = decode(line_chart(series, title="", x_label="", y_label="", width=400, height=300, steps=True))
    x0, y0, x1, y1 = axes(steps)
    blue = COLORS[0]
    at = (round(x0 + 0.25 * (x1 - x0)), round(y1 - 0.5 * (y1 - y0)))  # data (2.5, 5): on the slope
    assert near(lines, *at, blue) and not near(steps, *at, blue, 4)
    assert near(steps, round(x0 + 0.25 * (x1 - x0)), y1, blue)  # (2.5, 0): still 0
    assert near(steps, round(x0 + 0.5 * (x1 - x0)), round(y1 - 0.5 * (y1 - y0)), blue)  # the riser at x = 5


def test_negative_y_gets_a_zero_row_and_negative_ticks():
    _, _, px = decode(line_chart([("pnl", [(0, -2e5), (1, 1e5)])], title="", x_label="", y_label=""))
    x0, y0, x1, y1 = axes(px)
    zero_rows = [y for y in range(y0, y1) if px[y][x0 + 1:x1].count(chart.ZERO) > (x1 - x0) // 2]
    assert len(zero_rows) == 1 and y0 < zero_rows[0] < y1


def test_usd_labels():
    assert [chart.usd(v) for v in (0, 950, 350_000, 1_200_000, 2.5e9, -40_000, 999_999, 1_050_000, 0.5)] == [
        "$0", "$950", "$350k", "$1.2M", "$2.5B", "-$40k", "$1M", "$1.05M", "$0.5"]


def test_nice_ticks():
    assert chart._ticks(0, 4.2e6, chart._nice_step(4.2e6, 7)) == [0, 1e6, 2e6, 3e6, 4e6, 5e6]
    assert chart._ticks(-50, 50, chart._nice_step(100, 10)) == [float(v) for v in range(-50, 51, 10)]
    assert chart._ticks(0, 0.75, chart._nice_step(0.75, 4)) == [0, 0.2, 0.4, 0.6, 0.8]
    assert [chart._next_step(s) for s in (1, 2, 5, 0.05)] == [2, 5, 10, 0.1]


def test_font_covers_printable_ascii():
    needed = "0123456789 .,%$-+():/_<>=kM" + "".join(map(chr, range(65, 91))) + "".join(map(chr, range(97, 123)))
    glyphs = chart._GLYPHS
    assert len(glyphs) == 95 and glyphs[0] == ()
    assert all(glyphs[ord(c) - 32] for c in needed if c != " ")
    # no two printable characters look the same
    assert len({g for g in glyphs}) == 95


def test_long_names_and_many_series_fit():
    series = [(f"series number {i} with a long name", [(x, (i + 1) * x) for x in range(50)]) for i in range(12)]
    w, h, px = decode(line_chart(series, title="x" * 300, x_label="y" * 300, y_label="z" * 300,
                                 width=320, height=240))
    assert (w, h) == (320, 240)
