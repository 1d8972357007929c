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
      if (doc) swap(doc, ["runs-body", "counts", "bulk"]);
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
  const RUN_PARTS = ["run-facts", "run-actions", "critical-path", "dag", "gantt-span", "gantt", "run-undo", "steps", "step-details", "run-people", "run-history"];
  let es = null;
  // Re-renders the run's parts in place, keeping scroll, open steps and the
  // selection; follows the stream again if the run is live again (a retry).
  async function refreshRun() {
    const doc = await fetchPage();
    if (!doc) return;
    const open = [...document.querySelectorAll("details.step[open]")].map((d) => d.id);
    const x = window.scrollX, y = window.scrollY;
    swap(doc, RUN_PARTS);
    open.forEach((id) => { const d = document.getElementById(id); if (d) d.open = true; });
    select(selected);
    window.scrollTo(x, y);
    const st = document.getElementById("run-status");
    live.dataset.status = st ? st.textContent : "";
    const next = doc.getElementById("run-live");
    if (next && next.dataset.follow) { live.dataset.follow = next.dataset.follow; delete live.dataset.ended; follow(); }
    else if (es) { es.close(); es = null; live.removeAttribute("data-follow"); live.dataset.ended = "1"; }
  }
  function follow() {
    const url = live.dataset.follow;
    if (es || !url || !window.EventSource) return;
    es = new EventSource(url);
    let pending = false;
    const refresh = () => {
      if (pending) return;
      pending = true;
      setTimeout(() => { pending = false; refreshRun(); }, 150);
    };
    es.onmessage = refresh;
    ["run.started", "step.ready", "step.running", "step.skipped", "step.waiting", "step.completed", "step.retrying",
     "step.failed", "step.cancelled", "run.completed", "run.failed", "run.cancelled", "run.retried",
     "step.fanned_out", "child.completed", "child.failed", "compensation.started", "step.compensating",
     "step.compensated", "step.compensation_failed", "compensation.completed", "compensation.failed",
     "compensation.skipped", "compensation.cancelled"]
      .forEach((k) => es.addEventListener(k, refresh));
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
    follow();
  }

  // Actions: a confirmation, then the JSON API with the session's CSRF token
  // (the Origin check and X-Weft-Client cover a server without sign-in).
  const problem = document.getElementById("action-error");
  function showError(message) {
    if (!problem) return;
    problem.textContent = message;
    problem.hidden = !message;
  }
  async function post(url, body) {
    const headers = { "Content-Type": "application/json", Accept: "application/json", "X-Weft-Client": "weft-dashboard" };
    if (document.body.dataset.csrf) headers["X-Weft-CSRF"] = document.body.dataset.csrf;
    const res = await fetch(url, { method: "POST", headers, body: JSON.stringify(body || {}), credentials: "same-origin" });
    let data = null;
    try { data = await res.json(); } catch (_) { data = null; }
    if (!res.ok) {
      const e = data && data.error;
      throw new Error(e ? e.message + " (" + e.code + ", HTTP " + res.status + ")" : "HTTP " + res.status);
    }
    return data;
  }
  // Asks in the page's <dialog>; resolves to null (backed out) or the comment.
  function confirmAction(text, withComment) {
    const dialog = document.getElementById("confirm");
    if (!dialog || !dialog.showModal) return Promise.resolve(window.confirm(text) ? "" : null);
    document.getElementById("confirm-text").textContent = text;
    const row = document.getElementById("confirm-comment-row"), comment = document.getElementById("confirm-comment");
    row.hidden = !withComment;
    comment.value = "";
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok" ? comment.value : null), { once: true });
      dialog.showModal();
    });
  }
  window.weftAction = { post, confirmAction, showError };
  document.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button.act");
    if (!btn) return;
    ev.preventDefault();
    showError("");
    let body = btn.dataset.body ? JSON.parse(btn.dataset.body) : {};
    if (btn.dataset.input) {
      const text = document.getElementById(btn.dataset.input).value.trim();
      try {
        body = { input: text ? JSON.parse(text) : {} };
      } catch (err) {
        showError("The input is not valid JSON: " + err.message);
        return;
      }
    }
    const comment = await confirmAction(btn.dataset.confirm || "Are you sure?", !!btn.dataset.comment);
    if (comment === null) return;
    if (btn.dataset.comment && comment.trim()) body.comment = comment.trim();
    btn.disabled = true;
    try {
      const answer = await post(btn.dataset.url, body);
      showError("");
      document.dispatchEvent(new CustomEvent("weft:acted", { detail: { act: btn.dataset.act, answer } }));
      if (live) await refreshRun();
      else if (btn.dataset.then === "run" && answer && answer.run_id) location.assign("/runs/" + answer.run_id);
      else if (btn.dataset.then === "reload") location.reload();
    } catch (err) {
      showError(err.message);
    } finally {
      btn.disabled = false;
    }
  });
})();

// Times: rendered in UTC (`2026-11-29 17:05:03`, readable without script);
// the header's toggle shows them in UTC, local time or relative to now, the
// choice kept in localStorage. The exact UTC instant stays in each title.
(function () {
  const MODES = ["UTC", "local", "relative"];
  const toggle = document.getElementById("tz-toggle");
  if (!toggle) return;
  let mode = MODES.includes(localStorage.getItem("weft.tz")) ? localStorage.getItem("weft.tz") : "UTC";
  const pad = (n) => String(n).padStart(2, "0");
  function ago(ms) {
    const s = Math.round(Math.abs(ms) / 1000), suffix = ms >= 0 ? " ago" : " from now";
    if (s < 60) return s + " s" + suffix;
    if (s < 3600) return Math.round(s / 60) + " min" + suffix;
    if (s < 86400) return Math.round(s / 3600) + " h" + suffix;
    return Math.round(s / 86400) + " d" + suffix;
  }
  function show(el) {
    if (!el.dataset.utc) el.dataset.utc = el.textContent.trim();
    const utc = el.dataset.utc, t = new Date(utc.replace(" ", "T") + "Z");
    if (isNaN(t)) return;
    el.setAttribute("datetime", t.toISOString());
    el.title = utc + " UTC";
    if (mode === "local") {
      el.textContent = t.getFullYear() + "-" + pad(t.getMonth() + 1) + "-" + pad(t.getDate()) + " " +
        pad(t.getHours()) + ":" + pad(t.getMinutes()) + ":" + pad(t.getSeconds());
    } else if (mode === "relative") el.textContent = ago(Date.now() - t.getTime());
    else el.textContent = utc;
  }
  function apply() {
    document.querySelectorAll("time.t").forEach(show);
    document.querySelectorAll(".tz").forEach((el) => { el.textContent = mode === "UTC" ? "(UTC)" : mode === "local" ? "(local)" : ""; });
    toggle.textContent = mode;
  }
  toggle.hidden = false;
  toggle.addEventListener("click", () => {
    mode = MODES[(MODES.indexOf(mode) + 1) % MODES.length];
    localStorage.setItem("weft.tz", mode);
    apply();
  });
  // Parts swapped in by live updates come in UTC: show them in the mode.
  new MutationObserver(() => { if (mode !== "UTC") document.querySelectorAll("time.t:not([datetime])").forEach(show); })
    .observe(document.querySelector("main") || document.body, { childList: true, subtree: true });
  apply();
  if (mode === "relative") setInterval(apply, 30000);
})();
