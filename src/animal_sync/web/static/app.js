// The live page: fills the overview from the server's event stream. Every value goes in with textContent or as
// an SVG attribute, never as markup: names and errors come from the upstream.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const COLOURS = {
    posted: "#2e7d32", settled: "#7cb342", unchanged: "#81c784", batched: "#00838f",
    fetched: "#1565c0", discovered: "#9e9e9e", quarantined: "#ef6c00", failed: "#c62828",
  };
  const SVG = "http://www.w3.org/2000/svg";
  const number = (n) => (n === null || n === undefined ? "-" : Number(n).toLocaleString("en"));

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function clock(seconds) {
    if (seconds === null || seconds === undefined) return "-";
    const s = Math.round(seconds);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + " h " : "") + (h || m ? m + " min " : "") + r + " s";
  }

  function bar(key, value, max, words, rate, unit) {
    const progress = $("bar-" + key);
    progress.max = Math.max(max, 1);
    progress.value = Math.min(value, progress.max);
    $("num-" + key).textContent = words;
    $("rate-" + key).textContent = rate === null || rate === undefined ? "" : number(rate) + " " + unit + "/s";
  }

  function donut(animals) {
    const parts = $("donut-parts"), legend = $("legend");
    parts.replaceChildren();
    legend.replaceChildren();
    const total = Object.values(animals).reduce((a, b) => a + b, 0);
    let start = 0;
    for (const [state, count] of Object.entries(animals)) {
      if (!count) continue;
      const share = (100 * count) / total;
      const arc = document.createElementNS(SVG, "circle");
      for (const [name, value] of Object.entries({
        cx: 21, cy: 21, r: 15.915, fill: "none", stroke: COLOURS[state] || "#444", "stroke-width": 6,
        "stroke-dasharray": share + " " + (100 - share), "stroke-dashoffset": 25 - start,
      })) arc.setAttribute(name, value);
      const title = document.createElementNS(SVG, "title");
      title.textContent = state + ": " + number(count);
      arc.appendChild(title);
      parts.appendChild(arc);
      start += share;
      const item = element("li");
      const swatch = element("span", null, "swatch");
      swatch.setAttribute("data-state", state);
      item.append(swatch, element("span", state + " " + number(count) + " (" + share.toFixed(1) + "%)"));
      legend.appendChild(item);
    }
    for (const swatch of legend.querySelectorAll(".swatch")) {
      swatch.style.background = COLOURS[swatch.getAttribute("data-state")] || "#444";
    }
    if (!total) legend.appendChild(element("li", "no animal listed yet"));
  }

  function rows(body, items) {
    body.replaceChildren();
    for (const cells of items) {
      const tr = element("tr");
      cells.forEach((cell, index) => tr.appendChild(element("td", cell, index === cells.length - 1 ? "n" : "")));
      body.appendChild(tr);
    }
  }

  function render(o) {
    const state = $("state");
    state.textContent = o.state;
    state.className = "state " + o.state.replace(/[^a-z ]/g, "");
    $("summary").textContent = number(o.done) + " of " + number(o.expected) + " animals delivered; "
      + clock(o.elapsed_seconds) + " elapsed";
    const r = o.rates || {};
    bar("pages", o.pages_listed, o.pages_total || o.pages_listed,
      number(o.pages_listed) + " of " + number(o.pages_total), r.pages, "pages");
    bar("fetched", o.fetched, o.expected, number(o.fetched) + " of " + number(o.expected), r.fetched, "animals");
    bar("posted", o.posted, o.expected, number(o.posted) + " of " + number(o.expected), r.posted, "animals");
    $("eta").textContent = o.state === "running" ? clock(o.eta_seconds) : "-";
    donut(o.animals);
    const posts = Object.entries(o.posts).map(([k, v]) => ["POST", k, number(v)]);
    const retries = Object.entries(o.retries).map(([k, v]) => ["retry", k, number(v)]);
    rows($("posts-body"), posts.concat(retries).length ? posts.concat(retries) : [["-", "none yet", "0"]]);
    const list = $("exception-list");
    list.replaceChildren();
    for (const fix of o.exceptions) {
      const item = element("li");
      const head = (o.journals.length > 1 ? fix.journal + ": " : "") + fix.kind + " (" + number(fix.count) + "): " + fix.what;
      item.append(element("span", head), element("code", fix.command, "command"));
      list.appendChild(item);
    }
    if (!o.exceptions.length) list.appendChild(element("li", o.state === "no run yet" ? "no run yet" : "none", "ok"));
    rows($("journal-body"), o.journals.map((j) => j.status
      ? [j.journal, j.status.shard || "0/1", j.status.run_id, j.status.state, number(j.status.animals.posted), number(j.status.left.animals)]
      : [j.journal, "", "", j.problem, "", ""]));
    const events = $("events");
    events.replaceChildren();
    for (const e of o.events) {
      const item = element("li");
      const words = (o.journals.length > 1 ? e.journal + " " : "") + e.kind + " " + e.subject + " " + e.state
        + (e.detail ? ": " + e.detail : "");
      item.append(element("span", e.at, "at"), element("span", words));
      events.appendChild(item);
    }
    if (o.children && $("children")) {
      const children = $("children");
      children.replaceChildren();
      for (const c of o.children) {
        const how = c.exit_code === null ? "running" : "exited with code " + c.exit_code;
        const last = c.last_lines.length ? ": " + c.last_lines[c.last_lines.length - 1] : "";
        children.appendChild(element("li", "pid " + c.pid + " " + c.command.slice(2).join(" ") + ", " + how + last));
      }
    }
  }

  function connect() {
    const conn = $("conn");
    const source = new EventSource("events");
    source.addEventListener("overview", (event) => {
      render(JSON.parse(event.data));
      conn.textContent = "live: updated " + new Date().toLocaleTimeString();
    });
    source.onerror = () => { conn.textContent = "connection lost: retrying"; };
  }

  function trigger() {
    const form = $("trigger-form");
    if (!form) return;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const result = $("trigger-result");
      const token = $("token").value;
      const headers = token ? { Authorization: "Bearer " + token } : {};
      result.textContent = "asking…";
      try {
        const answer = await fetch("runs", { method: "POST", headers: headers, credentials: "omit" });
        const body = await answer.json();
        if (answer.status === 202) {
          result.textContent = "started: " + body.launches.filter((l) => l.started).map((l) => l.child.command.slice(2).join(" ")).join("; ");
        } else if (answer.status === 401) {
          result.textContent = "refused (401): " + body.detail;
        } else {
          result.textContent = "not started (" + answer.status + "): " + (body.launches || []).map((l) => l.refused).join("; ");
        }
      } catch (error) {
        result.textContent = "could not reach the server: " + error;
      }
    });
  }

  if ($("overview")) {
    connect();
    trigger();
  }
})();
