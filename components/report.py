"""Render the data-quality gate's report as JSON, Markdown and a standalone HTML page.

The gate builds one report dict per pipeline run and passes it to `write_report`.
The dict has these keys:

- ``dataset``, ``created`` (ISO 8601 string) and ``decision`` (``"pass"`` or
  ``"block"``).
- ``policy``: the gate's settings, a free-form dict.
- ``splits``: split name to ``{"rows", "malformed_rows", "malformed_samples"}``.
- ``features``: one entry per feature and split with ``feature``, ``role``,
  ``type``, ``split``, ``rows``, ``counts`` and ``fractions`` (both keyed by
  `COUNT_KINDS`), ``sample_lines`` (kind to ``"file:line"`` strings),
  ``anomalies`` (TFDV anomalies as ``{"type", "short", "description"}``),
  ``decision`` (``"pass"``, ``"repair"``, ``"tolerate"`` or ``"block"``) and
  ``reason``.
- ``blocking``: ``{"feature", "split", "kind", "count", "fraction", "reason"}``
  for every finding that blocks the run.
- ``dataset_anomalies``: TFDV anomalies that belong to no single feature.
- ``paths`` (optional): where `write_report` stored the three files.

Column names, values and anomaly texts come from user files, so every string is
escaped before it goes into HTML or a Markdown table.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Iterable
from typing import Any

COUNT_KINDS = (
    "absent",
    "empty",
    "na_token",
    "nan",
    "posinf",
    "neginf",
    "unreadable",
    "out_of_range",
)

KIND_LABELS = {
    "absent": "absent",
    "empty": "empty",
    "na_token": "NA token",
    "nan": "NaN",
    "posinf": "+inf",
    "neginf": "-inf",
    "unreadable": "unreadable",
    "out_of_range": "out of range",
}

# The chart's two bars per feature and split. Out-of-range values are neither
# missing nor non-finite, so they appear only in the table.
MISSING_KINDS = ("absent", "empty", "na_token", "unreadable")
NON_FINITE_KINDS = ("nan", "posinf", "neginf")

REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"
REPORT_HTML = "report.html"

# Malformed-row samples printed per split in the terminal. The HTML shows all.
MARKDOWN_MAX_SAMPLES = 3

FEATURE_DECISIONS = ("pass", "repair", "tolerate", "block")


# Formatting shared by the CLI, Markdown and HTML.


def format_count(value: Any) -> str:
    """Format a count with thousands separators, or "n/a" when it is None."""
    if value is None:
        return "n/a"
    return f"{int(value):,}"


def format_fraction(fraction: Any) -> str:
    """Format a fraction in [0, 1] as a percentage with two decimals.

    A non-zero fraction that would round to 0.00 % is shown as "< 0.01 %", so a
    single bad value never reads as none. A fraction just below 1 is shown as
    "> 99.99 %", so a nearly empty column never reads as fully empty.

    Returns:
        For example "0.01 %", or "n/a" for None, NaN and infinities.
    """
    if fraction is None or not math.isfinite(fraction):
        return "n/a"
    percent = float(fraction) * 100
    if 0 < percent < 0.005:
        return "< 0.01 %"
    if 99.995 <= percent < 100:
        return "> 99.99 %"
    return f"{percent:.2f} %"


def kind_label(kind: str) -> str:
    """Return the human label of a count kind, or the kind itself if unknown."""
    return KIND_LABELS.get(kind, kind)


def format_blocking_finding(finding: dict) -> str:
    """Format one entry of ``report["blocking"]`` as a single line of plain text.

    Example: "UnitPrice (split train): NaN 3 (0.01 %). 3 NaN values exceed ...".
    The count and fraction are left out when the gate gives None for them, as it
    may for anomalies that have no count.
    """
    # A finding about the whole dataset, such as an empty split, has no feature.
    feature = _visible(finding.get("feature", "")) or "dataset"
    split = _visible(finding.get("split", ""))
    kind = _visible(kind_label(str(finding.get("kind", ""))))
    line = f"{feature} (split {split}): {kind}"

    count = finding.get("count")
    fraction = finding.get("fraction")
    if count is not None:
        line += f" {format_count(count)}"
    if fraction is not None:
        line += f" ({format_fraction(fraction)})"

    reason = finding.get("reason")
    if reason:
        line += f". {_visible(reason)}"
    return line


def _visible(value: Any) -> str:
    """Return str(value) with control characters shown as Python escapes.

    Column names from dirty files can contain line breaks or terminal escape
    sequences. Showing them as ``\\n`` or ``\\x1b`` keeps a table intact and
    shows the reader exactly which characters the name contains.
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


# Per feature-and-split values.


def _count(entry: dict, kind: str) -> int:
    return int(entry.get("counts", {}).get(kind) or 0)


def _fraction(entry: dict, kind: str) -> float:
    """Return the fraction of one kind, computed from counts if the gate left it out."""
    fraction = entry.get("fractions", {}).get(kind)
    if fraction is not None:
        return float(fraction)
    rows = entry.get("rows") or 0
    return _count(entry, kind) / rows if rows else 0.0


def _group_fraction(entry: dict, kinds: Iterable[str]) -> float:
    return sum(_fraction(entry, kind) for kind in kinds)


def _nonzero_kinds(entry: dict) -> list[str]:
    return [kind for kind in COUNT_KINDS if _count(entry, kind) > 0]


def _has_findings(entry: dict) -> bool:
    """Return whether a feature and split has any count, anomaly or non-pass decision."""
    return bool(
        _nonzero_kinds(entry)
        or entry.get("anomalies")
        or entry.get("decision", "pass") != "pass"
    )


# Short texts for TFDV anomaly types whose own short text misleads: TFDV
# calls a column "dropped" when it is present in fewer rows than the
# schema's min_fraction, although the column is still there.
ANOMALY_SHORT_TEXTS = {
    "FEATURE_TYPE_LOW_FRACTION_PRESENT": "Present in too few rows",
}


def _anomaly_short(anomaly: dict) -> str:
    override = ANOMALY_SHORT_TEXTS.get(str(anomaly.get("type", "")))
    return override or str(anomaly.get("short") or anomaly.get("type") or "anomaly")


# Markdown.


# CommonMark reads a backslash before ASCII punctuation as an escape, "<" before
# a letter, "/", "!" or "?" as the start of raw HTML, and "&" before a letter or
# "#" as the start of an entity. Only those characters are escaped, so that
# text such as "< 0.01 %" or "Price & Co" stays readable in a terminal.
_MARKDOWN_SPECIAL = re.compile(r"\\(?=[!-/:-@\[-`{-~])|[<&](?=[A-Za-z/!?#])|\|")


def _markdown_cell(value: Any) -> str:
    """Escape a value for a Markdown table cell or list item."""
    return _MARKDOWN_SPECIAL.sub(lambda match: "\\" + match.group(0), _visible(value))


def _markdown_counts(entry: dict) -> str:
    parts = [
        f"{kind_label(kind)} {format_count(_count(entry, kind))} "
        f"({format_fraction(_fraction(entry, kind))})"
        for kind in _nonzero_kinds(entry)
    ]
    return ", ".join(parts) if parts else "none"


UNSPLIT_LABEL = "(before the split)"


def _split_rows(report: dict) -> list[tuple[str, dict]]:
    """Returns the splits, plus a row for malformed rows that have no split.

    A row that cannot be parsed has no time, so ExampleGen cannot assign it
    to a split. The gate reports those rows at the top level of the report.
    """
    items = list(report.get("splits", {}).items())
    if report.get("malformed_rows"):
        items.append(
            (
                UNSPLIT_LABEL,
                {
                    "rows": 0,
                    "malformed_rows": report["malformed_rows"],
                    "malformed_samples": report.get("malformed_samples", []),
                },
            )
        )
    return items


def _markdown_splits(report: dict) -> list[str]:
    lines = [
        "| split | rows | malformed rows |",
        "| --- | ---: | ---: |",
    ]
    samples = []
    for split, info in _split_rows(report):
        malformed = info.get("malformed_rows") or 0
        lines.append(
            f"| {_markdown_cell(split)} | {format_count(info.get('rows'))} "
            f"| {format_count(malformed)} |"
        )
        for sample in info.get("malformed_samples", [])[:MARKDOWN_MAX_SAMPLES]:
            samples.append(f"- {_markdown_cell(split)}: {_markdown_cell(sample)}")

    if samples:
        lines += ["", "Malformed rows (first samples per split):", "", *samples]
    return lines


def _markdown_findings(report: dict) -> list[str]:
    entries = [entry for entry in report.get("features", []) if _has_findings(entry)]
    if not entries:
        if report.get("blocking"):
            return ["No feature has findings. The blocking findings below are about the dataset."]
        return ["No findings: every feature is clean in every split."]

    lines = [
        "| feature | split | decision | counts | anomalies |",
        "| --- | --- | --- | --- | --- |",
    ]
    for entry in entries:
        # TFDV gives several anomaly types the same short text, so each
        # text is listed once.
        shorts = dict.fromkeys(_anomaly_short(a) for a in entry.get("anomalies", []))
        anomalies = "; ".join(shorts)
        lines.append(
            f"| {_markdown_cell(entry.get('feature', ''))} "
            f"| {_markdown_cell(entry.get('split', ''))} "
            f"| {_markdown_cell(entry.get('decision', ''))} "
            f"| {_markdown_counts(entry)} "
            f"| {_markdown_cell(anomalies) or 'none'} |"
        )
    return lines


def _markdown_sample_lines(report: dict) -> list[str]:
    """List the first source lines behind each count, as ``file:line``."""
    lines = []
    for entry in report.get("features", []):
        sample_lines = entry.get("sample_lines") or {}
        kinds = [k for k in COUNT_KINDS if sample_lines.get(k)]
        # Kinds that COUNT_KINDS does not name come last, in the report's order.
        kinds += [k for k in sample_lines if k not in COUNT_KINDS and sample_lines[k]]
        for kind in kinds:
            first_lines = sample_lines[kind][:MARKDOWN_MAX_SAMPLES]
            more = ", ..." if _count(entry, kind) > len(first_lines) else ""
            lines.append(
                f"- {_markdown_cell(entry.get('feature', ''))} "
                f"({_markdown_cell(entry.get('split', ''))}), {kind_label(kind)}: "
                f"{', '.join(_markdown_cell(line) for line in first_lines)}{more}"
            )
    if not lines:
        return []
    return [
        "",
        "## Sample lines",
        "",
        "The first source lines behind each count, as file:line. report.json and "
        "report.html list more.",
        "",
        *lines,
    ]


def render_markdown(report: dict) -> str:
    """Render a short Markdown summary of the report for the terminal.

    The summary lists the decision, the rows per split, one table row per
    feature and split with any finding, the first source lines of each count,
    the blocking findings and the paths of the other report files. Clean
    features are left out; the HTML page lists every feature.
    """
    dataset = _markdown_cell(report.get("dataset", "dataset"))
    decision = str(report.get("decision", "unknown")).upper()
    lines = [
        f"# Data-quality report: {dataset}",
        "",
        (
            f"Decision: {_markdown_cell(decision)} "
            f"(created {_markdown_cell(report.get('created', 'n/a'))})"
        ),
        "",
        *_markdown_splits(report),
        "",
        "## Findings",
        "",
        *_markdown_findings(report),
        *_markdown_sample_lines(report),
    ]

    blocking = report.get("blocking") or []
    if blocking:
        lines += ["", "## Blocking findings", ""]
        lines += [f"- {_markdown_cell(format_blocking_finding(b))}" for b in blocking]

    dataset_anomalies = report.get("dataset_anomalies") or []
    if dataset_anomalies:
        lines += ["", "## Dataset anomalies", ""]
        for anomaly in dataset_anomalies:
            lines.append(
                f"- {_markdown_cell(anomaly.get('type', 'anomaly'))}: "
                f"{_markdown_cell(anomaly.get('description', ''))}"
            )

    paths = report.get("paths") or {}
    if paths:
        lines += ["", "Full report:"]
        for key, label in (("html", "HTML"), ("json", "JSON")):
            if paths.get(key):
                lines.append(f"- {label}: {_markdown_cell(paths[key])}")

    return "\n".join(lines) + "\n"


# HTML.

_CSS = """
body { font-family: system-ui, "DejaVu Sans", "Liberation Sans", Arial, sans-serif;
  margin: 24px; color: #1d2433; background: #fff; font-size: 14px; }
h1 { font-size: 22px; margin: 0 0 6px; }
h2 { font-size: 17px; margin: 28px 0 8px; padding-bottom: 4px;
  border-bottom: 1px solid #d8dde6; }
.meta { color: #5a6475; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #d8dde6; padding: 4px 6px; text-align: left;
  vertical-align: top; }
th { background: #f3f5f9; font-weight: 600; }
td.num { text-align: right; white-space: nowrap; }
td.zero { color: #a0a8b5; }
.fraction { display: block; font-size: 12px; color: #5a6475; }
td.zero .fraction { color: #b8bfca; }
#findings { font-size: 13px; width: 100%; }
/* The findings table has 15 columns. On a narrow window it scrolls inside
   this box, so the rest of the page keeps the window's width. */
.table-scroll { overflow-x: auto; max-width: 100%; }
#findings td.text { min-width: 140px; overflow-wrap: anywhere; }
#findings td.feature { min-width: 110px; max-width: 200px; overflow-wrap: anywhere; }
td ul { margin: 0; padding-left: 16px; }
.decision { display: inline-block; padding: 1px 8px; border-radius: 4px;
  font-weight: 600; text-transform: uppercase; font-size: 12px;
  white-space: nowrap; }
.decision-pass { background: #dff3e4; color: #17602a; }
.decision-repair { background: #e3ecfb; color: #1d4ea0; }
.decision-tolerate { background: #fdf1d6; color: #7a5300; }
.decision-block { background: #fbe0e0; color: #9b1c1c; }
.decision-other { background: #eceff3; color: #1d2433; }
h1 .decision { font-size: 16px; vertical-align: middle; }
pre { background: #f6f8fa; padding: 8px; overflow: auto; font-size: 12px; }
code { font-size: 12px; }
details summary { cursor: pointer; color: #1d4ea0; }
svg text { font-family: inherit; }
"""


def _escape(value: Any) -> str:
    return html.escape(_visible(value), quote=True)


def _decision_badge(decision: Any) -> str:
    """Return a coloured label, neutral grey for a decision this module does not know."""
    known = decision in FEATURE_DECISIONS
    css_class = f"decision-{decision}" if known else "decision-other"
    return f'<span class="decision {css_class}">{_escape(decision)}</span>'


def _html_header(report: dict) -> str:
    return (
        f"<h1>Data-quality report: {_escape(report.get('dataset', 'dataset'))} "
        f"{_decision_badge(report.get('decision', 'unknown'))}</h1>\n"
        f'<p class="meta">Created {_escape(report.get("created", "n/a"))}. '
        "Counts are per feature and split; a fraction is the count divided by "
        "the split's rows.</p>\n"
    )


def _html_splits(report: dict) -> str:
    rows = []
    for split, info in _split_rows(report):
        samples = info.get("malformed_samples") or []
        sample_items = "".join(f"<li><code>{_escape(s)}</code></li>" for s in samples)
        sample_html = f"<ul>{sample_items}</ul>" if samples else ""
        rows.append(
            f"<tr><td>{_escape(split)}</td>"
            f'<td class="num">{format_count(info.get("rows"))}</td>'
            f'<td class="num">{format_count(info.get("malformed_rows") or 0)}</td>'
            f"<td>{sample_html}</td></tr>"
        )
    return (
        "<h2>Splits</h2>\n"
        '<table id="splits"><thead><tr><th>split</th><th>rows</th>'
        "<th>malformed rows</th><th>malformed row samples</th></tr></thead>\n"
        f"<tbody>{''.join(rows)}</tbody></table>\n"
    )


def _html_count_cell(entry: dict, kind: str) -> str:
    count = _count(entry, kind)
    fraction = _fraction(entry, kind)
    css_class = "num" if count else "num zero"
    return (
        f'<td class="{css_class}" data-kind="{kind}" data-count="{count}" '
        f'data-fraction="{fraction!r}"><span class="count">{format_count(count)}'
        f'</span><span class="fraction">{format_fraction(fraction)}</span></td>'
    )


def _html_anomalies(anomalies: list[dict]) -> str:
    if not anomalies:
        return ""
    items = "".join(
        f"<li><b>{_escape(_anomaly_short(a))}</b> "
        f"(<code>{_escape(a.get('type', ''))}</code>): "
        f"{_escape(a.get('description', ''))}</li>"
        for a in anomalies
    )
    return f"<ul>{items}</ul>"


def _html_sample_lines(sample_lines: dict) -> str:
    """Return a collapsed list of the source lines behind each count kind."""
    items = [
        f"<li>{_escape(kind_label(kind))}: "
        f"{', '.join(f'<code>{_escape(line)}</code>' for line in lines)}</li>"
        for kind, lines in sample_lines.items()
        if lines
    ]
    if not items:
        return ""
    return (
        f"<details><summary>sample lines</summary><ul>{''.join(items)}</ul></details>"
    )


def _html_findings(report: dict) -> str:
    header = "".join(f"<th>{_escape(kind_label(kind))}</th>" for kind in COUNT_KINDS)
    rows = []
    for entry in report.get("features", []):
        feature = entry.get("feature", "")
        split = entry.get("split", "")
        counts = "".join(_html_count_cell(entry, kind) for kind in COUNT_KINDS)
        role_type = f"{entry.get('role', '')} / {entry.get('type', '')}"
        reason = _escape(entry.get("reason") or "")
        samples = _html_sample_lines(entry.get("sample_lines") or {})
        rows.append(
            f'<tr data-feature="{_escape(feature)}" data-split="{_escape(split)}" '
            f'data-decision="{_escape(entry.get("decision", ""))}">'
            f'<td class="feature">{_escape(feature)}</td>'
            f'<td class="split">{_escape(split)}</td>'
            f"<td>{_escape(role_type)}</td>"
            f'<td class="num">{format_count(entry.get("rows"))}</td>'
            f"{counts}"
            f"<td>{_decision_badge(entry.get('decision', ''))}</td>"
            f'<td class="text anomalies">'
            f"{_html_anomalies(entry.get('anomalies') or [])}</td>"
            f'<td class="text reason">{reason}{samples}</td></tr>\n'
        )
    return (
        "<h2>Findings per feature and split</h2>\n"
        '<div class="table-scroll">'
        '<table id="findings"><thead><tr><th>feature</th><th>split</th>'
        f"<th>role / type</th><th>rows</th>{header}<th>decision</th>"
        "<th>TFDV anomalies</th><th>reason</th></tr></thead>\n"
        f"<tbody>\n{''.join(rows)}</tbody></table></div>\n"
    )


def _html_blocking(report: dict) -> str:
    blocking = report.get("blocking") or []
    if not blocking:
        return "<h2>Blocking findings</h2>\n<p>None.</p>\n"
    rows = "".join(
        f"<tr><td>{_escape(b.get('feature') or 'dataset')}</td>"
        f"<td>{_escape(b.get('split', ''))}</td>"
        f"<td>{_escape(kind_label(b.get('kind', '')))}</td>"
        f'<td class="num">{format_count(b.get("count"))}</td>'
        f'<td class="num">{format_fraction(b.get("fraction"))}</td>'
        f"<td>{_escape(b.get('reason') or '')}</td></tr>"
        for b in blocking
    )
    return (
        "<h2>Blocking findings</h2>\n"
        '<table id="blocking"><thead><tr><th>feature</th><th>split</th>'
        "<th>kind</th><th>count</th><th>fraction</th><th>reason</th></tr>"
        f"</thead>\n<tbody>{rows}</tbody></table>\n"
    )


def _html_dataset_anomalies(report: dict) -> str:
    anomalies = report.get("dataset_anomalies") or []
    if not anomalies:
        return ""
    items = "".join(
        f"<li><code>{_escape(a.get('type', 'anomaly'))}</code>: "
        f"{_escape(a.get('description', ''))}</li>"
        for a in anomalies
    )
    return f"<h2>Dataset anomalies</h2>\n<ul>{items}</ul>\n"


def _html_policy(report: dict) -> str:
    policy = json.dumps(
        report.get("policy") or {}, indent=2, sort_keys=True, default=str
    )
    return f"<h2>Gate policy</h2>\n<pre>{html.escape(policy)}</pre>\n"


def _html_paths(report: dict) -> str:
    paths = report.get("paths") or {}
    if not paths:
        return ""
    items = "".join(
        f"<li>{_escape(key)}: <code>{_escape(path)}</code></li>"
        for key, path in sorted(paths.items())
    )
    return f"<h2>Report files</h2>\n<ul>{items}</ul>\n"


# Chart geometry in SVG user units (pixels at 100 % zoom).
_CHART_WIDTH = 960
_LABEL_WIDTH = 230  # feature names and split labels
_PLOT_WIDTH = 600  # bar length at the top of the scale
_LEGEND_HEIGHT = 48
_GROUP_HEADER_HEIGHT = 18  # feature name above its splits
_BAR_HEIGHT = 9
_BAR_GAP = 2
_ROW_HEIGHT = 2 * _BAR_HEIGHT + _BAR_GAP + 8
_GROUP_GAP = 8
_AXIS_HEIGHT = 46
_MAX_LABEL_CHARS = 34
_CHART_COLOURS = {"missing": "#e69f00", "non_finite": "#0072b2"}
_CHART_LABELS = {
    "missing": "missing (absent + empty + NA token + unreadable)",
    "non_finite": "non-finite (NaN + +inf + -inf)",
}


def chart_scale(max_fraction: float) -> float:
    """Return the smallest 1, 2 or 5 times a power of ten that covers max_fraction.

    The result lies between 1e-6 and 1. It is 0.01 when max_fraction is 0, so
    an all-clean chart still has an axis.
    """
    if max_fraction <= 0:
        return 0.01
    for exponent in range(-6, 1):
        for mantissa in (1, 2, 5):
            candidate = mantissa * 10.0**exponent
            if candidate >= max_fraction:
                return min(candidate, 1.0)
    return 1.0


def _truncate(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def _chart_groups(features: list[dict]) -> list[tuple[str, list[dict]]]:
    """Group entries by feature, keeping the order in which features first appear."""
    groups: dict[str, list[dict]] = {}
    for entry in features:
        groups.setdefault(str(entry.get("feature", "")), []).append(entry)
    return list(groups.items())


def _svg_legend() -> list[str]:
    parts = []
    x = _LABEL_WIDTH
    for kind in ("missing", "non_finite"):
        parts.append(
            f'<rect class="legend-swatch" x="{x}" y="12" width="14" height="14" '
            f'fill="{_CHART_COLOURS[kind]}"/>'
        )
        parts.append(
            f'<text x="{x + 20}" y="24" font-size="13">'
            f"{html.escape(_CHART_LABELS[kind])}</text>"
        )
        x += 420
    return parts


def _svg_bar(entry: dict, kind: str, y: float, scale: float) -> list[str]:
    kinds = MISSING_KINDS if kind == "missing" else NON_FINITE_KINDS
    fraction = _group_fraction(entry, kinds)
    count = sum(_count(entry, k) for k in kinds)
    # Clamp so a fraction above 1 from a faulty report cannot draw off the chart.
    width = _PLOT_WIDTH * min(max(fraction, 0.0), scale) / scale
    feature = _escape(entry.get("feature", ""))
    split = _escape(entry.get("split", ""))
    tooltip = (
        f"{feature}, split {split}: {html.escape(_CHART_LABELS[kind])} "
        f"{format_count(count)} ({format_fraction(fraction)})"
    )
    return [
        (
            f'<rect class="bar" data-feature="{feature}" data-split="{split}" '
            f'data-kind="{kind}" data-fraction="{fraction!r}" x="{_LABEL_WIDTH}" '
            f'y="{y:.1f}" width="{width:.3f}" height="{_BAR_HEIGHT}" '
            f'fill="{_CHART_COLOURS[kind]}"><title>{tooltip}</title></rect>'
        ),
        (
            f'<text x="{_LABEL_WIDTH + width + 4:.3f}" y="{y + _BAR_HEIGHT - 1:.1f}" '
            f'font-size="10" fill="#5a6475">{format_fraction(fraction)}</text>'
        ),
    ]


def _svg_axis(top: float, bottom: float, scale: float) -> list[str]:
    parts = [
        (
            f'<line x1="{_LABEL_WIDTH}" y1="{bottom}" x2="{_LABEL_WIDTH + _PLOT_WIDTH}" '
            f'y2="{bottom}" stroke="#5a6475"/>'
        )
    ]
    # Five intervals give round ticks for every scale that chart_scale returns.
    for step in range(6):
        x = _LABEL_WIDTH + _PLOT_WIDTH * step / 5
        percent = scale * 100 * step / 5
        parts.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom + 4}" '
            f'stroke="#d8dde6"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{bottom + 17}" font-size="11" '
            f'text-anchor="middle" fill="#5a6475">{percent:.6g} %</text>'
        )
    parts.append(
        f'<text x="{_LABEL_WIDTH + _PLOT_WIDTH / 2}" y="{bottom + 36}" '
        'font-size="12" text-anchor="middle">Fraction of the split\'s rows (%)'
        "</text>"
    )
    parts.append(
        f'<text transform="translate(14 {(top + bottom) / 2:.1f}) rotate(-90)" '
        'font-size="12" text-anchor="middle">Feature and split</text>'
    )
    return parts


def _html_chart(report: dict) -> str:
    """Return an inline SVG bar chart of missing and non-finite fractions.

    Each feature gets a header line and one row per split. Each row has two
    bars on a shared linear scale, so bar widths are proportional to the
    fractions across the whole chart.
    """
    features = report.get("features", [])
    groups = _chart_groups(features)
    fractions = [
        _group_fraction(entry, kinds)
        for entry in features
        for kinds in (MISSING_KINDS, NON_FINITE_KINDS)
    ]
    scale = chart_scale(max(fractions, default=0.0))

    body: list[str] = []
    y = float(_LEGEND_HEIGHT)
    plot_top = y
    for feature, entries in groups:
        body.append(
            f'<text x="28" y="{y + 13:.1f}" font-size="12" font-weight="600">'
            f"<title>{_escape(feature)}</title>"
            f"{_escape(_truncate(_visible(feature), _MAX_LABEL_CHARS))}</text>"
        )
        y += _GROUP_HEADER_HEIGHT
        for entry in entries:
            split = _truncate(_visible(entry.get("split", "")), 16)
            body.append(
                f'<text x="{_LABEL_WIDTH - 8}" y="{y + _BAR_HEIGHT + 2:.1f}" '
                f'font-size="11" text-anchor="end">{html.escape(split)}</text>'
            )
            body += _svg_bar(entry, "missing", y, scale)
            body += _svg_bar(entry, "non_finite", y + _BAR_HEIGHT + _BAR_GAP, scale)
            y += _ROW_HEIGHT
        y += _GROUP_GAP
    plot_bottom = y

    height = plot_bottom + _AXIS_HEIGHT
    parts = [
        (
            f'<svg id="missing-chart" xmlns="http://www.w3.org/2000/svg" '
            f'width="{_CHART_WIDTH}" height="{height:.0f}" '
            f'viewBox="0 0 {_CHART_WIDTH} {height:.0f}" data-scale="{scale!r}" '
            'role="img" aria-labelledby="missing-chart-title" '
            'style="max-width: 100%; height: auto;">'
        ),
        (
            '<title id="missing-chart-title">Missing and non-finite fraction per '
            "feature and split</title>"
        ),
        *_svg_legend(),
        *_svg_axis(plot_top, plot_bottom, scale),
        *body,
        "</svg>",
    ]
    intro = (
        "<p>Bars share one linear scale from 0 to "
        f"{format_fraction(scale)}. Out-of-range values are counted in the "
        "table only.</p>\n"
    )
    if not groups:
        intro = "<p>The report lists no features.</p>\n"
    return "<h2>Missing and non-finite values</h2>\n" + intro + "\n".join(parts) + "\n"


def render_html(report: dict) -> str:
    """Render the full report as one self-contained HTML page.

    The page contains inline CSS and an inline SVG chart and loads no scripts,
    fonts, images or style sheets. Its Content-Security-Policy blocks any such
    request, so it renders the same offline. The findings table has
    ``id="findings"`` with one ``<tr data-feature data-split>`` per feature and
    split. The chart has ``id="missing-chart"`` with one
    ``<rect class="bar" data-feature data-split data-kind>`` per bar, where
    data-kind is "missing" or "non_finite".
    """
    title = (
        f"Data-quality report: {report.get('dataset', 'dataset')} "
        f"({str(report.get('decision', 'unknown')).upper()})"
    )
    sections = [
        _html_header(report),
        _html_blocking(report),
        _html_splits(report),
        _html_chart(report),
        _html_findings(report),
        _html_dataset_anomalies(report),
        _html_policy(report),
        _html_paths(report),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_escape(title)}</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n"
        + "".join(sections)
        + "</body>\n</html>\n"
    )


# Files.


def _json_default(value: Any) -> Any:
    """Convert NumPy scalars and arrays, which the gate may pass through, to JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(
        f"report value of type {type(value).__name__} is not JSON serializable"
    )


def _write_text(path: str, text: str) -> None:
    """Write text to path through a temporary file, so readers never see half a file."""
    temporary_path = f"{path}.tmp"
    with open(temporary_path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary_path, path)


def write_report(report: dict, out_dir: str) -> dict[str, str]:
    """Write report.json, report.md and report.html into out_dir.

    Creates out_dir if needed and sets ``report["paths"]`` to the absolute
    file paths before rendering, so all three files name each other.

    NOTE: out_dir must be a local directory. Remote URIs such as gs:// are not
    supported.

    Returns:
        The paths, keyed "json", "markdown" and "html".

    Raises:
        ValueError: If the report contains NaN or an infinity, which strict JSON
            parsers reject.
    """
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "json": os.path.join(out_dir, REPORT_JSON),
        "markdown": os.path.join(out_dir, REPORT_MARKDOWN),
        "html": os.path.join(out_dir, REPORT_HTML),
    }
    report["paths"] = dict(paths)

    try:
        report_json = json.dumps(
            report, sort_keys=True, indent=2, allow_nan=False, default=_json_default
        )
    except ValueError as error:
        raise ValueError(
            f"invalid report for {report.get('dataset')!r}: it contains NaN or "
            f"an infinity, which strict JSON parsers reject. Store finite "
            f"counts and fractions ({error})"
        ) from error

    _write_text(paths["json"], report_json + "\n")
    _write_text(paths["markdown"], render_markdown(report))
    _write_text(paths["html"], render_html(report))
    return paths


def load_report(path_or_dir: str) -> dict:
    """Load a report from its report.json or from the directory that contains it.

    Raises:
        FileNotFoundError: If no report.json exists at the given path.
    """
    path = path_or_dir
    if os.path.isdir(path):
        path = os.path.join(path, REPORT_JSON)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"report not found: {path}. Pass the directory that write_report "
            f"wrote to, or the {REPORT_JSON} in it."
        )
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
