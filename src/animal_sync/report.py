"""`status` and `audit`: what the journal says happened, as plain data first and as text second.

The audit trusts nothing the pipeline kept in memory: it re-derives every claim from the journal's rows,
and recomputes every posted record from its raw payload with today's transform.
"""

from __future__ import annotations

import io
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .journal import AnimalState, BatchState, Journal, RunRow, RunState, writer_pid_path
from .transform import InvalidRecord, canonical_json, transform

__all__ = ["audit", "render_audit", "render_status", "select_run", "status", "status_line", "status_table", "writer_process"]

EXAMPLES = 1000  # exceptions listed per kind in the data; the counts are always complete


def _seconds_between(start: str, end: str | None) -> float:
    finish = datetime.fromisoformat(end) if end else datetime.now(datetime.fromisoformat(start).tzinfo)
    return max(0.0, (finish - datetime.fromisoformat(start)).total_seconds())


def select_run(journal: Journal, run_id: int | None) -> RunRow:
    """The run asked for, or the journal's last one; a one-line JournalError when there is none."""
    if run_id is not None:
        return journal.run(run_id)
    run = journal.last_run()
    if run is None:
        from .errors import JournalError

        raise JournalError(f"journal {journal.path} holds no run yet")
    return run


def writer_process(journal_path: Path) -> dict[str, Any]:
    """Which process holds the journal for writing, and whether it is alive on this machine.

    Reads the pid a writer leaves beside the journal (`writer_pid_path`); the file is never locked
    or created here, so a watcher cannot get in a writer's way. A pid from another host or container
    cannot be checked and counts as alive: "gone" is only said when it is certain.
    """
    try:
        text = writer_pid_path(journal_path).read_text().strip()
    except OSError:
        return {"pid": None, "alive": False}  # no writer ever locked this journal
    if not text.isdigit():
        return {"pid": None, "alive": False}
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return {"pid": pid, "alive": False}
    except PermissionError:
        pass  # someone else's live process
    return {"pid": pid, "alive": True}


def status(journal: Journal, run_id: int | None = None) -> dict[str, Any]:
    """The report of the current or last run: progress, states, retries and errors, throughput, what is left."""
    run = select_run(journal, run_id)
    animals = {state.value: 0 for state in AnimalState} | journal.count_animals(run.id)
    batches = {state.value: 0 for state in BatchState} | journal.count_batches(run.id)
    counters = journal.counters(run.id)
    listed = len(journal.listed_pages(run.id))
    elapsed = _seconds_between(run.started_at, run.finished_at if run.state != RunState.RUNNING else None)
    discovered = sum(animals.values())
    return {
        "run_id": run.id,
        "state": str(run.state),
        "base_url": run.base_url,
        "dry_run": bool(run.settings.get("dry_run")),
        "started_at": run.started_at,
        "resumed_at": run.resumed_at,
        "finished_at": run.finished_at,
        "attempts": run.attempts,
        "elapsed_seconds": round(elapsed, 3),
        "pages": {"listed": listed, "total": run.total_pages},
        "animals": {"total": discovered, **animals},
        "batches": batches,
        "retries": {name.removeprefix("retry_"): n for name, n in counters.items() if name.startswith("retry_")},
        "errors": {name: n for name, n in counters.items() if not name.startswith("retry_")},
        "throughput_per_second": round(animals[AnimalState.POSTED] / elapsed, 1) if elapsed else None,
        "left": {
            "pages": None if run.total_pages is None else max(0, run.total_pages - listed),
            "animals": discovered - animals[AnimalState.POSTED],
        },
        "message": (run.outcome or {}).get("message"),
        "process": writer_process(journal.path) if run.state == RunState.RUNNING else None,
    }


def audit(journal: Journal, run_id: int | None = None) -> dict[str, Any]:
    """Prove from the journal alone that every discovered id went out in exactly one batch answered 2xx.

    Exception kinds: unlisted_page, missing, failed, quarantined, in_doubt, duplicate, orphan, mismatch.
    """
    run = select_run(journal, run_id)
    dry_run = bool(run.settings.get("dry_run"))
    found: dict[str, list[dict[str, Any]]] = {}
    counts: dict[str, int] = {}

    def exception(kind: str, **detail: Any) -> None:
        counts[kind] = counts.get(kind, 0) + 1
        if counts[kind] <= EXAMPLES:
            found.setdefault(kind, []).append(detail)

    limit = run.settings.get("limit")
    listed = journal.listed_pages(run.id)
    if limit is None:  # a --limit run stops listing on purpose once it has its animals
        for page in range(1, (run.total_pages or 0) + 1):
            if page not in listed:
                exception("unlisted_page", page=page)
    if run.total_pages is None:
        exception("unlisted_page", page=1, reason="the listing never started")

    in_doubt = journal.batches(run.id, BatchState.IN_DOUBT)
    held = {animal_id for batch in in_doubt for animal_id in batch.ids}
    for batch in in_doubt:
        exception("in_doubt", batch_id=batch.id, ids=batch.ids, reason=batch.last_error, response_status=batch.response_status)

    unposted = journal.iter_animals(run.id, ("state", "last_error", "batch_id"), "AND state != ?", [AnimalState.POSTED])
    for row in unposted:
        if row["id"] in held:
            continue  # named once, with its batch
        state = row["state"]
        if state in (AnimalState.FAILED, AnimalState.QUARANTINED):
            exception(state, id=row["id"], reason=row["last_error"])
        elif not (dry_run and state == AnimalState.FETCHED):
            exception("missing", id=row["id"], state=state, batch_id=row["batch_id"])

    # An id carried by two batches that may have been delivered: the journal itself would allow a double delivery.
    duplicates = journal.db.query(
        "SELECT j.value AS id, group_concat(b.id) AS batches FROM batches b, json_each(b.ids) j"
        " WHERE b.run_id = ? AND b.state IN (?, ?, ?) GROUP BY j.value HAVING count(*) > 1",
        [run.id, BatchState.POSTED, BatchState.IN_DOUBT, BatchState.SENDING],
    )
    for row in duplicates:
        exception("duplicate", id=row["id"], batches=[int(b) for b in row["batches"].split(",")])

    # A posted animal whose batch was not answered 2xx, or a posted batch whose ids are not all posted by it.
    orphans = journal.db.query(
        "SELECT a.id, a.batch_id, b.state AS batch_state FROM animals a LEFT JOIN batches b ON b.id = a.batch_id"
        " WHERE a.run_id = ? AND a.state = ? AND (b.state IS NULL OR b.state != ?)"
        " UNION ALL "
        "SELECT j.value, b.id, b.state FROM batches b, json_each(b.ids) j"
        " LEFT JOIN animals a ON a.run_id = b.run_id AND a.id = j.value"
        " WHERE b.run_id = ? AND b.state = ? AND (a.batch_id IS NOT b.id OR a.state IS NOT ?)",
        [run.id, AnimalState.POSTED, BatchState.POSTED, run.id, BatchState.POSTED, AnimalState.POSTED],
    )
    for row in orphans:
        exception("orphan", id=row["id"], batch_id=row["batch_id"], batch_state=row["batch_state"])

    checked = 0
    posted = journal.iter_animals(run.id, ("id", "raw", "transformed"), "AND state = ?", [AnimalState.POSTED])
    for row in posted:
        checked += 1
        try:
            expected = canonical_json(transform(json.loads(row["raw"])))
        except (InvalidRecord, ValueError, TypeError) as exc:
            exception("mismatch", id=row["id"], reason=f"raw payload no longer transforms: {exc}")
            continue
        if expected != row["transformed"]:
            exception("mismatch", id=row["id"], posted=row["transformed"], expected=expected)

    animals = journal.count_animals(run.id)
    resent = [
        row["id"]
        for row in journal.db.query(
            "SELECT id FROM batches WHERE run_id = ? AND state = ? AND in_doubt_at IS NOT NULL ORDER BY id",
            [run.id, BatchState.POSTED],
        )
    ]
    return {
        "run_id": run.id,
        "run_state": str(run.state),
        "dry_run": dry_run,
        "limit": limit,
        "ok": not counts and run.state == RunState.FINISHED,
        "discovered": sum(animals.values()),
        "posted": animals.get(AnimalState.POSTED, 0),
        "records_rechecked": checked,
        "batches_posted": journal.count_batches(run.id).get(BatchState.POSTED, 0),
        "resent_after_doubt": resent,
        "exception_counts": counts,
        "exceptions": found,
    }


def _counts_grid(counts: dict[str, int]) -> Table | str:
    """name  count, one per line; zeros dimmed so the states that matter stand out."""
    if not counts:
        return "none"
    grid = Table.grid(padding=(0, 2))
    grid.add_column()
    grid.add_column(justify="right")
    for name, count in counts.items():
        grid.add_row(name, f"{count:,}", style=None if count else "dim")
    return grid


_GONE = "no live process is running it (killed?): `animal-sync resume` continues it from the journal"


def _counts_line(counts: dict[str, int]) -> str:
    """total: kind n, kind n, ... (largest first) on one line, or "none"."""
    if not counts:
        return "none"
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return f"{sum(counts.values()):,}: " + ", ".join(f"{name} {count:,}" for name, count in ranked)


def status_table(report: dict[str, Any]) -> Table:
    """The status report as a Rich table: one row per figure, states and counters as nested lists."""
    pages, animals, left = report["pages"], report["animals"], report["left"]
    title = f"run {report['run_id']}: {report['state']}" + (" (dry run)" if report["dry_run"] else "")
    table = Table(title=title, title_justify="left", show_header=False, box=box.SIMPLE, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("API", report["base_url"])
    table.add_row("started", report["started_at"])
    if report["resumed_at"]:
        table.add_row("resumed", report["resumed_at"])
    if report["finished_at"]:
        table.add_row("finished", report["finished_at"])
    table.add_row("attempts", str(report["attempts"]))
    table.add_row("elapsed", f"{report['elapsed_seconds']:.1f} s")
    table.add_row("pages listed", f"{pages['listed']:,} of {pages['total'] if pages['total'] is not None else '?'}")
    states = {name: count for name, count in animals.items() if name != "total"}
    table.add_row("animals", f"{animals['total']:,} listed")
    table.add_row("", _counts_grid(states))
    table.add_row("batches", _counts_grid(report["batches"]))
    table.add_row("retries", _counts_line(report["retries"]))
    table.add_row("errors", _counts_line(report["errors"]))
    table.add_row("throughput", f"{report['throughput_per_second'] or 0:,.1f} animals/s")
    table.add_row(
        "left", f"{left['animals']:,} animals" + (f", {left['pages']:,} pages" if left["pages"] else "")
    )
    if report.get("message"):
        table.add_row("last outcome", report["message"])
    if report.get("process") and not report["process"]["alive"]:
        table.add_row("process", Text(_GONE, style="bold red"))
    return table


def status_line(report: dict[str, Any]) -> str:
    """The status report in one line, for following a run where nothing can be redrawn (a pipe, a log)."""
    pages, animals = report["pages"], report["animals"]
    return (
        f"run {report['run_id']} {report['state']}: pages {pages['listed']}/{pages['total'] if pages['total'] is not None else '?'},"
        f" animals {animals['total']} listed, {animals['posted']} posted, {animals['quarantined']} quarantined,"
        f" {animals['failed']} failed; {report['throughput_per_second'] or 0:.1f}/s, {report['elapsed_seconds']:.0f} s"
    )


def render_status(report: dict[str, Any], width: int = 100) -> str:
    """The status table as plain text (no colour, fixed width), e.g. for a file or an e-mail."""
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    console.print(status_table(report))
    return console.file.getvalue().rstrip("\n")


def _short(value: Any, limit: int = 120) -> str:
    """One value of an exception, cut to a readable length (the full text is in --json)."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_audit(report: dict[str, Any], shown: int = 20) -> str:
    head = (
        f"audit of run {report['run_id']} ({report['run_state']}): {report['posted']} of {report['discovered']} animals"
        f" posted in {report['batches_posted']} batches; {report['records_rechecked']} posted records re-checked"
    )
    lines = [head]
    if report["dry_run"]:
        lines.append("dry run: nothing was meant to be posted; fetched animals are not counted as missing")
    if report["limit"] is not None:
        lines.append(f"test mode: the run was limited to the first {report['limit']} animals listed")
    if report["resent_after_doubt"]:
        lines.append(f"re-sent after being in doubt, then answered 2xx: batches {report['resent_after_doubt']}")
    if report["run_state"] != "finished":
        lines.append(f"the run is {report['run_state']}, not finished: run `animal-sync resume`")
    for kind, count in report["exception_counts"].items():
        lines.append(f"{kind}: {count}")
        for item in report["exceptions"][kind][:shown]:
            lines.append("  " + ", ".join(f"{k}={_short(v)}" for k, v in item.items()))
        if count > shown:
            lines.append(f"  ... and {count - shown} more (see --json)")
    if not report["ok"]:
        lines.append("NOT OK")
    elif report["dry_run"]:
        lines.append("OK (dry run): every discovered animal was fetched and transformed; none was meant to be posted")
    else:
        lines.append("OK: every discovered animal was posted exactly once")
    return "\n".join(lines)
