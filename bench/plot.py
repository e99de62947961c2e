"""A small line plot for BENCHMARKS.md: PNG with matplotlib when it is installed, else SVG.

The SVG is written by hand (a few polylines, axes and labels: no dependency), so the soak can
always leave a picture; `write()` returns the file name it wrote, which says which one.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

Series = list[tuple[float, float]]
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
W, H = 720, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 170, 28, 36


def write(
    stem: Path,
    title: str,
    series: list[tuple[str, Series]],
    phases: list[tuple[float, str]] = (),  # type: ignore[assignment]
) -> str:
    """Plot `series` (label, [(x, y)]) against x; phase changes are marked. Returns the name."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        path = stem.with_suffix(".svg")
        path.write_text(svg(title, series, phases))
        return path.name
    fig, ax = plt.subplots(figsize=(W / 100, H / 100), dpi=100)
    for (label, points), colour in zip(series, COLOURS, strict=False):
        ax.plot([x for x, _ in points], [y for _, y in points], label=label, color=colour, lw=1.2)
    for x, name in _changes(phases):
        ax.axvline(x, color="#999999", lw=0.6, ls=":")
        ax.text(x, ax.get_ylim()[1], f" {name}", fontsize=7, va="top", color="#555555")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    path = stem.with_suffix(".png")
    fig.savefig(path)
    plt.close(fig)
    return path.name


def _changes(phases: list[tuple[float, str]]) -> list[tuple[float, str]]:
    out: list[tuple[float, str]] = []
    for x, name in phases:
        if not out or out[-1][1] != name:
            out.append((x, name))
    return out


def svg(title: str, series: list[tuple[str, Series]], phases: list[tuple[float, str]]) -> str:
    xs = [x for _, pts in series for x, _ in pts] or [0.0, 1.0]
    ys = [y for _, pts in series for _, y in pts] or [0.0, 1.0]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(0.0, min(ys)), max(ys) * 1.05 if max(ys) > 0 else 1.0
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return TOP + ph - (y - y0) / (y1 - y0) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="10">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="12">{escape(title)}</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>',
    ]
    for k in range(5):
        yv = y0 + (y1 - y0) * k / 4
        xv = x0 + (x1 - x0) * k / 4
        out.append(f'<text x="{LEFT - 4}" y="{py(yv) + 3:.1f}" text-anchor="end">{yv:,.1f}</text>')
        out.append(
            f'<text x="{px(xv):.1f}" y="{H - BOTTOM + 14}" text-anchor="middle">{xv:,.0f}</text>'
        )
    for x, name in _changes(phases):
        out.append(
            f'<line x1="{px(x):.1f}" y1="{TOP}" x2="{px(x):.1f}" y2="{TOP + ph}" '
            'stroke="#999" stroke-dasharray="2,3"/>'
        )
        out.append(f'<text x="{px(x) + 2:.1f}" y="{TOP + 10}" fill="#555">{escape(name)}</text>')
    for i, ((label, pts), colour) in enumerate(zip(series, COLOURS, strict=False)):
        if pts:
            line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            out.append(
                f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.3"/>'
            )
        ly = TOP + 14 + 16 * i
        out.append(
            f'<line x1="{W - RIGHT + 10}" y1="{ly}" x2="{W - RIGHT + 28}" y2="{ly}" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        out.append(f'<text x="{W - RIGHT + 32}" y="{ly + 3}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
