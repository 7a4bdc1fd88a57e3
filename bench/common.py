"""Shared helpers of the benchmark scripts: data sets, measurement, report.

Peak memory is the peak of the summed resident set size (RSS) of the whole
process tree (the command and every descendant), sampled with psutil every
`POLL_SECONDS`. A peak shorter than one interval can be missed. CPU time is
the user plus system time of the command and every descendant it waited for,
from `resource.getrusage(RUSAGE_CHILDREN)`.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any, Sequence

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(REPO, ".venv", "bin")
PYTHON = os.path.join(VENV_BIN, "python")
RECGUARD = os.path.join(VENV_BIN, "recguard")
DOC = os.path.join(REPO, "docs", "benchmarks.md")
RESULTS_DIR = os.path.join(REPO, "bench", "results")

# The whole UCI Online Retail year, one CSV file per day.
SOURCE_DATA = os.environ.get(
    "RECGUARD_BENCH_SOURCE", "/work/shared/data/online-retail-uci/by-day"
)
# Scratch folder for data copies and run directories.
WORK_DIR = os.environ.get("RECGUARD_BENCH_WORK", "/tmp/recguard-bench")

# Data sets by name: the last day (file name) included.
SIZES = {
    "december": "2010-12-23",  # December 2010: the first 20 daily files
    "quarter": "2011-02-28",  # 2010-12-01 to 2011-02-28: 68 files
    "year": "9999-99-99",  # all 305 files
}
SIZE_ORDER = ("december", "quarter", "year")

POLL_SECONDS = 0.1
_DONE_LINE = re.compile(r"^\s+(\S+)\s+done in ([0-9.]+) s")
_RUNNING_LINE = re.compile(r"^\s+(\S+)\s+running \.\.\.")


def data_dir(size: str) -> str:
    """Copies the files of a data set under WORK_DIR once; returns the folder."""
    if size not in SIZES:
        raise ValueError(f"unknown data set {size!r}; use one of {', '.join(SIZE_ORDER)}")
    target = os.path.join(WORK_DIR, "data", size)
    sources = sorted(glob.glob(os.path.join(SOURCE_DATA, "*.csv")))
    if not sources:
        raise FileNotFoundError(
            f"no CSV files in {SOURCE_DATA}; set RECGUARD_BENCH_SOURCE to the "
            "folder of daily Online Retail files"
        )
    selected = [p for p in sources if os.path.basename(p)[:10] <= SIZES[size]]
    os.makedirs(target, exist_ok=True)
    present = sorted(os.listdir(target))
    if present != [os.path.basename(p) for p in selected]:
        for name in present:
            os.remove(os.path.join(target, name))
        for path in selected:
            shutil.copy(path, target)
    return target


def count_rows(folder: str) -> int:
    """Counts CSV data rows (lines after each file's header) in a folder."""
    total = 0
    for path in sorted(glob.glob(os.path.join(folder, "*.csv"))):
        with open(path, "rb") as f:
            total += max(sum(1 for _ in f) - 1, 0)
    return total


def machine() -> dict[str, Any]:
    """Describes the machine: CPUs, CPU model, RAM, OS and Python."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def measure(command: Sequence[str], log_path: str, env: dict | None = None) -> dict[str, Any]:
    """Runs a command and returns wall time, CPU time and peak tree RSS.

    The command's stdout and stderr go to `log_path`. The result also contains
    the per-component times of a `recguard` run ("X done in N s" lines), the
    peak tree RSS while each component ran (from its "X running ..." line to
    the next progress line) and every line of the output that starts with
    "BENCH_JSON " parsed as JSON.

    Raises:
        RuntimeError: when the command exits with a non-zero status.
    """
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    run_env = dict(os.environ, **(env or {}))
    load_before = load_average()
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            list(command), stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=run_env
        )
        peak = peak_anonymous = 0
        peak_by_component: dict[str, int] = {}
        current = "start-up"
        root = psutil.Process(process.pid)
        with open(log_path, encoding="utf-8", errors="replace") as progress:
            while process.poll() is None:
                for line in progress.readlines():
                    running = _RUNNING_LINE.match(line)
                    if running:
                        current = running.group(1)
                    elif _DONE_LINE.match(line):
                        current = "between components"
                rss, anonymous = _tree_rss(root)
                peak = max(peak, rss)
                peak_anonymous = max(peak_anonymous, anonymous)
                peak_by_component[current] = max(peak_by_component.get(current, 0), rss)
                time.sleep(POLL_SECONDS)
    wall = time.perf_counter() - started
    usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (usage_after.ru_utime - usage_before.ru_utime) + (
        usage_after.ru_stime - usage_before.ru_stime
    )
    with open(log_path, encoding="utf-8", errors="replace") as f:
        output = f.read()
    if process.returncode != 0:
        raise RuntimeError(
            f"command failed with exit status {process.returncode}: "
            f"{' '.join(command)}; see {log_path}"
        )
    components: dict[str, float] = {}
    reports: list[dict] = []
    for line in output.splitlines():
        done = _DONE_LINE.match(line)
        if done:
            components[done.group(1)] = float(done.group(2))
        if line.startswith("BENCH_JSON "):
            reports.append(json.loads(line[len("BENCH_JSON "):]))
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_gib": peak / 2**30,
        "peak_anonymous_gib": peak_anonymous / 2**30,
        "peak_rss_by_component_gib": {
            name: value / 2**30 for name, value in peak_by_component.items()
        },
        "components": components,
        "reports": reports,
        "load_before": load_before,
        "load_after": load_average(),
    }


def _tree_rss(root: psutil.Process) -> tuple[int, int]:
    """Returns the summed RSS of the process tree and its anonymous part.

    The anonymous part is RSS minus the file-backed and shared pages
    (psutil's ``shared``, Linux's RssFile plus RssShmem). How much of a
    shared library stays mapped depends on the page cache. With identical
    files on one machine, RssFile after the imports was 0.35 GiB in one
    venv and 0.48 GiB in a freshly installed one. RssAnon was 0.35 GiB in
    both.
    """
    total = anonymous = 0
    try:
        processes = [root] + root.children(recursive=True)
    except psutil.Error:
        return 0, 0
    for process in processes:
        try:
            info = process.memory_info()
        except psutil.Error:
            continue  # the process ended between listing and reading
        total += info.rss
        anonymous += info.rss - getattr(info, "shared", 0)
    return total, anonymous


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """Formats min-max of repeated runs, the noise next to a median."""
    if len(values) < 2:
        return "-"
    return f"{min(values):.1f}-{max(values):.1f}"


def save_results(name: str, results: dict[str, Any]) -> str:
    """Writes the raw results of a benchmark to bench/results/NAME.json."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    return path


def load_results(name: str) -> dict[str, Any] | None:
    """Reads bench/results/NAME.json, or returns None when it does not exist."""
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def header_lines(command: str, runs_note: str) -> list[str]:
    """Returns the command, machine and date lines above a result table."""
    info = machine()
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return [
        f"Command: `{command}`",
        "",
        f"Machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['ram_gib']} GiB RAM, "
        f"{info['os']}, Python {info['python']}. Date: {now}. {runs_note}",
        "",
    ]


def write_section(name: str, title: str, lines: list[str]) -> None:
    """Replaces (or appends) the section NAME of docs/benchmarks.md.

    A section is the text between `<!-- bench:NAME -->` and
    `<!-- /bench:NAME -->`, so each script rewrites only its own table.
    """
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    body = "\n".join([start, f"## {title}", "", *lines, end])
    text = ""
    if os.path.exists(DOC):
        with open(DOC, encoding="utf-8") as f:
            text = f.read()
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + body + after
    else:
        if not text:
            text = "# Benchmarks\n\n"
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(text)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Formats a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return lines


def this_command() -> str:
    """Returns the command line that started this script, relative to the repo."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO)
    return " ".join([".venv/bin/python", script, *sys.argv[1:]])
