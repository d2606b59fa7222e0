"""A small line chart as PNG bytes, standard library only (zlib + struct).

    line_chart([("WETH", [(-50.0, 1.2e6), ...]), ("WBTC", [...])],
               title="Liquidatable debt by price move", x_label="price move (%)",
               y_label="debt liquidatable (USD)", x_format=lambda v: f"{v:+.0f}%")

White background, a title (2x bitmap text), a legend (each series' color and name), axes
with "nice" ticks (1-2-5 steps) and their labels, a light grid, a vertical zero line when the
x range spans 0 (a horizontal one when the y range does), the axis labels (y rotated) and one
2 px line per series (or step lines: a value holds until the next x). Text is an embedded 5x7
bitmap font (ASCII 32..126). Nothing to draw (no points, or every y is 0) still gives a
valid chart, with a "no data" note.

Points are taken in x order; points that are not finite numbers are left out. The y axis
always includes 0. Output: 8-bit RGB PNG (filter 0 on every row), about 10 ms for 640x360.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Callable, Sequence

Color = tuple[int, int, int]
Series = Sequence[tuple[str, Sequence[tuple[float, float]]]]

# series colors in order (the first six are keeper/risk.py's COLORS)
COLORS: list[Color] = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                       (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
WHITE: Color = (255, 255, 255)
TITLE: Color = (0, 0, 0)
TEXT: Color = (40, 40, 40)
TICK_TEXT: Color = (70, 70, 70)
AXIS: Color = (60, 60, 60)
GRID: Color = (228, 228, 228)
ZERO: Color = (165, 165, 165)
NOTE: Color = (120, 120, 120)

# 5x7 font, ASCII 32..126: 5 column bytes per glyph, bit 0 = top row (the classic LCD font)
_FONT = bytes.fromhex(
    "0000000000" "00005f0000" "0007000700" "147f147f14" "242a7f2a12" "2313086462" "3649552250" "0005030000"
    "001c224100" "0041221c00" "14083e0814" "08083e0808" "0050300000" "0808080808" "0060600000" "2010080402"
    "3e5149453e" "00427f4000" "4261514946" "2141454b31" "1814127f10" "2745454539" "3c4a494930" "0171090503"
    "3649494936" "064949291e" "0036360000" "0056360000" "0814224100" "1414141414" "0041221408" "0201510906"
    "324979413e" "7e1111117e" "7f49494936" "3e41414122" "7f4141221c" "7f49494941" "7f09090901" "3e4149497a"
    "7f0808087f" "00417f4100" "2040413f01" "7f08142241" "7f40404040" "7f020c027f" "7f0408107f" "3e4141413e"
    "7f09090906" "3e4151215e" "7f09192946" "4649494931" "01017f0101" "3f4040403f" "1f2040201f" "3f4038403f"
    "6314081463" "0708700807" "6151494543" "007f414100" "0204081020" "0041417f00" "0402010204" "4040404040"
    "0001020400" "2054545478" "7f48444438" "3844444420" "384444487f" "3854545418" "087e090102" "0c5252523e"
    "7f08040478" "00447d4000" "2040443d00" "7f10284400" "00417f4000" "7c04180478" "7c08040478" "3844444438"
    "7c14141408" "081414187c" "7c08040408" "4854545420" "043f444020" "3c4040207c" "1c2040201c" "3c4030403c"
    "4428102844" "0c5050503c" "4464544c44" "0008364100" "00007f0000" "0041360800" "1008081008")
# lower case with descenders (rows 7-8, below the 7-row cell): 5 columns, bit 0 = top row
_DESCENDERS = {"g": (0x38, 0x144, 0x144, 0x144, 0xFC), "j": (0x80, 0x100, 0x104, 0xFD, 0),
               "p": (0x1FC, 0x44, 0x44, 0x44, 0x38), "q": (0x38, 0x44, 0x44, 0x44, 0x1FC),
               "y": (0x3C, 0x140, 0x140, 0x140, 0xFC)}


def _columns(g: int) -> tuple[int, ...]:
    return _DESCENDERS.get(chr(g + 32)) or tuple(_FONT[5 * g:5 * g + 5])


# per glyph: the (column, row) of its set pixels; anything outside 32..126 draws as "?"
_GLYPHS: list[tuple[tuple[int, int], ...]] = [
    tuple((c, r) for c, bits in enumerate(_columns(g)) for r in range(9) if bits >> r & 1) for g in range(95)]
GLYPH_W, GLYPH_H, ADVANCE = 5, 7, 6


def text_width(text: str, scale: int = 1) -> int:
    return max(0, len(text) * ADVANCE - 1) * scale


def usd(v: float) -> str:
    """Compact USD: "$0", "$950", "$350k", "$1.2M", "$2.5B", "-$40k" (3 significant digits)."""
    if not math.isfinite(v):
        return "?"
    sign, a = ("-" if v < 0 else ""), abs(v)
    units = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"), (1.0, ""))
    for i, (unit, suffix) in enumerate(units):
        if a >= unit or unit == 1.0:
            s = f"{a / unit:.3g}"
            if "e" in s or float(s) >= 1000:  # 999.6k rounds to 1000k: one unit up
                if i > 0:
                    unit, suffix = units[i - 1]
                    s = f"{a / unit:.3g}"
                else:
                    s = f"{a / unit:,.0f}"
            if a < 1 and a > 0:
                s = f"{a:.2g}"
            return f"{sign}${s}{suffix}" if s != "0" else "$0"
    return "$0"  # not reached


def _nice_step(span: float, n: int) -> float:
    """The smallest 1/2/5 x 10^k step that cuts span into at most n parts."""
    raw = span / max(1, n)
    mag = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * mag >= raw * (1 - 1e-9):
            return m * mag
    return 10 * mag


def _next_step(step: float) -> float:
    mag = 10.0 ** math.floor(math.log10(step) + 1e-9)
    m = round(step / mag)
    return (2 if m < 2 else 5 if m < 5 else 10) * mag


def _ticks(lo: float, hi: float, step: float) -> list[float]:
    a, b = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [float(f"{k * step:.12g}") + 0.0 for k in range(a, b + 1)]


def _plain(step: float) -> Callable[[float], str]:
    """A tick formatter with as many decimals as the step needs ("-0" printed as "0")."""
    d = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0

    def fmt(v: float) -> str:
        s = f"{v:,.{d}f}"
        return "0" if s.strip("-0.,") == "" else s
    return fmt


class Canvas:
    """An RGB raster (one bytearray, 3 bytes a pixel) with the few drawing operations a chart needs."""

    def __init__(self, width: int, height: int, bg: Color = WHITE):
        self.w, self.h = width, height
        self.buf = bytearray(bytes(bg) * (width * height))

    def rect(self, x0: int, y0: int, x1: int, y1: int, c: Color) -> None:
        """Fill [x0, x1) x [y0, y1), clipped to the image."""
        x0, x1 = max(0, x0), min(self.w, x1)
        y0, y1 = max(0, y0), min(self.h, y1)
        if x0 >= x1 or y0 >= y1:
            return
        row, w3, buf = bytes(c) * (x1 - x0), self.w * 3, self.buf
        o = (y0 * self.w + x0) * 3
        for _ in range(y0, y1):
            buf[o:o + len(row)] = row
            o += w3

    def vrect(self, x0: int, y0: int, x1: int, y1: int, c: Color) -> None:
        """rect() for tall, narrow areas: a strided slice per column and channel, not a slice per row."""
        x0, x1 = max(0, x0), min(self.w, x1)
        y0, y1 = max(0, y0), min(self.h, y1)
        if x0 >= x1 or y0 >= y1:
            return
        n, w3, buf = y1 - y0, self.w * 3, self.buf
        chans = [bytes((v,)) * n for v in c]
        for x in range(x0, x1):
            o = (y0 * self.w + x) * 3
            for k in range(3):
                buf[o + k:o + k + (n - 1) * w3 + 1:w3] = chans[k]

    def line(self, xa: float, ya: float, xb: float, yb: float, c: Color, width: int = 2) -> None:
        """A line width px thick: a width x width pen along the path (pixel centers at
        integers; width 2 sits right of and above it), drawn as runs: one vertical run per
        column for a steep line, one horizontal run per row for a flat one."""
        ox, oy = (width - 1) // 2, width // 2
        steep = abs(yb - ya) > abs(xb - xa)
        if steep:  # walk columns; swap roles so the walk is along the minor axis
            xa, ya, xb, yb = ya, xa, yb, xb
        # now |xb - xa| >= |yb - ya|: walk rows (integer minor coordinate) of the swapped frame
        if ya > yb:
            xa, ya, xb, yb = xb, yb, xa, ya
        ra, rb = int(round(ya)), int(round(yb))
        slope = (xb - xa) / (yb - ya) if yb != ya else 0.0
        for r in range(ra, rb + 1):
            if ra == rb:  # one row: the whole segment
                p, q = xa, xb
            else:
                lo, hi = max(ya, r - 0.5), min(yb, r + 0.5)
                p, q = xa + (lo - ya) * slope, xa + (hi - ya) * slope
            if p > q:
                p, q = q, p
            p0, p1 = int(round(p)), int(round(q))
            if steep:  # rows of the swapped frame are columns: a vertical run at x = r
                self.vrect(r - ox, p0 - oy, r - ox + width, p1 - oy + width, c)
            else:
                self.rect(p0 - ox, r - oy, p1 - ox + width, r - oy + width, c)

    def text(self, x: int, y: int, s: str, c: Color, scale: int = 1) -> None:
        """s with its top-left at (x, y)."""
        for ch in s:
            g = ord(ch) - 32
            for cx, cy in _GLYPHS[g if 0 <= g < 95 else 31]:
                px, py = x + cx * scale, y + cy * scale
                self.rect(px, py, px + scale, py + scale, c)
            x += ADVANCE * scale

    def text_up(self, x: int, y: int, s: str, c: Color) -> None:
        """s rotated 90 degrees counter-clockwise (read bottom to top), starting at the
        bottom-left (x, y): it takes GLYPH_H columns from x and text_width(s) rows up from y."""
        for ch in s:
            g = ord(ch) - 32
            for cx, cy in _GLYPHS[g if 0 <= g < 95 else 31]:
                self.rect(x + cy, y - cx, x + cy + 1, y - cx + 1, c)
            y -= ADVANCE

    def png(self) -> bytes:
        return encode_png(self.w, self.h, self.buf)


def encode_png(width: int, height: int, rgb: bytes | bytearray, level: int = 6) -> bytes:
    """8-bit RGB PNG of width x height pixels (rgb: rows top to bottom), filter 0 on every row."""
    stride = width * 3
    mv = memoryview(rgb)
    raw = b"".join(b"\x00" + mv[r * stride:(r + 1) * stride] for r in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, level)) + chunk(b"IEND", b""))


def _fit(s: str, max_w: int, scale: int = 1) -> str:
    """s, cut with ".." to at most max_w pixels at scale."""
    if text_width(s, scale) <= max_w:
        return s
    n = max(0, (max_w // scale + 1) // ADVANCE - 2)
    return s[:n] + ".."


def line_chart(series: Series, *, title: str, x_label: str, y_label: str, width: int = 720, height: int = 400,
               y_format: Callable[[float], str] | None = None, x_format: Callable[[float], str] | None = None,
               steps: bool = False) -> bytes:
    """A PNG line chart of series: (name, [(x, y), ...]) pairs, colors in COLORS order.
    y_format labels the y ticks (default: usd, "$1.2M"), x_format the x ticks (default: the
    number with the decimals the tick step needs). steps=True: each y holds until the next x."""
    width, height = max(160, int(width)), max(120, int(height))
    cv = Canvas(width, height)
    yf = y_format or usd

    data: list[tuple[str, list[tuple[float, float]]]] = []
    for name, pts in series:
        clean = sorted(((float(x), float(y)) for x, y in pts if math.isfinite(x) and math.isfinite(y)), key=lambda p: p[0])
        data.append((str(name), clean))
    xs = [x for _, pts in data for x, _ in pts]
    ys = [y for _, pts in data for _, y in pts]
    note = "" if xs else "no data"
    if xs and not any(ys):
        note = "no data (all values are 0)"

    # ranges and y ticks (the y labels set the left margin)
    xmin, xmax = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if xmax == xmin:
        pad = abs(xmin) * 0.1 or 1.0
        xmin, xmax = xmin - pad, xmax + pad
    ymin, ymax = min(0.0, min(ys, default=0.0)), max(0.0, max(ys, default=0.0))
    if ymax == ymin:
        ymax = ymin + 1.0

    # title and legend rows (top margin)
    pad = 10
    title_s = 2 if text_width(title, 2) <= width - 2 * pad else 1
    title = _fit(title, width - 2 * pad, title_s)
    top = pad
    title_h = GLYPH_H * title_s if title else 0
    legend_y0 = top + title_h + (10 if title else 0)
    items = [(i, _fit(name, width - 2 * pad - 26)) for i, (name, _) in enumerate(data)]
    rows: list[list[tuple[int, str, int]]] = [[]]
    row_w = [0]
    for i, name in items:
        w = 20 + text_width(name)
        if rows[-1] and row_w[-1] + 16 + w > width - 2 * pad:
            rows.append([])
            row_w.append(0)
        row_w[-1] += (16 if rows[-1] else 0) + w
        rows[-1].append((i, name, w))
    n_rows = len(rows) if items else 0
    mt = legend_y0 + n_rows * 13 + 8

    mb = 6 + 4 + GLYPH_H + 8 + (GLYPH_H + 6 if x_label else 0) + 2
    ph = max(20, height - mt - mb)
    y_step = _nice_step(ymax - ymin, max(2, ph // 40))
    yt = _ticks(ymin, ymax, y_step)
    y_labels = [yf(v) for v in yt]
    ml = pad + (GLYPH_H + 8 if y_label else 0) + max(text_width(s) for s in y_labels) + 8
    xf0 = x_format
    mr = 14

    # x ticks (the x axis spans the data exactly): as many as fit without their labels touching
    pw = max(20, width - ml - mr)
    x_step = _nice_step(xmax - xmin, max(2, pw // 45))
    for _ in range(20):
        xt = [v for v in _ticks(xmin, xmax, x_step) if xmin - 1e-9 * x_step <= v <= xmax + 1e-9 * x_step]
        xf = xf0 or _plain(x_step)
        x_labels = [xf(v) for v in xt]
        lw = max((text_width(s) for s in x_labels), default=0)
        # room on the right for the last label's half past the axis end
        end = (xt[-1] - xmin) / (xmax - xmin) if xt else 0.0
        mr = max(14, lw // 2 + 8 - int((1 - end) * (width - ml - 14)))
        pw = max(20, width - ml - mr)
        if len(xt) < 2 or pw * x_step / (xmax - xmin) >= lw + 12:
            break
        x_step = _next_step(x_step)
    x_lo, x_hi, y_lo, y_hi = xmin, xmax, yt[0], yt[-1]
    x0, y0, x1, y1 = ml, mt, ml + pw, mt + ph  # plot box; y1 is the x axis row

    def px(x: float) -> float:
        return x0 + (x - x_lo) * pw / (x_hi - x_lo)

    def py(y: float) -> float:
        return y1 - (y - y_lo) * ph / (y_hi - y_lo)

    # grid, zero lines, axes, ticks and their labels
    for v, s in zip(yt, y_labels):
        y = int(round(py(v)))
        cv.rect(x0, y, x1 + 1, y + 1, GRID)
        cv.rect(x0 - 4, y, x0, y + 1, AXIS)
        cv.text(x0 - 7 - text_width(s), y - 3, s, TICK_TEXT)
    for v, s in zip(xt, x_labels):
        x = int(round(px(v)))
        cv.rect(x, y0, x + 1, y1, GRID)
        cv.rect(x, y1, x + 1, y1 + 5, AXIS)
        cv.text(x - text_width(s) // 2, y1 + 9, s, TICK_TEXT)
    if x_lo < 0 < x_hi:
        x = int(round(px(0.0)))
        cv.rect(x, y0, x + 1, y1, ZERO)
    if y_lo < 0 < y_hi:
        y = int(round(py(0.0)))
        cv.rect(x0, y, x1 + 1, y + 1, ZERO)

    # axis labels
    if x_label:
        s = _fit(x_label, width - 2 * pad)
        cv.text(x0 + (pw - text_width(s)) // 2, y1 + 9 + GLYPH_H + 8, s, TEXT)
    if y_label:
        s = _fit(y_label, ph + mt - pad)
        cv.text_up(pad, min(height - pad, y0 + (ph + text_width(s)) // 2), s, TEXT)

    # the series
    for i, (_, pts) in enumerate(data):
        c = COLORS[i % len(COLORS)]
        xy = [(px(x), py(y)) for x, y in pts]
        if len(xy) == 1:
            cv.line(xy[0][0], xy[0][1], xy[0][0], xy[0][1], c, 3)
        for (ax, ay), (bx, by) in zip(xy, xy[1:]):
            if steps:
                cv.line(ax, ay, bx, ay, c)
                cv.line(bx, ay, bx, by, c)
            else:
                cv.line(ax, ay, bx, by, c)

    # the axes over the lines (a series at 0 shows as its row above the x axis)
    cv.rect(x0, y0, x0 + 1, y1 + 1, AXIS)
    cv.rect(x0, y1, x1 + 1, y1 + 1, AXIS)

    # title, legend, note
    if title:
        cv.text((width - text_width(title, title_s)) // 2, top, title, TITLE, title_s)
    for r, row in enumerate(rows):
        x = (width - row_w[r]) // 2
        y = legend_y0 + r * 13
        for i, name, w in row:
            c = COLORS[i % len(COLORS)]
            cv.rect(x, y + 2, x + 14, y + 5, c)
            cv.text(x + 20, y, name, TEXT)
            x += w + 16
    if note:
        s = 2 if text_width(note, 2) <= pw - 8 else 1
        cv.text(x0 + (pw - text_width(note, s)) // 2, y0 + (ph - GLYPH_H * s) // 2, note, NOTE, s)
    return cv.png()
