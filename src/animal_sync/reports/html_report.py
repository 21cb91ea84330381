"""`report --html`: one self-contained page about a run: summary, charts as inline SVG, retries, exceptions.

Data first (`report_data`: status, audit and a throughput series, all from the journal alone), then the
page (`render_html`). The page loads nothing: no scripts, no fonts, no stylesheets, no images from
anywhere, so it can be mailed, archived as a CI artefact or opened offline years later.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import OutputError
from .audit import Audit, audit
from ..journal import AnimalState, Journal, last_posted_at, posted_batch_sizes, select_run
from .status import SettledBatch, Status, plain, status

__all__ = ["ReportData", "Throughput", "render_html", "report_data", "svg_columns", "svg_hbars", "throughput", "write_html_report"]

NICE_SECONDS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
MAX_BUCKETS = 60  # columns in the throughput chart, whatever the run's length
SHOWN = 200  # exceptions listed per kind on the page; counts are always complete

STATE_COLOURS = {
    AnimalState.POSTED: "#2e7d32",
    AnimalState.SETTLED: "#7cb342",
    AnimalState.UNCHANGED: "#81c784",
    AnimalState.BATCHED: "#00838f",
    AnimalState.FETCHED: "#1565c0",
    AnimalState.DISCOVERED: "#9e9e9e",
    AnimalState.QUARANTINED: "#ef6c00",
    AnimalState.FAILED: "#c62828",
}


def _moment(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


@dataclass(frozen=True)
class Throughput:
    """Animals posted per bucket of `bucket_seconds`, counted from `origin` (the run's start)."""

    origin: str
    bucket_seconds: int
    posted: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return plain(self)


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows (also what a test or another renderer would use)."""

    status: Status
    audit: Audit
    throughput: Throughput
    journal: str
    generated_at: str
    version: str

    def to_json(self) -> dict[str, Any]:
        return {**plain(self), "status": self.status.to_json()}


def throughput(journal: Journal, run_id: int | None = None) -> Throughput:
    """Animals posted per bucket of time since the run started, from each posted batch's answer time.

    The bucket is the smallest of NICE_SECONDS that keeps the chart within MAX_BUCKETS columns, so a
    ten-second demo is drawn per second and a day-long run per half hour. Batches are streamed.
    """
    run = select_run(journal, run_id)
    origin = _moment(run.started_at)
    last = last_posted_at(journal, run.id)
    if last is None:
        return Throughput(run.started_at, 1, ())
    span = max(0.0, (_moment(last) - origin).total_seconds())
    width = next((nice for nice in NICE_SECONDS if span / nice < MAX_BUCKETS), NICE_SECONDS[-1])
    buckets = [0] * (int(span // width) + 1)
    for finished_at, size in posted_batch_sizes(journal, run.id):
        index = int(max(0.0, (_moment(finished_at) - origin).total_seconds()) // width)
        buckets[min(index, len(buckets) - 1)] += size
    return Throughput(run.started_at, width, tuple(buckets))


def report_data(journal: Journal, run_id: int | None = None) -> ReportData:
    """Everything the page shows, from the journal alone: status, audit and a throughput series."""
    run = select_run(journal, run_id)
    return ReportData(
        status=status(journal, run.id),
        audit=audit(journal, run.id),
        throughput=throughput(journal, run.id),
        journal=str(journal.path),
        generated_at=datetime.now().astimezone().isoformat(timespec="seconds"),
        version=__version__,
    )


# -- inline SVG ------------------------------------------------------------------------------------------------

_e = html.escape


def _nice_ceiling(value: float) -> float:
    """1, 2, 2.5 or 5 times a power of ten, at or above `value`: a readable top for an axis."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}"


def svg_hbars(items: Sequence[tuple[str, int, str]], *, title: str, width: int = 640) -> str:
    """Horizontal bars: (label, value, colour) each; values written at the end of their bar. No items: "none"."""
    if not items:
        return '<p class="meta">none</p>'
    row, label_w, value_w = 26, 150, 80
    height = row * max(1, len(items)) + 8
    top = max([value for _, value, _ in items] + [1])
    scale = (width - label_w - value_w) / top
    parts = [
        f'<svg role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{_e(title)}</title>'
    ]
    for index, (label, value, colour) in enumerate(items):
        y = 4 + index * row
        bar = max(1.0, value * scale) if value else 0.0
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end" class="label">{_e(label)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{bar:.1f}" height="{row - 8}" rx="2" fill="{colour}"/>'
            f'<text x="{label_w + bar + 6:.1f}" y="{y + 17}" class="value">{value:,}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def svg_columns(values: Sequence[float], *, bucket_seconds: int, title: str, unit: str, width: int = 720) -> str:
    """A column chart of a time series: one column per bucket, a y axis with gridlines, time on x."""
    height, left, bottom, top, right = 250, 56, 28, 24, 12
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = _nice_ceiling(max(values, default=0))
    parts = [
        f'<svg role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{_e(title)}</title>'
    ]
    for tick in range(5):
        value = peak * tick / 4
        y = top + plot_h - plot_h * tick / 4
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{value:,.4g}</text>'
        )
    if values:
        step = plot_w / len(values)
        for index, value in enumerate(values):
            bar = plot_h * value / peak
            parts.append(
                f'<rect x="{left + index * step + step * 0.1:.1f}" y="{top + plot_h - bar:.1f}" '
                f'width="{max(step * 0.8, 0.5):.1f}" height="{bar:.1f}" class="column">'
                f"<title>{_clock(index * bucket_seconds)}: {value:,.1f} {_e(unit)}</title></rect>"
            )
        every = max(1, math.ceil(len(values) / 8))
        for index in range(0, len(values) + 1, every):
            x = left + index * step
            parts.append(
                f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle" class="tick">'
                f"{_clock(index * bucket_seconds)}</text>"
            )
    else:
        parts.append(f'<text x="{left + 12}" y="{top + plot_h / 2}" class="label">nothing posted</text>')
    parts.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" class="axis"/>'
        f'<text x="4" y="{top - 10}" class="tick">{_e(unit)}</text></svg>'
    )
    return "".join(parts)


# -- the page --------------------------------------------------------------------------------------------------

_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 color:#1d1d1f;background:#fafafa;margin:0;padding:24px 32px;max-width:1100px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 4px}.meta{color:#666;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{background:#fff;border:1px solid #e0e0e0;border-radius:8px;padding:10px 14px;min-width:130px}
.card b{display:block;font-size:22px}.card span{color:#666;font-size:12px;text-transform:uppercase}
.ok{color:#2e7d32}.bad{color:#c62828}
table{border-collapse:collapse;background:#fff;font-size:13px}
td,th{border:1px solid #e0e0e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
svg{background:#fff;border:1px solid #e0e0e0;border-radius:8px}
svg .label{font-size:13px;fill:#333}svg .value{font-size:12px;fill:#333}
svg .tick{font-size:11px;fill:#666}svg .grid{stroke:#eee}svg .axis{stroke:#999}
svg .column{fill:#2e7d32}
"""


def _card(label: str, value: Any, css: str = "") -> str:
    return f'<div class="card"><span>{_e(label)}</span><b class="{css}">{_e(str(value))}</b></div>'


def _kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    """A two-column table of the rows that have a value."""
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(str(v))}</td></tr>" for k, v in rows if v is not None)
    return f"<table>{body}</table>"


def _cell(value: Any) -> str:
    value = plain(value)
    if isinstance(value, list):
        shown = ", ".join(map(str, value[:20])) + (f", ... ({len(value)} in all)" if len(value) > 20 else "")
        return f"<code>{_e(shown)}</code>"
    if isinstance(value, dict):
        value = json.dumps(value)
    text = "" if value is None else str(value)
    return f"<code>{_e(text[:300] + ('...' if len(text) > 300 else ''))}</code>"


def _settled(settled: Sequence[SettledBatch]) -> str:
    """The batches a person settled, one row each: the decision, who and when, why, and where the batch is now."""
    if not settled:
        return '<p class="meta">None.</p>'
    columns = ("batch_id", "decision", "user", "settled_at", "reason", "animals", "batch_state")
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(getattr(item, c))}</td>" for c in columns) + "</tr>" for item in settled)
    return f"<table><tr>{head}</tr>{body}</table>"


def _exceptions(report: Audit) -> str:
    if not report.exception_counts:
        if report.settled:
            return (
                '<p class="ok">None: every discovered animal was posted exactly once, except '
                f'{len(report.settled):,} batches settled by a person (listed above).</p>'
            )
        if report.unchanged:
            return (
                '<p class="ok">None: every discovered animal was posted exactly once, or is unchanged since a named'
                f' delivery of an earlier run ({report.unchanged:,}).</p>'
            )
        return '<p class="ok">None: every discovered animal was posted exactly once.</p>'
    parts = []
    for kind, count in report.exception_counts.items():
        items = report.exceptions.get(kind, ())[:SHOWN]
        columns = list(dict.fromkeys(key for item in items for key in item))
        head = "".join(f"<th>{_e(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{_cell(item.get(c))}</td>" for c in columns) + "</tr>" for item in items)
        more = f"<p class='meta'>{count - len(items):,} more not shown (the audit's JSON lists them all)</p>" if count > len(items) else ""
        parts.append(f'<h3 id="exc-{_e(kind)}">{_e(kind)} ({count:,})</h3><table><tr>{head}</tr>{body}</table>{more}')
    return "".join(parts)


def render_html(data: ReportData) -> str:
    """The page, as one string of HTML with its CSS and SVG inline."""
    st, au, tp = data.status, data.audit, data.throughput
    animals, pages = st.animals, st.pages
    verdict = ("OK" if au.proven else "OK, not proven") if au.ok else "NOT OK"
    title = f"animal-sync run {st.run_id}: {st.state}" + (" (dry run)" if st.dry_run else "")
    width = tp.bucket_seconds
    rates = [count / width for count in tp.posted]
    state_bars = [(state.value, animals.get(state.value, 0), STATE_COLOURS[state]) for state in AnimalState]
    retry_bars = [(name, n, "#6a1b9a") for name, n in st.retries.items()]
    error_bars = [(name, n, "#c62828") for name, n in st.errors.items()]
    post_bars = [(name, n, "#1565c0") for name, n in st.posts.items()]
    exceptions_total = sum(au.exception_counts.values())
    summary = _kv_table([
        ("API", st.base_url),
        ("API at start", st.first_base_url if st.first_base_url != st.base_url else None),
        ("started", st.started_at),
        ("resumed", st.resumed_at),
        ("finished", st.finished_at),
        ("attempts", st.attempts),
        ("elapsed", f"{st.elapsed_seconds:,.1f} s"),
        ("pages listed", f"{pages.listed:,} of {pages.total if pages.total is not None else '?'}"),
        ("batches", ", ".join(f"{k} {v:,}" for k, v in st.batches.items())),
        ("re-sent after doubt", ", ".join(map(str, au.resent_after_doubt)) or "none"),
        ("settled by a person", ", ".join(str(item.batch_id) for item in au.settled) or "none"),
        ("resting on an assumption (not proven)", ", ".join(str(item.batch_id) for item in au.assumed) or "none"),
        ("test mode (limit)", au.limit),
        ("last outcome", st.message),
    ])
    cards = "".join([
        _card("audit", verdict, "ok" if au.ok else "bad"),
        _card("posted", f"{au.posted:,} / {au.discovered:,}"),
        *([_card("unchanged", f"{au.unchanged:,}")] if au.unchanged else []),
        _card("exceptions", f"{exceptions_total:,}", "ok" if not exceptions_total else "bad"),
        _card("batches posted", f"{au.batches_posted:,}"),
        _card("throughput", f"{st.throughput_per_second or 0:,.1f}/s"),
        _card("elapsed", f"{st.elapsed_seconds:,.1f} s"),
    ])
    dry = "<p class='meta'>Dry run: nothing was meant to be posted.</p>" if st.dry_run else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{_e(title)}</h1>
<p class="meta">Journal <code>{_e(data.journal)}</code>, report made {_e(data.generated_at)} by animal-sync {_e(data.version)}. Every figure comes from the journal alone.</p>
{dry}
<div class="cards">{cards}</div>
<h2 id="summary">Summary</h2>
{summary}
<h2 id="states">Animals per state</h2>
{svg_hbars(state_bars, title="animals per state")}
<h2 id="throughput">Throughput over time</h2>
<p class="meta">Animals posted per second, in buckets of {width} s since the run started (from each batch's 2xx answer).</p>
{svg_columns(rates, bucket_seconds=width, title="animals posted per second", unit="animals/s")}
<h2 id="retries">Retries and errors</h2>
<h3>Retries by kind (requests re-sent by the retry policy)</h3>
{svg_hbars(retry_bars, title="retries by kind")}
<h3>POST outcomes, and whether each body waited for 100 Continue</h3>
{svg_hbars(post_bars, title="POST outcomes")}
<h3>Errors by kind</h3>
{svg_hbars(error_bars, title="errors by kind")}
<h2 id="settled">Settled by a person</h2>
<p class="meta">Batches whose delivery the journal could not prove, and what a person decided about them (settled by hand); they are not exceptions.</p>
{_settled(au.settled)}
<h2 id="exceptions">Exceptions from the audit</h2>
<p class="meta">The audit re-derives every claim from the journal and re-checks {au.records_rechecked:,} posted records against their raw payloads.</p>
{_exceptions(au)}
</body>
</html>
"""


def write_html_report(journal: Journal, path: Path, run_id: int | None = None) -> ReportData:
    """Write the page to `path`; returns the data it shows."""
    data = report_data(journal, run_id)
    try:
        path.write_text(render_html(data), encoding="utf-8")
    except OSError as exc:  # a missing directory, a directory in the way, no room: one line, not a traceback
        raise OutputError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    return data
