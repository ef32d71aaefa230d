"""Chart geometry for the admin's server-rendered SVG (no JavaScript, nothing from a CDN).

Two shapes: horizontal stacked bars (chats vs e-mails per site) and a time series of
vertical stacked columns (events by family, rejections by reason). Templates only place
what these functions compute, so the numbers drawn are the numbers tested.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# The admin's own blue and yellow, then colours that stay apart for the colour-blind.
PALETTE = ("#417690", "#e0a030", "#79aec8", "#ba2121", "#5b8a3c", "#8a5bb0", "#c96f9b", "#6c6c6c")
OTHER_COLOUR = "#b0b0b0"


def nice_step(maximum: int, ticks: int = 5) -> int:
    """A round axis step (1, 2 or 5 times a power of ten) giving about `ticks` ticks up to `maximum`."""
    raw = max(maximum, 1) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return max(1, int(next(m * power for m in (1, 2, 5, 10) if m * power >= raw)))


def axis(maximum: int) -> tuple[int, int]:
    """(step, axis maximum): the axis ends on a tick at or above `maximum`."""
    step = nice_step(maximum)
    return step, max(step, math.ceil(maximum / step) * step)


# -- horizontal stacked bars: chats vs e-mails per site --------------------


@dataclass(frozen=True, slots=True)
class Layout:
    label_width: float = 170
    plot_width: float = 640
    value_width: float = 150
    top: float = 44  # legend and axis labels
    row_height: float = 24
    bar_height: float = 16
    bottom: float = 8
    max_label_chars: int = 24

    @property
    def plot_x(self) -> float:
        return self.label_width

    @property
    def width(self) -> float:
        return self.label_width + self.plot_width + self.value_width

    def height(self, rows: int) -> float:
        return self.top + rows * self.row_height + self.bottom


@dataclass(frozen=True, slots=True)
class Bar:
    """One site's row of the chart, in SVG user units."""

    site_id: str
    label: str
    chats: int
    emails: int
    y: float
    chat_width: float
    email_width: float
    layout: Layout

    @property
    def text_y(self) -> float:
        return self.y + self.layout.bar_height - 4

    @property
    def label_x(self) -> float:
        return self.layout.plot_x - 8

    @property
    def email_x(self) -> float:
        return self.layout.plot_x + self.chat_width

    @property
    def value_x(self) -> float:
        return self.layout.plot_x + self.chat_width + self.email_width + 6


CHART = Layout()


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def chart_bars(rows: list[tuple[str, int, int]], layout: Layout = CHART) -> tuple[list[Bar], list[tuple[int, float]]]:
    """Bars (widths proportional to counts, on one scale) and axis ticks for (site, chats, e-mails) rows."""
    step, axis_max = axis(max((chats + emails for _, chats, emails in rows), default=0))
    scale = layout.plot_width / axis_max
    bars = [
        Bar(
            site_id=site,
            label=shorten(site, layout.max_label_chars),
            chats=chats,
            emails=emails,
            y=layout.top + i * layout.row_height + (layout.row_height - layout.bar_height) / 2,
            chat_width=round(chats * scale, 2),
            email_width=round(emails * scale, 2),
            layout=layout,
        )
        for i, (site, chats, emails) in enumerate(rows)
    ]
    ticks = [(value, round(layout.plot_x + value * scale, 2)) for value in range(0, axis_max + 1, step)]
    return bars, ticks


# -- a time series of stacked columns ------------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    key: str
    label: str
    colour: str


@dataclass(frozen=True, slots=True)
class Segment:
    series: Series
    count: int
    y: float
    height: float
    url: str


@dataclass(frozen=True, slots=True)
class Column:
    start: int  # epoch seconds of the bucket
    label: str  # the bucket as text, e.g. "2015-04-14 13:00"
    total: int
    x: float
    width: float
    segments: list[Segment]
    url: str  # the list behind the whole column


@dataclass(frozen=True, slots=True)
class TimeChart:
    columns: list[Column]
    series: list[Series]
    y_ticks: list[tuple[int, float]]
    x_labels: list[tuple[str, float]]
    width: float
    height: float
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float
    totals: dict[str, int] = field(default_factory=dict)  # per series key, over the window

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    @property
    def plot_height(self) -> float:
        return self.plot_bottom - self.plot_top


def time_chart(
    starts: Sequence[int],
    labels: Sequence[str],
    series: Sequence[Series],
    counts: dict[tuple[int, str], int],
    url: Callable[[int, str | None], str],
    *,
    axis_labels: Sequence[str] | None = None,
    width: float = 900,
    plot_height: float = 220,
    max_x_labels: int = 10,
) -> TimeChart:
    """Stacked columns, one per bucket start, segments in `series` order from the bottom up.

    `counts` maps (bucket start, series key) to a count; `url(start, key)` is the filtered
    list behind a segment (`key` None: the whole column); `axis_labels` are shorter labels
    for the time axis (default: `labels`).
    """
    left, right, top, bottom = 64.0, 12.0, 12.0, 40.0
    plot_width = width - left - right
    pitch = plot_width / max(len(starts), 1)
    bar_width = max(round(pitch * 0.8, 2), 1.0)
    totals = [sum(counts.get((start, s.key), 0) for s in series) for start in starts]
    step, axis_max = axis(max(totals, default=0))
    scale = plot_height / axis_max
    plot_bottom = top + plot_height
    columns = []
    for i, (start, label, total) in enumerate(zip(starts, labels, totals, strict=True)):
        y = plot_bottom
        segments = []
        for s in series:
            count = counts.get((start, s.key), 0)
            if not count:
                continue
            height = round(count * scale, 2)
            y = round(y - height, 2)
            segments.append(Segment(s, count, y, height, url(start, s.key)))
        x = round(left + i * pitch + (pitch - bar_width) / 2, 2)
        columns.append(Column(start, label, total, x, bar_width, segments, url(start, None)))
    every = max(1, math.ceil(len(starts) / max_x_labels))
    names = list(axis_labels or labels)
    x_labels = [(names[i], round(c.x + c.width / 2, 2)) for i, c in enumerate(columns) if i % every == 0]
    y_ticks = [(value, round(plot_bottom - value * scale, 2)) for value in range(0, axis_max + 1, step)]
    return TimeChart(
        columns=columns,
        series=list(series),
        y_ticks=y_ticks,
        x_labels=x_labels,
        width=width,
        height=plot_bottom + bottom,
        plot_left=left,
        plot_right=width - right,
        plot_top=top,
        plot_bottom=plot_bottom,
        totals={s.key: sum(counts.get((start, s.key), 0) for start in starts) for s in series},
    )
