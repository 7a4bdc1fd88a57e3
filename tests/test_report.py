"""Tests for components/report.py: Markdown, HTML, files and a headless-Chromium render.

The browser tests need Debian's chromium package (`apt-get install -y chromium`).
They open only the local report.html through a file:// URL.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from components.report import (
    COUNT_KINDS,
    KIND_LABELS,
    chart_scale,
    format_blocking_finding,
    format_count,
    format_fraction,
    load_report,
    render_html,
    render_markdown,
    write_report,
)

# A column name as a hostile or careless CSV header could spell it.
HOSTILE_NAME = '<b>"Price & Co"</b>'
HOSTILE_NAME_IN_HTML = "&lt;b&gt;&quot;Price &amp; Co&quot;&lt;/b&gt;"
HOSTILE_NAME_IN_MARKDOWN = '\\<b>"Price & Co"\\</b>'

TRAIN_ROWS = 33_985
EVAL_ROWS = 1_234_567

BROWSER_TIMEOUT_SECONDS = 20


def _entry(
    feature: str,
    split: str,
    rows: int,
    decision: str = "pass",
    reason: str = "",
    anomalies: list[dict] | None = None,
    sample_lines: dict | None = None,
    **counts: int,
) -> dict:
    """Build one feature entry as the gate writes it, with fraction = count / rows."""
    full_counts = {kind: counts.get(kind, 0) for kind in COUNT_KINDS}
    return {
        "feature": feature,
        "role": "numeric",
        "type": "float",
        "split": split,
        "rows": rows,
        "counts": full_counts,
        "fractions": {kind: count / rows for kind, count in full_counts.items()},
        "sample_lines": sample_lines or {},
        "anomalies": anomalies or [],
        "decision": decision,
        "reason": reason,
    }


def _make_report() -> dict:
    return {
        "dataset": "online_retail",
        "created": "2026-12-04T15:00:00Z",
        "decision": "block",
        "policy": {"max_missing_fraction": 0.05, "na_tokens": ["", "NA", "?"]},
        "splits": {
            "train": {"rows": TRAIN_ROWS, "malformed_rows": 0, "malformed_samples": []},
            "eval": {
                "rows": EVAL_ROWS,
                "malformed_rows": 2,
                "malformed_samples": [
                    "2010-12-01.csv:17: expected 8 fields, found 3",
                    "2010-12-02.csv:4: expected 8 fields, found 9",
                ],
            },
        },
        "features": [
            _entry(
                "UnitPrice",
                "train",
                TRAIN_ROWS,
                decision="repair",
                reason="3 NaN values are imputed by Transform with the training median.",
                anomalies=[
                    {
                        "type": "FLOAT_TYPE_HAS_NAN",
                        "short": "Invalid values",
                        "description": "Float feature has NaN values.",
                    }
                ],
                sample_lines={"nan": ["2010-12-01.csv:12"], "unreadable": ["a.csv:9"]},
                nan=3,
                unreadable=1,
            ),
            _entry(
                "UnitPrice",
                "eval",
                EVAL_ROWS,
                decision="block",
                reason="+inf values exceed the 0.5 % limit for numeric features.",
                posinf=12_345,
            ),
            _entry("Quantity", "train", TRAIN_ROWS),
            _entry("Quantity", "eval", EVAL_ROWS),
            _entry(
                "Country",
                "train",
                TRAIN_ROWS,
                decision="tolerate",
                reason="Missing countries become the OOV bucket.",
                empty=500,
                na_token=2_000,
            ),
            _entry(
                "Country",
                "eval",
                EVAL_ROWS,
                decision="tolerate",
                reason="Unknown country codes become the OOV bucket.",
                out_of_range=7,
            ),
            _entry(
                HOSTILE_NAME,
                "eval",
                EVAL_ROWS,
                decision="block",
                reason="The column is absent from every row.",
                anomalies=[
                    {
                        "type": "SCHEMA_MISSING_COLUMN",
                        "short": "Column dropped",
                        "description": "<script>alert(1)</script> is missing.",
                    }
                ],
                absent=EVAL_ROWS,
            ),
        ],
        "blocking": [
            {
                "feature": "UnitPrice",
                "split": "eval",
                "kind": "posinf",
                "count": 12_345,
                "fraction": 12_345 / EVAL_ROWS,
                "reason": "+inf values exceed the 0.5 % limit for numeric features.",
            },
            {
                "feature": HOSTILE_NAME,
                "split": "eval",
                "kind": "absent",
                "count": EVAL_ROWS,
                "fraction": 1.0,
                "reason": "The column is absent from every row.",
            },
        ],
        "dataset_anomalies": [
            {
                "type": "SCHEMA_NEW_COLUMN",
                "description": "New column Discount is not in the schema.",
            }
        ],
    }


def _clean_report() -> dict:
    report = _make_report()
    report["decision"] = "pass"
    report["features"] = [
        _entry("Quantity", "train", TRAIN_ROWS),
        _entry("Quantity", "eval", EVAL_ROWS),
    ]
    report["blocking"] = []
    report["dataset_anomalies"] = []
    return report


# Formatting.


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [
        (0.0, "0.00 %"),
        (3 / 33_985, "0.01 %"),
        (1 / 33_985, "< 0.01 %"),
        (0.0147, "1.47 %"),
        (0.99999, "> 99.99 %"),
        (1.0, "100.00 %"),
        (None, "n/a"),
        (float("nan"), "n/a"),
    ],
)
def test_format_fraction(fraction, expected):
    assert format_fraction(fraction) == expected


def test_format_count_thousands_separators():
    assert format_count(1_234_567) == "1,234,567"
    assert format_count(0) == "0"
    assert format_count(None) == "n/a"


def test_kind_labels_cover_count_kinds():
    assert tuple(KIND_LABELS) == COUNT_KINDS
    assert [KIND_LABELS[kind] for kind in COUNT_KINDS] == [
        "absent",
        "empty",
        "NA token",
        "NaN",
        "+inf",
        "-inf",
        "unreadable",
        "out of range",
    ]


@pytest.mark.parametrize(
    ("max_fraction", "expected"),
    [(0.0, 0.01), (0.0000001, 0.000001), (0.0123, 0.02), (0.04, 0.05), (0.5, 0.5)],
)
def test_chart_scale_rounds_up(max_fraction, expected):
    assert chart_scale(max_fraction) == pytest.approx(expected)


def test_chart_scale_caps_at_one():
    assert chart_scale(1.0) == 1.0
    assert chart_scale(1.7) == 1.0


def test_blocking_line_names_every_field():
    line = format_blocking_finding(_make_report()["blocking"][0])
    assert line == (
        "UnitPrice (split eval): +inf 12,345 (1.00 %). "
        "+inf values exceed the 0.5 % limit for numeric features."
    )


def test_blocking_line_without_count():
    finding = {
        "feature": "Country",
        "split": "train",
        "kind": "anomaly",
        "count": None,
        "fraction": None,
        "reason": "Unexpected string values.",
    }
    assert format_blocking_finding(finding) == (
        "Country (split train): anomaly. Unexpected string values."
    )


# Markdown.


def test_markdown_decision_and_splits():
    markdown = render_markdown(_make_report())
    assert markdown.startswith("# Data-quality report: online_retail\n")
    assert "Decision: BLOCK (created 2026-12-04T15:00:00Z)" in markdown
    assert "| train | 33,985 | 0 |" in markdown
    assert "| eval | 1,234,567 | 2 |" in markdown
    assert "- eval: 2010-12-01.csv:17: expected 8 fields, found 3" in markdown


def test_markdown_lists_findings_per_split():
    expected_rows = [
        (
            "| UnitPrice | train | repair "
            "| NaN 3 (0.01 %), unreadable 1 (< 0.01 %) | Invalid values |"
        ),
        "| UnitPrice | eval | block | +inf 12,345 (1.00 %) | none |",
        (
            "| Country | train | tolerate "
            "| empty 500 (1.47 %), NA token 2,000 (5.88 %) | none |"
        ),
        "| Country | eval | tolerate | out of range 7 (< 0.01 %) | none |",
        (
            f"| {HOSTILE_NAME_IN_MARKDOWN} | eval | block "
            "| absent 1,234,567 (100.00 %) | Column dropped |"
        ),
    ]
    lines = render_markdown(_make_report()).splitlines()
    start = lines.index("| feature | split | decision | counts | anomalies |")
    assert lines[start + 1] == "| --- | --- | --- | --- | --- |"
    end = lines.index("", start)
    assert lines[start + 2 : end] == expected_rows


def test_markdown_leaves_out_clean_features():
    markdown = render_markdown(_make_report())
    assert "Quantity" not in markdown


def test_markdown_blocking_list():
    markdown = render_markdown(_make_report())
    assert "## Blocking findings" in markdown
    assert (
        "- UnitPrice (split eval): +inf 12,345 (1.00 %). "
        "+inf values exceed the 0.5 % limit for numeric features."
    ) in markdown
    assert (
        f"- {HOSTILE_NAME_IN_MARKDOWN} (split eval): absent 1,234,567 (100.00 %). "
        "The column is absent from every row."
    ) in markdown


def test_markdown_dataset_block_without_feature_findings():
    report = _clean_report()
    report["decision"] = "block"
    report["blocking"] = [
        {
            "feature": "",
            "split": "train",
            "kind": "empty_split",
            "count": 0,
            "fraction": 0.0,
            "reason": "split train has 0 rows",
        }
    ]
    markdown = render_markdown(report)
    assert "No feature has findings. The blocking findings below are about the dataset." in markdown
    assert "every feature is clean" not in markdown
    assert "- dataset (split train): empty_split 0 (0.00 %). split train has 0 rows" in markdown
    page = render_html(report)
    assert "<tr><td>dataset</td><td>train</td>" in page


def test_low_presence_anomaly_not_called_dropped():
    report = _clean_report()
    report["features"][0]["anomalies"] = [
        {
            "type": "FEATURE_TYPE_LOW_FRACTION_PRESENT",
            "short": "Column dropped",
            "description": "The feature was present in fewer examples than expected.",
        }
    ]
    markdown = render_markdown(report)
    assert "| Present in too few rows |" in markdown
    assert "Column dropped" not in markdown
    assert "Column dropped" not in render_html(report)


def test_markdown_sample_lines_per_count():
    lines = render_markdown(_make_report()).splitlines()
    start = lines.index("## Sample lines")

    # Three NaN values but one sample line, so the list ends with "...".
    assert lines[start + 4] == "- UnitPrice (train), NaN: 2010-12-01.csv:12, ..."
    # One unreadable value and its one line.
    assert lines[start + 5] == "- UnitPrice (train), unreadable: a.csv:9"
    assert lines[start + 6] == ""


def test_markdown_sample_lines_capped_and_escaped():
    report = _clean_report()
    sample_lines = {"empty": [f"b|c.csv:{n}" for n in range(1, 6)]}
    report["features"] = [
        _entry("Country", "eval", EVAL_ROWS, sample_lines=sample_lines, empty=5)
    ]
    markdown = render_markdown(report)
    assert (
        "- Country (eval), empty: b\\|c.csv:1, b\\|c.csv:2, b\\|c.csv:3, ..."
        in markdown
    )
    assert "c.csv:4" not in markdown


def test_markdown_clean_report():
    markdown = render_markdown(_clean_report())
    assert "Decision: PASS" in markdown
    assert "No findings: every feature is clean in every split." in markdown
    assert "Blocking findings" not in markdown
    assert "Sample lines" not in markdown
    assert "Quantity" not in markdown


def test_markdown_dataset_anomalies():
    markdown = render_markdown(_make_report())
    assert "- SCHEMA_NEW_COLUMN: New column Discount is not in the schema." in markdown


def test_markdown_escapes_table_breakers():
    report = _clean_report()
    report["features"] = [
        _entry("a|b", "train", TRAIN_ROWS, nan=1),
        _entry("line\nbreak\x1b[31m", "train", TRAIN_ROWS, nan=1),
    ]
    markdown = render_markdown(report)
    assert "| a\\|b | train | pass |" in markdown
    assert "| line\\nbreak\\x1b[31m | train | pass |" in markdown
    assert "\x1b" not in markdown


def test_markdown_paths_only_when_set():
    report = _make_report()
    assert "Full report:" not in render_markdown(report)
    report["paths"] = {
        "json": "/runs/1/report.json",
        "markdown": "/runs/1/report.md",
        "html": "/runs/1/report.html",
    }
    markdown = render_markdown(report)
    assert markdown.endswith(
        "Full report:\n- HTML: /runs/1/report.html\n- JSON: /runs/1/report.json\n"
    )


# HTML without a browser.


def test_html_escapes_column_names():
    page = render_html(_make_report())
    assert HOSTILE_NAME not in page
    assert f'<td class="feature">{HOSTILE_NAME_IN_HTML}</td>' in page
    assert f'data-feature="{HOSTILE_NAME_IN_HTML}"' in page


def test_html_escapes_anomaly_text():
    page = render_html(_make_report())
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; is missing." in page


@pytest.mark.parametrize(
    "reference", ["src=", "href=", "url(", "@import", "<link", "<img", "<iframe"]
)
def test_html_loads_no_external_resources(reference):
    assert reference not in render_html(_make_report()).lower()


def test_html_has_content_security_policy():
    page = render_html(_make_report())
    assert (
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">"
    ) in page


def test_html_shows_policy_and_dataset_anomalies():
    page = render_html(_make_report())
    assert "&quot;max_missing_fraction&quot;: 0.05" in page
    assert "<code>SCHEMA_NEW_COLUMN</code>: New column Discount" in page
    assert "<code>2010-12-02.csv:4: expected 8 fields, found 9</code>" in page


def test_html_shows_sample_lines():
    page = render_html(_make_report())
    assert "<li>NaN: <code>2010-12-01.csv:12</code></li>" in page
    assert "<li>unreadable: <code>a.csv:9</code></li>" in page


# Files.


def test_write_report_files(tmp_path):
    report = _make_report()
    out_dir = tmp_path / "new" / "report"
    paths = write_report(report, str(out_dir))

    assert paths == {
        "json": str(out_dir / "report.json"),
        "markdown": str(out_dir / "report.md"),
        "html": str(out_dir / "report.html"),
    }
    assert report["paths"] == paths
    assert sorted(os.listdir(out_dir)) == ["report.html", "report.json", "report.md"]


def test_write_report_json_format(tmp_path):
    report = _make_report()
    paths = write_report(report, str(tmp_path))
    text = Path(paths["json"]).read_text(encoding="utf-8")
    assert text == json.dumps(report, sort_keys=True, indent=2) + "\n"


def test_write_report_markdown_names_html(tmp_path):
    paths = write_report(_make_report(), str(tmp_path))
    markdown = Path(paths["markdown"]).read_text(encoding="utf-8")
    assert f"- HTML: {paths['html']}" in markdown


def test_write_report_rejects_nan(tmp_path):
    report = _make_report()
    report["features"][0]["fractions"]["nan"] = float("nan")
    with pytest.raises(ValueError, match="NaN or an infinity"):
        write_report(report, str(tmp_path))


def test_load_report_from_dir_or_file(tmp_path):
    report = _make_report()
    paths = write_report(report, str(tmp_path))
    assert load_report(str(tmp_path)) == report
    assert load_report(paths["json"]) == report


def test_load_report_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="report not found"):
        load_report(str(tmp_path))


# Headless Chromium.


def _find_chromium() -> str:
    browser = shutil.which("chromium")
    if browser is None and os.path.exists("/usr/bin/chromium"):
        browser = "/usr/bin/chromium"
    if browser is None:
        pytest.fail(
            "chromium not found on PATH or at /usr/bin/chromium. The HTML report "
            "tests need it. Install it with: apt-get install -y chromium"
        )
    return browser


def _run_chromium(profile_dir: Path, *arguments: str) -> str:
    """Run headless Chromium on local files and return its stdout.

    Chromium starts helper processes, so it runs in its own process group,
    which is killed on timeout and afterwards in case a helper outlived it.
    """
    command = [
        _find_chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # Docker gives containers a 64 MB /dev/shm by default, and Chromium can
        # crash when it runs out. This flag moves that shared memory to /tmp.
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile_dir}",
        *arguments,
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=BROWSER_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"chromium timed out after {BROWSER_TIMEOUT_SECONDS} s: {command}")
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert process.returncode == 0, f"chromium failed: {command}\n{stderr[-2000:]}"
    return stdout


class _ReportDomParser(HTMLParser):
    """Collect the findings-table rows and the chart bars from a rendered DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.table_ids: list[str] = []
        self.in_chart = False
        self.rows: list[dict] = []
        self.bars: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "table":
            self.table_ids.append(attributes.get("id") or "")
        in_findings = bool(self.table_ids) and self.table_ids[-1] == "findings"
        if tag == "tr" and in_findings and "data-feature" in attributes:
            self.rows.append(
                {
                    "feature": attributes["data-feature"],
                    "split": attributes["data-split"],
                    "decision": attributes["data-decision"],
                    "counts": {},
                }
            )
        if tag == "td" and in_findings and "data-kind" in attributes:
            self.rows[-1]["counts"][attributes["data-kind"]] = int(
                attributes["data-count"]
            )
        if tag == "svg" and attributes.get("id") == "missing-chart":
            self.in_chart = True
        if tag == "rect" and self.in_chart and attributes.get("class") == "bar":
            self.bars.append(attributes)

    def handle_endtag(self, tag):
        if tag == "table" and self.table_ids:
            self.table_ids.pop()
        if tag == "svg":
            self.in_chart = False


@pytest.fixture(scope="module")
def report_html_path(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("report")
    return Path(write_report(_make_report(), str(out_dir))["html"])


@pytest.fixture(scope="module")
def rendered_dom(report_html_path, tmp_path_factory) -> _ReportDomParser:
    profile_dir = tmp_path_factory.mktemp("chromium-profile-dom")
    dom = _run_chromium(profile_dir, "--dump-dom", report_html_path.as_uri())
    parser = _ReportDomParser()
    parser.feed(dom)
    parser.close()
    return parser


def test_browser_findings_rows(rendered_dom):
    expected = [
        ("UnitPrice", "train", "repair"),
        ("UnitPrice", "eval", "block"),
        ("Quantity", "train", "pass"),
        ("Quantity", "eval", "pass"),
        ("Country", "train", "tolerate"),
        ("Country", "eval", "tolerate"),
        (HOSTILE_NAME, "eval", "block"),
    ]
    rows = [
        (row["feature"], row["split"], row["decision"]) for row in rendered_dom.rows
    ]
    assert rows == expected


def test_browser_findings_counts(rendered_dom):
    rows = {(row["feature"], row["split"]): row["counts"] for row in rendered_dom.rows}
    for counts in rows.values():
        assert list(counts) == list(COUNT_KINDS)
    assert rows[("UnitPrice", "train")]["nan"] == 3
    assert rows[("UnitPrice", "train")]["unreadable"] == 1
    assert rows[("UnitPrice", "eval")]["posinf"] == 12_345
    assert rows[("Country", "train")]["na_token"] == 2_000
    assert rows[("Country", "eval")]["out_of_range"] == 7
    assert rows[(HOSTILE_NAME, "eval")]["absent"] == EVAL_ROWS
    assert sum(rows[("Quantity", "eval")].values()) == 0


def _expected_bar_fractions() -> dict[tuple[str, str, str], float]:
    """Return the chart fractions per bar, summed by hand from the report's counts."""
    fractions = {}
    for entry in _make_report()["features"]:
        counts = entry["counts"]
        rows = entry["rows"]
        missing = counts["absent"] + counts["empty"]
        missing += counts["na_token"] + counts["unreadable"]
        non_finite = counts["nan"] + counts["posinf"] + counts["neginf"]
        key = (entry["feature"], entry["split"])
        fractions[(*key, "missing")] = missing / rows
        fractions[(*key, "non_finite")] = non_finite / rows
    return fractions


def test_browser_chart_has_one_bar_each(rendered_dom):
    keys = [
        (bar["data-feature"], bar["data-split"], bar["data-kind"])
        for bar in rendered_dom.bars
    ]
    assert len(keys) == 14
    assert sorted(keys) == sorted(_expected_bar_fractions())


def test_browser_chart_widths_proportional(rendered_dom):
    expected = _expected_bar_fractions()
    widths = {
        (bar["data-feature"], bar["data-split"], bar["data-kind"]): float(bar["width"])
        for bar in rendered_dom.bars
    }
    # The 100 % absent column sets the scale, so 1.0 maps to the widest bar.
    pixels_per_unit = widths[(HOSTILE_NAME, "eval", "missing")]
    assert pixels_per_unit > 100
    for key, fraction in expected.items():
        assert widths[key] == pytest.approx(fraction * pixels_per_unit, abs=0.01), key
    assert widths[("Quantity", "train", "missing")] == 0
    assert (
        widths[("Country", "train", "missing")]
        > widths[("UnitPrice", "eval", "non_finite")]
    )


def test_browser_page_fits_window(report_html_path, tmp_path):
    # The findings table of this report is about 1,250 px wide, so a
    # 1024 px window shows whether it scrolls in its box or widens the page.
    # A copy of the report with a script that records the page's layout
    # width, read back from the DOM that Chromium dumps after rendering. The
    # report's content security policy allows no script, so the copy's does.
    page = report_html_path.read_text(encoding="utf-8")
    assert "style-src 'unsafe-inline'" in page
    page = page.replace(
        "style-src 'unsafe-inline'", "style-src 'unsafe-inline'; script-src 'unsafe-inline'"
    )
    probe = (
        "<script>document.body.setAttribute('data-scroll-width', "
        "document.documentElement.scrollWidth);</script></body>"
    )
    measured = tmp_path / "measured.html"
    measured.write_text(page.replace("</body>", probe), encoding="utf-8")
    dom = _run_chromium(
        tmp_path / "chromium-profile",
        "--window-size=1024,2000",
        "--dump-dom",
        measured.as_uri(),
    )
    match = re.search(r'data-scroll-width="(\d+)"', dom)
    assert match is not None, dom[:500]
    assert int(match.group(1)) <= 1024


def test_browser_screenshot(report_html_path, tmp_path):
    screenshot = tmp_path / "report.png"
    _run_chromium(
        tmp_path / "chromium-profile",
        f"--screenshot={screenshot}",
        "--window-size=1280,2000",
        report_html_path.as_uri(),
    )
    assert screenshot.exists()
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 2000)
    # With Chromium 156, a blank 1280 x 2000 page gave a 12 kB PNG, a page with
    # one heading 14 kB and this report over 200 kB.
    assert len(data) > 30_000
