"""Render the kernel logo PNGs from simple shapes (stdlib only; run once, commit the output).

The design: an orange rounded tile (TensorFlow's orange) holding a white "T" over a
dark-blue container base line — "TensorFlow, in a container".
"""

import struct
import sys
import zlib
from pathlib import Path

ORANGE = (255, 111, 0, 255)
WHITE = (255, 255, 255, 255)
NAVY = (22, 46, 84, 255)
CLEAR = (0, 0, 0, 0)


def pixel(x: float, y: float) -> tuple[int, int, int, int]:
    # coordinates in a 0..1 square
    r = 0.18
    inside = True
    for cx, cy in ((r, r), (1 - r, r), (r, 1 - r), (1 - r, 1 - r)):
        if (x < r or x > 1 - r) and (y < r or y > 1 - r):
            inside = (
                (x - cx) ** 2 + (y - cy) ** 2 <= r * r
                if abs(x - cx) < r and abs(y - cy) < r
                else inside
            )
    if not inside or not (0 <= x <= 1 and 0 <= y <= 1):
        return CLEAR
    if 0.72 <= y <= 0.82 and 0.14 <= x <= 0.86:
        return NAVY
    if 0.16 <= y <= 0.30 and 0.22 <= x <= 0.78:
        return WHITE
    if 0.30 <= y <= 0.64 and 0.43 <= x <= 0.57:
        return WHITE
    return ORANGE


def png(size: int) -> bytes:
    rows = []
    for j in range(size):
        row = bytearray([0])
        for i in range(size):
            # 4x supersampling for smooth corners
            acc = [0, 0, 0, 0]
            for sj in range(4):
                for si in range(4):
                    px = pixel((i + (si + 0.5) / 4) / size, (j + (sj + 0.5) / 4) / size)
                    for k in range(4):
                        acc[k] += px[k]
            row += bytes(v // 16 for v in acc)
        rows.append(bytes(row))
    raw = zlib.compress(b"".join(rows), 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


SVG = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100" width="64" height="64">
  <rect x="0" y="0" width="100" height="100" rx="18" fill="#ff6f00"/>
  <rect x="22" y="16" width="56" height="14" fill="#fff"/>
  <rect x="43" y="30" width="14" height="34" fill="#fff"/>
  <rect x="14" y="72" width="72" height="10" fill="#162e54"/>
</svg>
"""

if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "jupyter_tfenv/resources")
    out.mkdir(parents=True, exist_ok=True)
    for size in (32, 64):
        (out / f"logo-{size}x{size}.png").write_bytes(png(size))
    (out / "logo-svg.svg").write_text(SVG)
