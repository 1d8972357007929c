// Weft dashboard: live updates without reloading the page. Pages read fine
// without it; it swaps the changed parts in place, so scroll position and the
// selected step are kept.
"use strict";
(function () {
  const parse = (html) => new DOMParser().parseFromString(html, "text/html");
  async function fetchPage() {
    const res = await fetch(location.href, { headers: { Accept: "text/html" }, cache: "no-store" });
    if (!res.ok) return null;
    return parse(await res.text());
  }
  function swap(doc, ids) {
    for (const id of ids) {
      const next = doc.getElementById(id), cur = document.getElementById(id);
      if (!next || !cur) continue;
      // An SVG's size and viewBox change with its content.
      for (const a of next.attributes) if (cur.getAttribute(a.name) !== a.value) cur.setAttribute(a.name, a.value);
      if (next.innerHTML !== cur.innerHTML) cur.innerHTML = next.innerHTML;
    }
  }

  // Runs list: the first page re-fetches itself every few seconds.
  const runs = document.getElementById("runs");
  if (runs && runs.dataset.live) {
    setInterval(async () => {
      if (document.hidden) return;
      const doc = await fetchPage();
      if (doc) swap(doc, ["runs-body", "counts"]);
    }, 3000);
  }

  // Run page: selecting a step (graph node, Gantt row, table row).
  const live = document.getElementById("run-live");
  let selected = decodeURIComponent((location.hash || "").replace(/^#step-/, "")) || null;
  function select(step) {
    selected = step;
    document.querySelectorAll(".selected").forEach((el) => el.classList.remove("selected"));
    if (!step) return;
    document.querySelectorAll('[data-step="' + CSS.escape(step) + '"]').forEach((el) => {
      if (el.matches(".node, .row, details.step, tr")) el.classList.add("selected");
    });
    const d = document.getElementById("step-" + step);
    if (d) d.open = true;
  }
  if (live) {
    document.addEventListener("click", (ev) => {
      const el = ev.target.closest(".node, #gantt .row, #steps tr[data-step], #critical-path a");
      if (!el || !el.dataset.step) return;
      ev.preventDefault();
      history.replaceState(null, "", "#step-" + el.dataset.step);
      select(el.dataset.step);
      const d = document.getElementById("step-" + el.dataset.step);
      if (d && el.closest("#critical-path, #steps")) d.scrollIntoView({ block: "nearest" });
    });
    select(selected);
    const follow = live.dataset.follow;
    if (follow && window.EventSource) {
      const es = new EventSource(follow);
      let pending = false;
      const refresh = async () => {
        if (pending) return;
        pending = true;
        setTimeout(async () => {
          pending = false;
          const doc = await fetchPage();
          if (!doc) return;
          const open = [...document.querySelectorAll("details.step[open]")].map((d) => d.id);
          const x = window.scrollX, y = window.scrollY;
          swap(doc, ["run-facts", "critical-path", "dag", "gantt-span", "gantt", "steps", "step-details", "history"]);
          open.forEach((id) => { const d = document.getElementById(id); if (d) d.open = true; });
          select(selected);
          window.scrollTo(x, y);
          const st = document.getElementById("run-status");
          live.dataset.status = st ? st.textContent : "";
          const next = doc.getElementById("run-live");
          if (next && !next.dataset.follow) { es.close(); live.removeAttribute("data-follow"); live.dataset.ended = "1"; }
        }, 150);
      };
      es.onmessage = refresh;
      ["run.started", "step.ready", "step.running", "step.skipped", "step.waiting", "step.completed", "step.retrying",
       "step.failed", "step.cancelled", "run.completed", "run.failed", "run.cancelled", "run.retried"]
        .forEach((k) => es.addEventListener(k, refresh));
    }
  }
})();
