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

from .journal import AnimalState, BatchState, Decision, Journal, RunRow, RunState, writer_pid_path
from .settle import standing, unsettled_resends
from .transform import InvalidRecord, canonical_json, transform

__all__ = [
    "audit",
    "render_audit",
    "render_status",
    "select_run",
    "settled",
    "settled_line",
    "status",
    "status_line",
    "status_table",
    "writer_process",
]

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


def settled(journal: Journal, run_id: int) -> list[dict[str, Any]]:
    """The batches a person has settled whose settlement still stands, with who, when, why and how many animals."""
    found = []
    for batch_id, settlement in journal.settlements(run_id).items():
        batch = journal.batch(batch_id)
        if standing(settlement, batch):
            found.append({
                "batch_id": batch_id,
                "decision": str(settlement.decision),
                "reason": settlement.reason,
                "user": settlement.user,
                "settled_at": settlement.settled_at,
                "animals": len(batch.ids),
                "batch_state": str(batch.state),
            })
    return found


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
        "base_url": journal.attempt_url(run.id),  # the API in use: a resume may have moved the run to a new one
        "first_base_url": run.base_url,
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
        # POST outcomes (delivered, never_received, refused_before_reading, ...) and what became of the bodies.
        "posts": {name.removeprefix("post_"): n for name, n in counters.items() if name.startswith("post_")},
        "errors": {name: n for name, n in counters.items() if not name.startswith(("retry_", "post_"))},
        "throughput_per_second": round(animals[AnimalState.POSTED] / elapsed, 1) if elapsed else None,
        "left": {
            "pages": None if run.total_pages is None else max(0, run.total_pages - listed),
            "animals": discovered - animals[AnimalState.POSTED] - animals[AnimalState.SETTLED],
        },
        "settled": settled(journal, run.id),
        "message": (run.outcome or {}).get("message"),
        "process": writer_process(journal.path) if run.state == RunState.RUNNING else None,
    }


def audit(journal: Journal, run_id: int | None = None) -> dict[str, Any]:
    """Prove from the journal alone that every discovered id went out in exactly one batch answered 2xx.

    Exception kinds: upstream_changed, unlisted_page, bad_listing_item, missing, failed, quarantined, in_doubt,
    at_least_once, duplicate, orphan, mismatch. A batch a person settled (`settle`) is listed apart, under
    "settled", and is not an exception.
    """
    run = select_run(journal, run_id)
    dry_run = bool(run.settings.get("dry_run"))
    found: dict[str, list[dict[str, Any]]] = {}
    counts: dict[str, int] = {}

    def exception(kind: str, **detail: Any) -> None:
        counts[kind] = counts.get(kind, 0) + 1
        if counts[kind] <= EXAMPLES:
            found.setdefault(kind, []).append(detail)

    changed = (run.outcome or {}).get("upstream_changed")
    if changed:  # the last attempt saw the upstream serve another data set under the journaled ids
        exception("upstream_changed", reason=changed)
    limit = run.settings.get("limit")
    listed = journal.listed_pages(run.id)
    if limit is None:  # a --limit run stops listing on purpose once it has its animals
        for page in range(1, (run.total_pages or 0) + 1):
            if page not in listed:
                exception("unlisted_page", page=page)
    if run.total_pages is None:
        exception("unlisted_page", page=1, reason="the listing never started")

    for item in journal.bad_listing_items(run.id):
        exception("bad_listing_item", **item)

    in_doubt = journal.batches(run.id, BatchState.IN_DOUBT)
    held = {animal_id for batch in in_doubt for animal_id in batch.ids}
    for batch in in_doubt:
        exception("in_doubt", batch_id=batch.id, ids=batch.ids, reason=batch.last_error, response_status=batch.response_status)
    # Answered 2xx, but only after a send whose outcome was lost: delivered at least once, perhaps twice.
    for batch in unsettled_resends(journal, run.id):
        exception(
            "at_least_once", batch_id=batch.id, animals=len(batch.ids), attempts=batch.attempts,
            in_doubt_at=batch.in_doubt_at, reason="re-sent after its outcome was unknown, then answered 2xx",
        )

    delivered = (AnimalState.POSTED, AnimalState.SETTLED)  # settled: judged delivered by a person, listed apart
    unposted = journal.iter_animals(run.id, ("state", "last_error", "batch_id"), "AND state NOT IN (?, ?)", delivered)
    for row in unposted:
        if row["id"] in held:
            continue  # named once, with its batch
        state = row["state"]
        if state in (AnimalState.FAILED, AnimalState.QUARANTINED):
            exception(state, id=row["id"], reason=row["last_error"])
        elif not (dry_run and state == AnimalState.FETCHED):
            exception("missing", id=row["id"], state=state, batch_id=row["batch_id"])

    # An id carried by two batches that may have been delivered: the journal itself would allow a double delivery.
    # A batch once in doubt may have been, whatever its state now (e.g. pending again for a re-send a person asked for).
    duplicates = journal.db.query(
        "SELECT j.value AS id, group_concat(b.id) AS batches FROM batches b, json_each(b.ids) j"
        " WHERE b.run_id = ? AND (b.state IN (?, ?, ?, ?) OR b.in_doubt_at IS NOT NULL) GROUP BY j.value HAVING count(*) > 1",
        [run.id, BatchState.POSTED, BatchState.IN_DOUBT, BatchState.SENDING, BatchState.SETTLED],
    )
    for row in duplicates:
        exception("duplicate", id=row["id"], batches=[int(b) for b in row["batches"].split(",")])

    # A posted animal whose batch was not answered 2xx, or a posted batch whose ids are not all posted by it;
    # likewise for a batch settled as delivered and its animals.
    for animal_state, batch_state in ((AnimalState.POSTED, BatchState.POSTED), (AnimalState.SETTLED, BatchState.SETTLED)):
        orphans = journal.db.query(
            "SELECT a.id, a.batch_id, b.state AS batch_state FROM animals a LEFT JOIN batches b ON b.id = a.batch_id"
            " WHERE a.run_id = ? AND a.state = ? AND (b.state IS NULL OR b.state != ?)"
            " UNION ALL "
            "SELECT j.value, b.id, b.state FROM batches b, json_each(b.ids) j"
            " LEFT JOIN animals a ON a.run_id = b.run_id AND a.id = j.value"
            " WHERE b.run_id = ? AND b.state = ? AND (a.batch_id IS NOT b.id OR a.state IS NOT ?)",
            [run.id, animal_state, batch_state, run.id, batch_state, animal_state],
        )
        for row in orphans:
            exception("orphan", id=row["id"], batch_id=row["batch_id"], batch_state=row["batch_state"])

    checked = 0
    posted = journal.iter_animals(run.id, ("id", "raw", "transformed"), "AND state IN (?, ?)", delivered)
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
        "settled_animals": animals.get(AnimalState.SETTLED, 0),
        "records_rechecked": checked,
        "batches_posted": journal.count_batches(run.id).get(BatchState.POSTED, 0),
        "resent_after_doubt": resent,
        "settled": settled(journal, run.id),
        "exception_counts": counts,
        "exceptions": found,
        "process": writer_process(journal.path) if run.state == RunState.RUNNING else None,
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
    if report.get("first_base_url", report["base_url"]) != report["base_url"]:
        table.add_row("API at start", report["first_base_url"])
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
    table.add_row("POSTs", _counts_line(report["posts"]))
    table.add_row("errors", _counts_line(report["errors"]))
    table.add_row("throughput", f"{report['throughput_per_second'] or 0:,.1f} animals/s")
    table.add_row(
        "left", f"{left['animals']:,} animals" + (f", {left['pages']:,} pages" if left["pages"] else "")
    )
    for item in report.get("settled", []):
        table.add_row("settled", settled_line(item))
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


def settled_line(item: dict[str, Any]) -> str:
    """One settled batch in words: what a person decided, who and when, why, and where the batch is now."""
    decided = "as delivered" if item["decision"] == Decision.DELIVERED else "for re-send"
    where = {
        BatchState.PENDING: "; queued for the next `animal-sync resume`",
        BatchState.WITHHELD: "; its re-send is out, its body not yet released",
        BatchState.SENDING: "; its re-send was in flight",
        BatchState.POSTED: "; re-sent and answered 2xx" if item["decision"] == Decision.RESEND else "; it had been re-sent and answered 2xx",
    }.get(BatchState(item["batch_state"]), "")
    return (
        f"batch {item['batch_id']} ({item['animals']} animals) settled {decided} by a person"
        f" ({item['user']}, {item['settled_at']}): {_short(item['reason'], 200)}{where}"
    )


def render_audit(report: dict[str, Any], shown: int = 20) -> str:
    head = (
        f"audit of run {report['run_id']} ({report['run_state']}): {report['posted']} of {report['discovered']} animals"
        f" posted in {report['batches_posted']} batches; {report['records_rechecked']} posted records re-checked"
    )
    if report["settled_animals"]:
        head = (
            f"audit of run {report['run_id']} ({report['run_state']}): {report['posted']} of {report['discovered']} animals"
            f" posted in {report['batches_posted']} batches and {report['settled_animals']} settled as delivered by a"
            f" person; {report['records_rechecked']} posted or settled records re-checked"
        )
    lines = [head]
    if report["dry_run"]:
        lines.append("dry run: nothing was meant to be posted; fetched animals are not counted as missing")
    if report["limit"] is not None:
        lines.append(f"test mode: the run was limited to the first {report['limit']} animals listed")
    lines.extend(settled_line(item) for item in report["settled"])
    process = report.get("process")
    if process and process["alive"]:  # resuming now would be refused: the journal is that process's
        lines.append(f"the run is still running (pid {process['pid']}): wait for it, or follow it with `animal-sync status --watch`")
    elif report["run_state"] != "finished":
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
    elif report["settled"]:
        lines.append(
            "OK: every discovered animal was posted exactly once,"
            f" except {len(report['settled'])} batches settled by a person (listed above)"
        )
    else:
        lines.append("OK: every discovered animal was posted exactly once")
    return "\n".join(lines)
