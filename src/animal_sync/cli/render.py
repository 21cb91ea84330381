"""`status` and `audit` in words: a Rich table and a one-line progress report for status, lines for the audit.

Renderers read the frozen reports' attributes; the JSON forms come from each report's `to_json()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from ..reports.audit import Audit
from ..journal import BatchState, Decision
from ..reports.plain import plain
from ..reports.settled import SettledBatch
from ..shards import PAGE_SIZE
from ..reports.status import Status
from .terminal import printable
from ..reports.union import UnionAudit, UnionStatus, partial_run
from .suggest import command, plural

__all__ = [
    "render_audit", "render_union_audit", "settled_line", "status_hints", "status_line", "status_table", "union_status_table",
]

def status_hints(report: Status) -> list[str]:
    """What to type next after the status table, as whole lines: a table cell would wrap a command in two."""
    return [_gone()] if report.process and not report.process.alive else []


def _gone() -> str:
    return f"no live process is running it (killed?): {command('resume')} continues it from the journal"


def _cell(value: Any) -> Text:
    """A table cell of journal text: escaped, and plain Text, so a `[/bold]` in it is shown, not read as markup."""
    return Text(printable(value))


def _counts_grid(counts: Mapping[str, int]) -> Table | str:
    """name  count, one per line; zeros dimmed so the states that matter stand out."""
    if not counts:
        return "none"
    grid = Table.grid(padding=(0, 2))
    grid.add_column()
    grid.add_column(justify="right")
    for name, count in counts.items():
        grid.add_row(_cell(name), f"{count:,}", style=None if count else "dim")
    return grid


def _counts_line(counts: Mapping[str, int]) -> str:
    """total: kind n, kind n, ... (largest first) on one line, or "none"."""
    if not counts:
        return "none"
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return f"{sum(counts.values()):,}: " + ", ".join(f"{name} {count:,}" for name, count in ranked)


def _of_total(total: int | None) -> str:
    return str(total) if total is not None else "?"


def status_table(report: Status) -> Table:
    """The status report as a Rich table: one row per figure, states and counters as nested lists."""
    title = f"run {report.run_id}: {report.state}" + (" (dry run)" if report.dry_run else "")
    table = Table(title=title, title_justify="left", show_header=False, box=box.SIMPLE, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("API", _cell(report.base_url))
    if report.first_base_url != report.base_url:
        table.add_row("API at start", _cell(report.first_base_url))
    table.add_row("started", _cell(report.started_at))
    if report.resumed_at:
        table.add_row("resumed", _cell(report.resumed_at))
    if report.finished_at:
        table.add_row("finished", _cell(report.finished_at))
    table.add_row("attempts", str(report.attempts))
    table.add_row("elapsed", f"{report.elapsed_seconds:.1f} s")
    pages = report.pages
    if report.shard is not None:
        table.add_row("shard", _cell(f"{report.shard}: lists {_of_total(pages.owned)} of {_of_total(pages.total)} pages"))
    table.add_row("pages listed", f"{pages.listed:,} of {_of_total(pages.owned)}")
    table.add_row("animals", f"{report.animals_total:,} listed")
    table.add_row("", _counts_grid(report.animals))
    table.add_row("batches", _counts_grid(report.batches))
    table.add_row("retries", _cell(_counts_line(report.retries)))
    table.add_row("POSTs", _cell(_counts_line(report.posts)))
    table.add_row("errors", _cell(_counts_line(report.errors)))
    table.add_row("throughput", f"{report.throughput_per_second or 0:,.1f} animals/s")
    left = report.left
    animals = f"{left.animals:,} animal{'' if left.animals == 1 else 's'}"
    table.add_row("left", animals + (f", {left.pages:,} page{'' if left.pages == 1 else 's'}" if left.pages else ""))
    for item in report.settled:
        table.add_row("settled", Text(settled_line(item)))
    if report.message:
        table.add_row("last outcome", _cell(report.message))
    if report.process and not report.process.alive:
        table.add_row("process", Text("no live process is running it (killed?): see below", style="bold red"))
    return table


def status_line(report: Status) -> str:
    """The status report in one line, for following a run where nothing can be redrawn (a pipe, a log)."""
    animals = report.animals
    return (
        f"run {report.run_id} {report.state}: pages {report.pages.listed}/{_of_total(report.pages.total)},"
        f" animals {report.animals_total} listed, {animals['posted']} posted,"
        + (f" {animals['unchanged']} unchanged," if animals["unchanged"] else "")
        + f" {animals['quarantined']} quarantined,"
        f" {animals['failed']} failed; {report.throughput_per_second or 0:.1f}/s, {report.elapsed_seconds:.0f} s"
    )


def _short(value: Any, limit: int = 120) -> str:
    """One value of an exception, cut to a readable length (the full text is in --json)."""
    text = printable(plain(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def settled_line(item: SettledBatch) -> str:
    """One settled batch in words: what a person decided, who and when, why, and where the batch is now."""
    decided = "as delivered" if item.decision == Decision.DELIVERED else "for re-send"
    where = {
        BatchState.PENDING: f"; queued for the next {command('resume')}",
        BatchState.WITHHELD: "; its re-send is out, its body not yet released",
        BatchState.SENDING: "; its re-send was in flight",
        BatchState.POSTED: "; re-sent and answered 2xx" if item.decision == Decision.RESEND else "; it had been re-sent and answered 2xx",
    }.get(item.batch_state, "")
    return (
        f"batch {item.batch_id} ({plural(item.animals, 'animal')}) settled {decided} by a person"
        f" ({printable(item.user)}, {printable(item.settled_at)}): {_short(item.reason, 200)}{where}"
    )


def _head(report: Audit) -> str:
    """The audit's first line: what was posted (settled, unchanged), in how many batches, and what was re-checked."""
    head = f"audit of run {report.run_id} ({report.run_state}): {report.posted} of {plural(report.discovered, 'animal')}"
    head += f" posted in {plural(report.batches_posted, 'batch', 'batches')}"
    rechecked = "posted records"
    if report.settled_animals:
        head += f" and {report.settled_animals} settled as delivered by a person"
        rechecked = "posted or settled records"
    if report.unchanged:  # an incremental run: these were proven delivered, with the same record, before
        head += f", {report.unchanged} unchanged since a named delivery of an earlier run"
    return f"{head}; {report.records_rechecked} {rechecked} re-checked"


def render_audit(report: Audit, shown: int = 20) -> str:
    """The audit in lines: the figures, the settled batches, each exception kind with examples, the verdict last."""
    lines = [_head(report)]
    if report.dry_run:
        lines.append("dry run: nothing was meant to be posted; fetched animals are not counted as missing")
    if report.limit is not None:
        lines.append(f"test mode: the run was limited to the first {report.limit} animals listed")
    lines.extend(settled_line(item) for item in report.settled)
    process = report.process
    if process and process.alive:  # resuming now would be refused: the journal is that process's
        lines.append(f"the run is still running (pid {process.pid}): wait for it, or follow it with {command('status', '--watch')}")
    elif report.run_state != "finished":
        lines.append(f"the run is {report.run_state}, not finished: run {command('resume')}")
    lines.extend(_exception_lines(report.exception_counts, report.exceptions, shown))
    if report.assumed:
        lines.append(f"resting on an assumption, not proven: {plural(len(report.assumed), 'batch')}")
        lines.extend(
            f"  batch {item.batch_id} ({plural(item.animals, 'animal')}): {item.assumption}" for item in report.assumed[:shown]
        )
    if not report.ok:
        lines.append("NOT OK")
    elif report.assumed:
        animals = sum(item.animals for item in report.assumed)
        lines.append(
            f"OK, not proven for {plural(len(report.assumed), 'batch')} ({plural(animals, 'animal')}, listed above): each is exactly once"
            " only if the 5xx it was re-sent after came before the API's handler read its body (the API gave no"
            " 100 Continue to prove it); every other discovered animal was posted exactly once"
        )
    elif report.dry_run:
        lines.append("OK (dry run): every discovered animal was fetched and transformed; none was meant to be posted")
    elif report.settled:
        lines.append(
            "OK: every discovered animal was posted exactly once,"
            f" except {plural(len(report.settled), 'batch', 'batches')} settled by a person (listed above)"
            + (f", or is unchanged since a named delivery ({report.unchanged})" if report.unchanged else "")
        )
    elif report.unchanged:
        lines.append(f"OK: every discovered animal was posted exactly once, or is unchanged since a named delivery ({report.unchanged})")
    else:
        lines.append("OK: every discovered animal was posted exactly once")
    return "\n".join(lines)


def _exception_lines(counts: Mapping[str, int], found: Mapping[str, tuple[Mapping[str, Any], ...]], shown: int) -> list[str]:
    """Each exception kind with its count and its first `shown` examples."""
    lines = []
    for kind, count in counts.items():
        lines.append(f"{kind}: {count}")
        for item in found[kind][:shown]:
            lines.append("  " + ", ".join(f"{k}={_short(v)}" for k, v in item.items()))
        if count > shown:
            lines.append(f"  ... and {count - shown} more (see --json)")
    return lines


def render_union_audit(report: UnionAudit, shown: int = 20) -> str:
    """The shards' audit in lines: the union's figures, one line per journal (its own audit below it when it is
    not OK), the union's exceptions, the verdict last."""
    ids = None if report.total_pages is None else report.total_pages * PAGE_SIZE
    lines = [
        f"audit of {len(report.journals)} shard journals: {_of_total(report.shard_count)} shards,"
        f" {_of_total(report.total_pages)} pages; {report.delivered} of {_of_total(ids)} ids delivered,"
        f" {report.listed} listed"
    ]
    for item in report.journals:
        own = item.audit
        partial = partial_run(own)
        verdict = "NOT OK" if not own.ok else "OK" if partial is None else f"its own audit is OK, but {partial}"
        if own.ok and own.assumed:
            verdict = verdict.replace("OK", f"OK, not proven for {plural(len(own.assumed), 'batch')}", 1)
        lines.append(
            f"{printable(item.journal)}: shard {printable(item.shard)}, run {own.run_id} {own.run_state},"
            f" {own.posted} of {own.discovered} posted: {verdict}"
        )
        if not own.ok or own.assumed:  # its exceptions, or the batches resting on an assumption, under its name
            lines.extend("  " + line for line in render_audit(own, shown).splitlines()[1:-1])
    lines.extend(_exception_lines(report.exception_counts, report.exceptions, shown))
    if report.ok:
        last = _of_total(None if ids is None else ids - 1)
        exact = report.delivered - report.settled
        but = [f"{report.unchanged} unchanged since a named delivery"] if report.unchanged else []
        but += [f"{report.settled} settled as delivered by a person"] if report.settled else []
        assumed = sum(batch.animals for batch in report.assumed)  # never called proven (see audit.Audit.assumed)
        head, tail = "OK", ""
        if report.assumed:
            head = f"OK, not proven for {plural(len(report.assumed), 'batch')} ({plural(assumed, 'animal')}, listed above)"
            tail = (
                f"; those {assumed} are exactly once only if the 5xx each was re-sent after came before the API's"
                " handler read its body"
            )
        lines.append(
            f"{head}: all {report.shard_count} shards present once; every id 0..{last} listed by the shard that owns"
            f" its page; {exact - assumed} delivered exactly once across them" + "".join(f", {part}" for part in but)
            + tail
        )
    else:
        lines.append("NOT OK")
    return "\n".join(lines)


def union_status_table(report: UnionStatus) -> Table:
    """Several shard journals' status: one row per journal, the sums last, the shards not given named."""
    title = (
        f"{len(report.journals)} shard journals: {_of_total(report.shard_count)} shards,"
        f" {_of_total(report.total_pages)} pages"
    )
    if report.missing:
        title += f"; no journal given for shards {', '.join(map(str, report.missing))}"
    table = Table(title=title, title_justify="left", box=box.SIMPLE, pad_edge=False)
    for name in ("journal", "shard", "run", "state", "pages listed", "animals listed", "posted", "left"):
        # a journal's name is folded, never cut: it is the name to give the next command
        table.add_column(name, justify="left" if name in ("journal", "shard", "state") else "right", overflow="fold")
    for item in report.journals:
        own = item.status
        process = " (process gone)" if own.process and not own.process.alive else ""
        table.add_row(
            _cell(item.journal), _cell(own.shard or "0/1"), str(own.run_id), f"{own.state}{process}",
            f"{own.pages.listed:,} of {_of_total(own.pages.owned)}", f"{own.animals_total:,}",
            f"{own.animals['posted']:,}", f"{own.left.animals:,}",
        )
    animals = report.animals
    table.add_row(
        "all", "", "", "", f"{report.pages_listed:,} of {_of_total(report.total_pages)}",
        f"{sum(animals.values()):,}", f"{animals.get('posted', 0):,}", f"{report.left:,}", style="bold",
    )
    return table
