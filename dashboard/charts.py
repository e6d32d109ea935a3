"""The dashboard's charts: pygal renders them on the server as SVG, inlined in the page, so
they show without JavaScript and need nothing from the network (pygal's own tooltip script,
which it would load from elsewhere, is switched off)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pygal
from pygal.style import Style

STYLE = Style(
    background="transparent",
    plot_background="#fbfbfb",
    foreground="#222",
    foreground_strong="#000",
    foreground_subtle="#666",
    colors=("#1f6fb2", "#e07b00", "#2a9d3a", "#b8336a", "#6c4fb3", "#8a6d00", "#00828a"),
    font_family="sans-serif",
    label_font_size=11,
    major_label_font_size=11,
    legend_font_size=12,
    title_font_size=14,
)


def _config(title: str, **extra: object) -> dict[str, object]:
    return {
        "title": title,
        "style": STYLE,
        "js": [],  # no tooltip script from elsewhere: the machine may be offline
        "disable_xml_declaration": True,
        "height": 300,
        "width": 720,
        "explicit_size": False,
        "legend_at_bottom": True,
        "print_values": False,
        **extra,
    }


def _minutes(start: int, bucket_s: int, n: int) -> list[str]:
    return [time.strftime("%H:%M", time.gmtime(start + i * bucket_s)) for i in range(n)]


SCRIPT = re.compile(r"<script\b.*?</script>", re.S)


def _render(chart: pygal.graph.graph.Graph) -> str:
    """The SVG without pygal's inline configuration script (its tooltips would need the
    script it is told not to load; the page's CSP allows no inline script either)."""
    return SCRIPT.sub("", str(chart.render(is_unicode=True)))


def timeline(
    title: str, span: Mapping[str, Any], series: Mapping[str, Sequence[int]], stacked: bool = True
) -> str:
    """Counts per minute over the last hour, one series each (stacked: parts of one whole,
    as devices; else side by side, as coins minted and redeemed), UTC times. ``span`` is the
    bank's answer: ``start`` (unix seconds) and ``bucket_s``."""
    n = max((len(v) for v in series.values()), default=60)
    config = _config(title, show_minor_x_labels=False, truncate_label=-1, y_title="per minute")
    chart = (pygal.StackedBar if stacked else pygal.Bar)(**config)
    labels = _minutes(int(span["start"]), int(span["bucket_s"]), n)
    chart.x_labels = labels
    chart.x_labels_major = labels[::10]
    for name, counts in series.items():
        chart.add(name, list(counts))
    if not series:
        chart.add("none", [0] * n)
    return _render(chart)


def bars(title: str, values: Mapping[str, int], unit: str) -> str:
    """One bar per label (spend by service, analysts' earnings)."""
    chart = pygal.HorizontalBar(**_config(title, show_legend=False, y_title=unit))
    chart.x_labels = list(values)
    chart.add(unit, list(values.values()))
    return _render(chart)
