#!/usr/bin/env python3
"""Regenerates every Keyferry icon from vector shapes: Python 3 stdlib only (zlib, struct).

    python3 icons/generate.py            # writes next to this script
    python3 icons/generate.py --check    # exits 1 if a committed PNG differs

Shapes are signed-distance functions in a 22-unit design grid (the macOS menu-bar size);
each pixel's coverage is clamp(0.5 - distance_in_pixels), which anti-aliases without
supersampling. Outputs:

  tray/<state>.png, tray/<state>@2x.png              macOS template images (black on transparent)
  tray/<state>-color.png, tray/<state>-color@2x.png  Linux/other panels (coloured by state)
  32x32.png, 128x128.png, 128x128@2x.png, icon.png   app icons (Tauri bundle.icon)
  ../ui/logo.png                                     the window's header logo (36 pt @2x)

States: ok, expiring, expired, locked.
"""

import math
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
STATES = ("ok", "expiring", "expired", "locked")
STATE_COLORS = {
    "ok": (46, 160, 67),
    "expiring": (210, 153, 34),
    "expired": (218, 54, 51),
    "locked": (110, 118, 129),
}


# ---- signed distance functions (negative inside) -----------------------------------------

def circle(cx, cy, r):
    return lambda x, y: math.hypot(x - cx, y - cy) - r


def ring(cx, cy, r, w):
    return lambda x, y: abs(math.hypot(x - cx, y - cy) - r) - w / 2


def box(x0, y0, x1, y1, r=0.0):
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hx, hy = (x1 - x0) / 2 - r, (y1 - y0) / 2 - r

    def f(x, y):
        qx, qy = abs(x - cx) - hx, abs(y - cy) - hy
        outside = math.hypot(max(qx, 0.0), max(qy, 0.0))
        return outside + min(max(qx, qy), 0.0) - r

    return f


def seg(ax, ay, bx, by, w):
    dx, dy = bx - ax, by - ay
    ll = dx * dx + dy * dy

    def f(x, y):
        t = 0.0 if ll == 0 else max(0.0, min(1.0, ((x - ax) * dx + (y - ay) * dy) / ll))
        return math.hypot(x - ax - t * dx, y - ay - t * dy) - w / 2

    return f


def below(y0):
    """Half-plane y >= y0 (y grows downwards)."""
    return lambda x, y: y0 - y


def union(*fs):
    return lambda x, y: min(f(x, y) for f in fs)


def inter(*fs):
    return lambda x, y: max(f(x, y) for f in fs)


def minus(a, b):
    return lambda x, y: max(a(x, y), -b(x, y))


def translate(f, dx, dy, s=1.0):
    return lambda x, y: f((x - dx) / s, (y - dy) / s) * s


# ---- glyphs (22 x 22 design units) -------------------------------------------------------

def key():
    head = minus(circle(7.0, 11.0, 5.0), circle(7.0, 11.0, 2.1))
    shaft = box(10.5, 9.9, 20.5, 12.1, 0.4)
    teeth = union(box(15.4, 11.5, 17.4, 15.2, 0.3), box(18.5, 11.5, 20.5, 14.4, 0.3))
    return union(head, shaft, teeth)


BADGE = (16.6, 16.4)


def with_badge(glyph, badge):
    bx, by = BADGE
    return union(minus(glyph, circle(bx, by, 6.0)), badge)


def clock_badge():
    bx, by = BADGE
    return union(
        ring(bx, by, 3.9, 1.4),
        seg(bx, by, bx, by - 2.3, 1.3),
        seg(bx, by, bx + 1.9, by, 1.3),
    )


def cross_badge():
    bx, by = BADGE
    d = 1.75
    x = union(seg(bx - d, by - d, bx + d, by + d, 1.35), seg(bx - d, by + d, bx + d, by - d, 1.35))
    return minus(circle(bx, by, 4.7), x)


def padlock():
    body = box(4.3, 9.6, 17.7, 19.8, 1.6)
    hole = union(circle(11.0, 13.9, 1.7), box(10.35, 13.9, 11.65, 17.4, 0.3))
    shackle = union(
        inter(ring(11.0, 7.6, 4.3, 2.1), lambda x, y: y - 7.6),
        box(5.65, 7.4, 7.75, 10.5),
        box(14.25, 7.4, 16.35, 10.5),
    )
    return union(minus(body, hole), shackle)


def tray_glyph(state):
    if state == "ok":
        return key()
    if state == "expiring":
        return with_badge(key(), clock_badge())
    if state == "expired":
        return with_badge(key(), cross_badge())
    if state == "locked":
        return padlock()
    raise ValueError(state)


def wave(y, amp, width):
    """A sine band across the app icon's lower part."""
    def f(x, yy):
        return abs(yy - (y + amp * math.sin(x * 0.6))) - width / 2
    return f


# ---- rasterising and PNG ------------------------------------------------------------------

def cover(d_px):
    return max(0.0, min(1.0, 0.5 - d_px))


def render(size, layers):
    """layers: list of (sdf in 22-unit space, (r, g, b) or callable(x, y) -> rgb, alpha)."""
    scale = size / 22.0
    px = bytearray(size * size * 4)
    for j in range(size):
        y = (j + 0.5) / scale
        for i in range(size):
            x = (i + 0.5) / scale
            r = g = b = a = 0.0
            for sdf, color, opacity in layers:
                c = cover(sdf(x, y) * scale) * opacity
                if c <= 0:
                    continue
                rgb = color(x, y) if callable(color) else color
                # "over" compositing, premultiplied
                r = rgb[0] * c + r * (1 - c)
                g = rgb[1] * c + g * (1 - c)
                b = rgb[2] * c + b * (1 - c)
                a = c + a * (1 - c)
            o = (j * size + i) * 4
            if a > 0:
                px[o:o + 4] = bytes((round(r / a), round(g / a), round(b / a), round(a * 255)))
    return size, px


def png(image):
    size, px = image
    raw = b"".join(b"\x00" + bytes(px[y * size * 4:(y + 1) * size * 4]) for y in range(size))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def app_icon(size):
    def gradient(x, y):
        t = y / 22.0
        top, bottom = (56, 139, 253), (13, 65, 157)
        return tuple(top[k] + (bottom[k] - top[k]) * t for k in range(3))

    background = box(1.0, 1.0, 21.0, 21.0, 4.6)
    glyph = translate(key(), 1.6, 0.2, 0.85)
    waves = inter(union(wave(16.9, 0.55, 1.0), wave(19.0, 0.55, 1.0)), box(3.0, 14.0, 19.0, 21.0))
    return render(size, [
        (background, gradient, 1.0),
        (glyph, (255, 255, 255), 1.0),
        (waves, (190, 220, 255), 0.9),
    ])


def outputs():
    for state in STATES:
        glyph = tray_glyph(state)
        for suffix, size in (("", 22), ("@2x", 44)):
            yield f"tray/{state}{suffix}.png", lambda g=glyph, s=size: render(s, [(g, (0, 0, 0), 1.0)])
            yield f"tray/{state}-color{suffix}.png", (
                lambda g=glyph, s=size, c=STATE_COLORS[state]: render(s, [(g, c, 1.0)]))
    for name, size in (("32x32.png", 32), ("128x128.png", 128),
                       ("128x128@2x.png", 256), ("icon.png", 512),
                       ("../ui/logo.png", 72)):
        yield name, lambda s=size: app_icon(s)


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for rel, make in outputs():
        data = png(make())
        path = os.path.join(HERE, rel)
        if check:
            try:
                with open(path, "rb") as f:
                    if f.read() != data:
                        stale.append(rel)
            except FileNotFoundError:
                stale.append(rel)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        print(f"wrote {os.path.relpath(path, os.path.dirname(HERE))} ({len(data)} bytes)")
    if stale:
        print("stale icons (run python3 icons/generate.py):", ", ".join(stale), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
