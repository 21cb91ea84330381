"""The HTML pages, rendered from data with every value escaped: names come from the upstream and are never markup.

The overview is a frame that app.js fills from the server-sent events (with `textContent` only); the animals
page is rendered here in full, so a search works with scripts off too.
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode

from .animals import AnimalsPage, FoundAnimal, pretty

__all__ = ["animals_page", "overview_page"]


def _frame(title: str, journals: list[str], body: str, current: str) -> str:
    here = ' aria-current="page"'
    links = "".join(
        f'<a href="{href}"{here if href == current else ""}>{escape(label)}</a>'
        for href, label in (("./", "Overview"), ("animals", "Animals"), ("metrics", "/metrics"))
    )
    names = ", ".join(escape(name) for name in journals)
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · animal-sync</title>"
        '<link rel="icon" href="data:,"><link rel="stylesheet" href="static/style.css">'
        '<script src="static/app.js" defer></script></head><body>'
        f'<header><h1>animal-sync</h1><nav>{links}</nav><p class="journals">journal: {names}</p></header>'
        f"<main>{body}</main></body></html>\n"
    )


def overview_page(journals: list[str], trigger: bool) -> str:
    """The overview's frame; app.js fills it from `/events` once a second."""
    bars = "".join(
        f'<div class="bar"><span class="label">{label}</span><progress id="bar-{key}" max="1" value="0"></progress>'
        f'<span class="figure" id="num-{key}">-</span><span class="rate" id="rate-{key}"></span></div>'
        for key, label in (("pages", "pages listed"), ("fetched", "animals fetched"), ("posted", "animals posted"))
    )
    control = (
        '<section id="trigger"><h2>Start or resume</h2>'
        '<p>Starts <code>animal-sync resume</code> (or <code>run</code> for a journal with no run) as a child process,'
        " under the CLI's rules: one writer, and a finished run is not synced again.</p>"
        '<form id="trigger-form"><label>Token <input type="password" id="token" autocomplete="off"></label>'
        '<button type="submit" id="trigger-button">Start or resume</button></form>'
        '<p id="trigger-result" role="status"></p><ul id="children"></ul></section>'
        if trigger
        else ""
    )
    body = (
        '<div id="overview">'
        '<section id="run"><h2>Run <span id="state" class="state">connecting</span></h2>'
        '<p id="summary"></p><p class="conn" id="conn"></p></section>'
        f'<section id="progress"><h2>Progress</h2>{bars}<p>ETA <span id="eta">-</span></p></section>'
        '<section id="states"><h2>Animals by state</h2><svg id="donut" viewBox="0 0 42 42" role="img"'
        ' aria-label="animals by state"><circle class="hole" cx="21" cy="21" r="15.915" fill="none"'
        ' stroke="#eee" stroke-width="6"></circle><g id="donut-parts"></g></svg><ul id="legend"></ul></section>'
        '<section id="posts"><h2>POST outcomes and retries</h2><table><thead><tr><th>kind</th><th>what</th>'
        '<th>count</th></tr></thead><tbody id="posts-body"></tbody></table></section>'
        '<section id="exceptions"><h2>Exceptions</h2><ul id="exception-list"></ul></section>'
        f"{control}"
        '<section id="journals"><h2>Journals</h2><table><thead><tr><th>journal</th><th>shard</th><th>run</th>'
        '<th>state</th><th>posted</th><th>left</th></tr></thead><tbody id="journal-body"></tbody></table></section>'
        '<section id="log"><h2>Recent events</h2><ol id="events"></ol></section>'
        "</div>"
    )
    return _frame("Overview", journals, body, "./")


def _animal(item: FoundAnimal, several: bool) -> str:
    record, batch = item.record, item.batch
    name = item.name
    if batch is not None:
        answer = f", HTTP {batch.response_status}" if batch.response_status is not None else ""
        posts = "1 POST" if batch.attempts == 1 else f"{batch.attempts} POSTs"
        carried = f"batch {batch.id} ({escape(batch.state)}, {batch.size} animals, {posts}{answer})"
    elif record.batch_id is not None:
        carried = f"batch {record.batch_id}"
    else:
        carried = "no batch yet"
    where = f'<span class="where">{escape(item.journal)}</span> ' if several else ""
    error = f'<p class="error">{escape(record.last_error)}</p>' if record.last_error else ""
    return (
        f'<article class="animal" data-id="{record.id}"><h3>{where}<span class="id">#{record.id}</span> '
        f'<span class="name">{escape(name) if name is not None else "(no name)"}</span> '
        f'<span class="state state-{escape(record.state)}">{escape(record.state)}</span> '
        f'<span class="batch">{carried}</span></h3>{error}'
        '<div class="records"><figure><figcaption>as received</figcaption>'
        f"<pre>{escape(pretty(record.raw)) or '(not fetched yet)'}</pre></figure>"
        "<figure><figcaption>as posted</figcaption>"
        f"<pre>{escape(pretty(record.transformed)) or '(none)'}</pre></figure></div></article>"
    )


def animals_page(journals: list[str], found: AnimalsPage) -> str:
    """The search form, one page of animals, and links to the pages around it."""

    def link(page: int, label: str) -> str:
        query = urlencode({"q": found.text, "page": page})
        return f'<a href="animals?{escape(query)}" rel="{"prev" if page < found.page else "next"}">{label}</a>'

    nav = []
    if found.page > 1:
        nav.append(link(found.page - 1, "&larr; previous"))
    nav.append(f"<span>page {found.page} of {found.pages} ({found.total:,} animals)</span>")
    if found.page < found.pages:
        nav.append(link(found.page + 1, "next &rarr;"))
    problems = "".join(f'<p class="error">{escape(problem)}</p>' for problem in found.problems)
    results = "".join(_animal(item, len(journals) > 1) for item in found.animals) or "<p>No animal matches.</p>"
    body = (
        '<section id="search"><h2>Animals</h2><form method="get" action="animals">'
        f'<input type="search" name="q" id="q" value="{escape(found.text)}" placeholder="id or name"'
        ' aria-label="id or name"><button type="submit">Search</button></form>'
        f'{problems}<nav class="pager">{" ".join(nav)}</nav><div id="results">{results}</div></section>'
    )
    return _frame("Animals", journals, body, "animals")
