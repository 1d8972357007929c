#!/usr/bin/env python3
"""Writes BENCHMARKS.md from one bench-compare.sh session: Weft's lines (WEFT_JSONL) and the peers' lines
recorded since SESSION_TS (PEERS_DIR/*/results/*.jsonl). Median [min..max] per variant, as the peers'
aggregate.py computes them, plus Weft/peer ratios of medians. Configuration comes from the environment
bench-compare.sh exports; stdlib only."""
import glob, json, os, statistics
from collections import defaultdict

E = os.environ.get
VKEYS = ["config", "mode", "queue_poll_s", "concurrency", "pool", "n"]  # as aggregate.py


def variant(r):
    return ", ".join(f"{k}={r[k]}" for k in VKEYS if k in r and not (k == "n" and r["test"] in ("A", "C")))


def load():
    rows = []
    wf = E("WEFT_JSONL", "")
    if wf and os.path.exists(wf):
        rows += [json.loads(l) for l in open(wf) if l.strip()]
    since = E("SESSION_TS", "")
    pd = E("PEERS_DIR", "")
    if pd and E("SKIP_PEERS", "0") != "1":
        for path in sorted(glob.glob(os.path.join(pd, "*", "results", "*.jsonl"))):
            for l in open(path):
                if not l.strip():
                    continue
                r = json.loads(l)
                if r.get("ts", "") >= since and "invalid" not in r and r.get("peer") != "weft":
                    rows.append(r)
    return rows


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(vals, nd=1):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    f = lambda x: f"{x:.{nd}f}"
    m = statistics.median(vals)
    return f"{f(m)} (1 run)" if len(vals) == 1 else f"{f(m)} [{f(min(vals))}..{f(max(vals))}]"


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b not in (None, 0) else "-"


def main():
    rows = load()
    groups = defaultdict(list)
    for r in rows:
        if r.get("drained") is False:
            r["drain_per_s"] = None
        groups[(r["test"], r["peer"], variant(r))].append(r)
    # dbos C shares its subprocess with B_direct: its contention figure is B_direct's (as aggregate.py)
    bd = {r["ts"]: r.get("foreign_cpu_cores") for (t, p, _), rs in groups.items() if t == "B_direct" for r in rs}
    for (t, p, _), rs in groups.items():
        if p == "dbos" and t == "C":
            for r in rs:
                r["foreign_cpu_cores"] = bd.get(r["ts"], r.get("foreign_cpu_cores"))

    def keys(test_pred):
        ks = [k for k in groups if test_pred(k[0])]
        return sorted(ks, key=lambda k: (k[1] != "weft", k[1], k[0], k[2]))

    fc = lambda rs: fmt([r.get("foreign_cpu_cores") for r in rs], 2)
    out = ["# Benchmarks: Weft and its peers", ""]
    out += [f"Session started {E('SESSION_TS')}; {E('REPS')} interleaved rounds (every Weft scenario, then one round of the peers; "
            "F and G, minutes each, in the first round only). "
            "Each cell is the median [min..max] over the runs of that variant. Numbers from a shared 2-core VM: "
            "`foreign CPU` is the CPU other tenants used during the run (cores); runs with more than ~0.15 are contaminated "
            "and should be read as pessimistic.", ""]
    missing = E("MISSING", "").split()
    if E("SKIP_PEERS", "0") == "1":
        out += ["**Peers were not run in this session (SKIP_PEERS=1): Weft half only.**", ""]
    elif missing:
        out += [f"**Peers missing (could not be installed or started here): {', '.join(missing)}.** "
                "Their rows are absent; see target/bench-compare/bench-compare.log.", ""]
    out += ["How Weft is measured (`crates/weft-bench`): one process holds the Weft server (axum on a loopback port, "
            "engine loops), an SDK worker (`weft-worker`, no-op handler) and the driver, which speaks HTTP to the server "
            "like any client. Postgres is a throwaway cluster with durable defaults (fsync on, synchronous_commit on); "
            "SQLite is a temp file (WAL, synchronous=FULL). A starts one run per HTTP request (sequentially, or 16 in "
            "flight for `enqueue=16 concurrent requests`; concurrent starts share a transaction in the server), or 500 "
            "per request through the batch start endpoint (`a-bulk`), then starts the worker and times the drain from "
            "the first handler call until the store shows every run completed. The SDK worker sends the results that "
            "finish together in one request (one transaction). B and C observe completion with "
            "`GET /v1/runs/{id}?wait_ms=...`, which the server answers when the run ends. Weft's peak RSS is the whole process (server + worker + driver; with `--worker "
            "process` or `exec`, plus the worker's process tree: see Worker modes); the peers' "
            "is the worker process tree only. The peers' clients write jobs to Postgres directly (one transaction per job); "
            "Weft's clients go through its HTTP API, so Weft's enqueue/s includes an HTTP round trip per run.", ""]

    A = keys(lambda t: t == "A")
    out += ["## A. Throughput (N one-step runs enqueued, then drained)", "",
            "| peer | variant | N | runs | enqueue/s | drain/s | drain/s incl. worker start-up | peak RSS MB | foreign CPU |",
            "|---|---|---|---|---|---|---|---|---|"]
    for k in A:
        rs = groups[k]
        out.append(f"| {k[1]} | {k[2]} | {rs[0]['n']} | {len(rs)} | {fmt([r['enqueue_per_s'] for r in rs])} | "
                   f"{fmt([r.get('drain_per_s') for r in rs])} | {fmt([r.get('from_spawn_per_s') for r in rs])} | "
                   f"{fmt([r.get('peak_rss_mb') for r in rs])} | {fc(rs)} |")
    B = keys(lambda t: t.startswith("B"))
    out += ["", "## B. Latency, one run at a time (start → completion observed)", "",
            "| peer | test | variant | samples/run | runs | p50 ms | p95 ms | p99 ms | observed via | foreign CPU |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for k in B:
        rs = groups[k]
        out.append(f"| {k[1]} | {k[0]} | {k[2]} | {rs[0]['n']} | {len(rs)} | {fmt([r['p50_ms'] for r in rs])} | "
                   f"{fmt([r['p95_ms'] for r in rs])} | {fmt([r['p99_ms'] for r in rs])} | {rs[0].get('observe', '')} | {fc(rs)} |")
    C = keys(lambda t: t == "C")
    out += ["", "## C. Three-step sequential workflows of no-op steps", "",
            "| peer | variant | runs | wf/s (N submitted, then all awaited) | N | p50 ms (sequential) | p99 ms (sequential) | foreign CPU |",
            "|---|---|---|---|---|---|---|---|"]
    for k in C:
        rs = groups[k]
        out.append(f"| {k[1]} | {k[2]} | {len(rs)} | {fmt([r.get('wf_per_s') for r in rs])} | {rs[0]['n']} | "
                   f"{fmt([r['lat']['p50_ms'] for r in rs])} | {fmt([r['lat']['p99_ms'] for r in rs])} | {fc(rs)} |")

    # Weft's own timing buckets for the runs B and C observed: where the latency goes
    wt = [k for k in B + C if k[1] == "weft" and any("weft_timing_p50_ms" in r for r in groups[k])]
    if wt:
        names = ["run_schedule_to_start", "run_end_to_end", "attempt_queue_wait", "attempt_dispatch", "attempt_handler",
                 "attempt_ingest", "attempt_total"]
        out += ["", "### Weft's own timing of the same runs (median over runs of the per-run median, whole ms)", "",
                "From the timing Weft records per run and attempt (`GET /v1/runs/{id}`): `run_end_to_end` is created → finished "
                "inside the engine; the rest of the observed latency is the HTTP start call and the wait request's answer. "
                "`queue_wait` ready → claimed, `dispatch` claimed → handler start, `ingest` result received → committed, "
                "`total` claimed → committed.", "",
                "| test | variant | observed p50 | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
        for k in wt:
            rs = [r for r in groups[k] if "weft_timing_p50_ms" in r]
            obs = fmt([r["p50_ms"] if k[0] != "C" else r["lat"]["p50_ms"] for r in rs])
            out.append(f"| {k[0]} | {k[2]} | {obs} | " + " | ".join(fmt([r["weft_timing_p50_ms"].get(n) for r in rs]) for n in names) + " |")

    # where the handlers run: the same A and B with each worker mode, against the in-process SDK worker
    wrows = defaultdict(list)
    for r in rows:
        if r.get("peer") == "weft" and (r["test"] == "B" or (r["test"] == "A" and r.get("enqueue_concurrency", 1) == 1)):
            wrows[(r.get("backend", "?"), r.get("worker", "sdk-inproc"))].append(r)
    if len({w for _, w in wrows}) > 1:
        order = {"sdk-inproc": 0, "sdk-process": 1, "exec": 2}
        out += ["", "## Worker modes (Weft): where the handlers run", "",
                "The same A (sequential enqueue) and B with the handlers in the harness process (`sdk-inproc`), in an SDK worker "
                "of its own (`sdk-process`: `weft-bench` re-executed as a worker), and in the exec worker (`exec`: `weft worker "
                "--handlers`, one `true` process per step). A process per step has its own cost: it is reported here, not hidden. "
                "× is this mode's median over the in-process worker's median on the same backend. With a worker process, drain/s is timed "
                "from the first claim the server committed, and peak RSS adds the worker process tree's peak to the harness's "
                "(handler processes as sampled every 100 ms).", "",
                "| backend | worker | A runs | A N | drain/s | × inproc | peak RSS MB | B runs | B p50 ms | × inproc | B p99 ms | × inproc |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for backend, worker in sorted(wrows, key=lambda k: (k[0], order.get(k[1], 9), k[1])):
            rs = wrows[(backend, worker)]
            base = wrows.get((backend, "sdk-inproc"), [])
            a, b = [r for r in rs if r["test"] == "A"], [r for r in rs if r["test"] == "B"]
            ba, bb = [r for r in base if r["test"] == "A"], [r for r in base if r["test"] == "B"]
            mm = lambda xs, k: med([r.get(k) for r in xs])
            out.append(f"| {backend} | {worker} | {len(a)} | {a[0]['n'] if a else '-'} | {fmt([r.get('drain_per_s') for r in a])} | "
                       f"{ratio(mm(a, 'drain_per_s'), mm(ba, 'drain_per_s'))} | {fmt([r.get('peak_rss_mb') for r in a])} | {len(b)} | "
                       f"{fmt([r.get('p50_ms') for r in b])} | {ratio(mm(b, 'p50_ms'), mm(bb, 'p50_ms'))} | "
                       f"{fmt([r.get('p99_ms') for r in b])} | {ratio(mm(b, 'p99_ms'), mm(bb, 'p99_ms'))} |")

    # E: the cost of observability, every signal off vs on
    E_ = keys(lambda t: t == "E")
    if E_:
        target = next((r.get("target_cost_pct") for k in E_ for r in groups[k]), 5.0)
        out += ["", "## E. Observability overhead (Weft): every signal off vs on", "",
                f"Target: every signal on costs at most {target:g} % of throughput (A drain/s on ÷ off ≥ {1 - target / 100:.2f}). "
                "A (`--e-n` runs, sequential enqueue) and B, each on a fresh database in a fresh child process, in the order "
                "A off, A on, B off, B on. **Off**: logs at `error`, no trace pipeline, `/metrics` not scraped, gauge sweep daily "
                "(the metrics registry itself has no switch). **On**, as `weft server` runs with them configured: JSON logs at "
                "`info` to stderr and a daily file, OTLP/HTTP protobuf export of the server, run, attempt and `execute` spans to a "
                "collector in the parent process, `/metrics` scraped every second, gauges every 5 s. The last columns are the "
                "evidence that the signals were on (A's child). Ratios are medians of each session round's on ÷ off.", "",
                "| variant | runs | A N | drain/s off | drain/s on | on ÷ off | cost % | within target | enqueue/s on ÷ off | "
                "B p50 ms off | B p50 ms on | on ÷ off | B p99 ms off | B p99 ms on | on ÷ off | spans received (per run) | log file bytes | /metrics scrapes | foreign CPU |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for k in E_:
            rs = groups[k]
            g = lambda side, key: [r.get(side, {}).get(key) for r in rs]
            q = lambda key: [r.get("ratio_on_off", {}).get(key) for r in rs]
            sig = lambda key: [r.get("on", {}).get("a_signals", {}).get(key) for r in rs]
            cost = med([r.get("throughput_cost_pct") for r in rs])
            per_run = med(sig("spans_per_run"))
            verdict = "-" if cost is None else ("yes" if cost <= target else "**no**")
            out.append(f"| {k[2]} | {len(rs)} | {rs[0].get('n')} | {fmt(g('off', 'drain_per_s'))} | {fmt(g('on', 'drain_per_s'))} | "
                       f"{fmt(q('drain_per_s'), 3)} | {fmt([r.get('throughput_cost_pct') for r in rs])} | {verdict} | "
                       f"{fmt(q('enqueue_per_s'), 3)} | {fmt(g('off', 'p50_ms'))} | {fmt(g('on', 'p50_ms'))} | {fmt(q('p50_ms'), 3)} | "
                       f"{fmt(g('off', 'p99_ms'))} | {fmt(g('on', 'p99_ms'))} | {fmt(q('p99_ms'), 3)} | "
                       f"{fmt(sig('spans_received'), 0)}{'' if per_run is None else f' ({per_run:.2f}/run)'} | "
                       f"{fmt(sig('log_file_bytes'), 0)} | {fmt(sig('metrics_scrapes'), 0)} | {fc(rs)} |")

    # D, F, G: Weft only (the peers' harness has no fan-out, memory-at-rest or scale test)
    D = keys(lambda t: t == "D")
    if D:
        out += ["", "## D. Fan-out (Weft): one run of 1 → 1,000 → 1 no-op steps", "",
                "A root step, `--d-width` parallel steps depending on it and one join step depending on all of them; each line is "
                "the median of `--d-rounds` runs one after the other, timed from the start request until the store shows the run "
                "completed. Weft's own timing from `GET /v1/runs/{id}`: end-to-end created → finished, fan root finished → last "
                "parallel step finished, fan-in last parallel step finished → join claimed.", "",
                "With `--d-for-each` the parallel steps are the `--d-width` children of one `for_each` step over the run's input, "
                "all ready at once (the line's `mode` says `for_each`); fan is root finished → last child finished.", "",
                "| variant | runs | steps | rounds/run | wall ms | steps/s | Weft end-to-end ms | fan ms | fan-in ms | attempt queue-wait p50 ms | peak RSS MB | foreign CPU |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for k in D:
            rs = groups[k]
            wt = lambda n: fmt([r.get("weft_timing_ms", {}).get(n) for r in rs])
            out.append(f"| {k[2]} | {len(rs)} | {rs[0].get('steps')} | {rs[0].get('rounds')} | {fmt([r.get('wall_ms') for r in rs])} | "
                       f"{fmt([r.get('steps_per_s') for r in rs])} | {wt('run_end_to_end')} | {wt('fan')} | {wt('fan_in')} | "
                       f"{wt('attempt_queue_wait_p50')} | {fmt([r.get('peak_rss_mb') for r in rs])} | {fc(rs)} |")
    F = keys(lambda t: t == "F")
    if F:
        t = next((r.get("target_mb") for k in F for r in groups[k] if r.get("target_mb")), {"idle": 30, "queued": 150})
        out += ["", f"## F. Memory (Weft): server RSS idle and with N runs queued — target ≤ {t['idle']:g} MB idle, ≤ {t['queued']:g} MB with 100,000 queued", "",
                "VmRSS of the process holding the Weft server (axum, engine loops, store pool; SQLite's page cache too) and the "
                "driver's HTTP client, read from /proc/self/status; Postgres's own processes are not included. Idle: after "
                "start-up and `--f-idle-s` seconds. Queued: 2 s after the last of N one-step runs was started (through the batch "
                "start endpoint, 500 runs a request, unless the variant says otherwise), no worker running. Then a worker drains them: its peak (VmHWM reset before the drain) includes the "
                "in-process SDK worker.", "",
                "| variant | runs | N | idle RSS MB | queued RSS MB | within target (idle, queued) | peak while queueing MB | enqueue/s | drain peak RSS MB | drain/s | process before the server MB | foreign CPU |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for k in F:
            rs = groups[k]
            mi, mq = med([r.get("idle_rss_mb") for r in rs]), med([r.get("queued_rss_mb") for r in rs])
            yes = lambda v, lim: "-" if v is None else ("yes" if v <= lim else "**no**")
            verdict = f"{yes(mi, t['idle'])}, {yes(mq, t['queued'])}" + ("" if rs[0].get("n") == 100000 else " (N ≠ 100,000)")
            out.append(f"| {k[2]} | {len(rs)} | {rs[0].get('n')} | {fmt([r.get('idle_rss_mb') for r in rs])} | "
                       f"{fmt([r.get('queued_rss_mb') for r in rs])} | {verdict} | {fmt([r.get('enqueue_peak_rss_mb') for r in rs])} | "
                       f"{fmt([r.get('enqueue_per_s') for r in rs])} | {fmt([r.get('drain_peak_rss_mb') for r in rs])} | "
                       f"{fmt([r.get('drain_per_s') for r in rs])} | {fmt([r.get('before_server_rss_mb') for r in rs])} | {fc(rs)} |")
        if any(r.get("prior_scenarios_in_process") for k in F for r in groups[k]):
            out += ["", "Some F lines ran after other scenarios in the same process: their memory includes what those left behind."]
    G = keys(lambda t: t == "G")
    if G:
        target = next((r.get("target_ms") for k in G for r in groups[k]), 50)
        out += ["", f"## G. Scale (Weft): list and show queries with 1,000,000 runs in the store — target ≤ {target:g} ms (p99)", "",
                "Runs seeded straight into the server's migrated database: the rows of one completed and one failed real run "
                "copied N times (runs, steps, attempts, history events), 1 % failed, spread over four workflows plus "
                "`bench_scale_rare` (0.1 % of the runs, none failed); Postgres ANALYZEd after the load, as autovacuum would. Each "
                "query is timed as an HTTP round trip through weft-client, one at a time, `--g-reps` times per run after three "
                "unrecorded rounds; random runs for the lookups. Cells are medians [min..max] over runs of each run's p50 and p99.", "",
                "| variant | query | runs | p50 ms | p99 ms | max ms | p99 within target | seeding s |",
                "|---|---|---|---|---|---|---|---|"]
        for k in G:
            rs = groups[k]
            # weft-bench's order (scale.rs QUERIES); the JSON object's keys come sorted
            order = ["list_failed", "list_workflow_failed", "list_rare_completed", "list_rare_failed", "get_run",
                     "get_run_by_trace", "list_trace", "run_events", "list_all"]
            seen = {n for r in rs for n in r.get("queries", {})}
            names = [n for n in order if n in seen] + sorted(seen - set(order))
            for i, name in enumerate(names):
                q = lambda key: [r.get("queries", {}).get(name, {}).get(key) for r in rs]
                p99 = med(q("p99_ms"))
                verdict = "-" if p99 is None else ("yes" if p99 <= target else "**no**")
                desc = next(r["queries"][name].get("query", name) for r in rs if name in r.get("queries", {}))
                out.append(f"| {k[2] if i == 0 else ''} | `{desc}` | {len(rs)} | {fmt(q('p50_ms'), 2)} | "
                           f"{fmt(q('p99_ms'), 2)} | {fmt(q('max_ms'), 2)} | {verdict} | {fmt([r.get('seed_s') for r in rs]) if i == 0 else ''} |")
        if any(r.get("try_sql") for k in G for r in groups[k]):
            out += ["", "Variants `with --g-try-sql: ...` ran that SQL on the seeded database before the queries: a fix being "
                    "tried, not Weft's schema."]

    # ratios of medians: rows = peer variants, columns = Weft variants
    def ratio_table(title, note, wk, pk, cell):
        if not wk or not pk:
            return []
        t = ["", f"### {title}", "", note, "", "| peer variant | " + " | ".join(f"weft {k[2]}" for k in wk) + " |",
             "|---|" + "---|" * len(wk)]
        for p in pk:
            label = " ".join(x for x in (p[1], p[0] if p[0] not in ("A", "C") else "", p[2]) if x)
            t.append(f"| {label} | " +
                     " | ".join(cell(groups[w], groups[p]) for w in wk) + " |")
        return t

    m = lambda rs, f: med([f(r) for r in rs])
    out += ["", "## Weft ÷ peer (ratios of medians)"]
    out += ratio_table("A: throughput", "enqueue/s and drain/s, Weft over peer: > 1 means Weft is faster.",
                       [k for k in A if k[1] == "weft"], [k for k in A if k[1] != "weft"],
                       lambda w, p: f"enqueue {ratio(m(w, lambda r: r['enqueue_per_s']), m(p, lambda r: r['enqueue_per_s']))}, "
                                    f"drain {ratio(m(w, lambda r: r.get('drain_per_s')), m(p, lambda r: r.get('drain_per_s')))}")
    out += ratio_table("B: latency", "p50 and p99, Weft over peer: < 1 means Weft is faster.",
                       [k for k in B if k[1] == "weft"], [k for k in B if k[1] != "weft"],
                       lambda w, p: f"p50 {ratio(m(w, lambda r: r['p50_ms']), m(p, lambda r: r['p50_ms']))}, "
                                    f"p99 {ratio(m(w, lambda r: r['p99_ms']), m(p, lambda r: r['p99_ms']))}")
    out += ratio_table("C: workflows", "wf/s (> 1: Weft faster) and sequential p50 (< 1: Weft faster), Weft over peer.",
                       [k for k in C if k[1] == "weft"], [k for k in C if k[1] != "weft"],
                       lambda w, p: f"wf/s {ratio(m(w, lambda r: r.get('wf_per_s')), m(p, lambda r: r.get('wf_per_s')))}, "
                                    f"p50 {ratio(m(w, lambda r: r['lat']['p50_ms']), m(p, lambda r: r['lat']['p50_ms']))}")
    if not any(k[1] != "weft" for k in groups):
        out += ["", "(no peer results in this session: no ratios)"]

    out += ["", "## Machine", "",
            f"- CPU: {E('M_CPU')}, {E('M_NPROC')} cores (nproc)", f"- Memory: {E('M_MEM')}", f"- Kernel: {E('M_KERNEL')}", "",
            "## Versions", "",
            f"- Weft: git {E('V_WEFT')} (at the start of the session)", f"- {E('V_RUSTC')}", f"- {E('V_PG')}", f"- Node {E('V_NODE')}, {E('V_PY')}"]
    pg = next((r["db"] for r in rows if r.get("peer") == "weft" and r.get("backend") == "postgres" and isinstance(r.get("db"), dict)), None)
    if pg:
        out.append(f"- Weft's Postgres: " + ", ".join(f"{k}={v}" for k, v in pg.items()))
    peers_v = [l.strip() for l in E("V_PEERS", "").splitlines() if l.strip()]
    if peers_v:
        out.append("- Peers: " + ", ".join(peers_v))
    out += ["", "## Reproduce", "", "    " + E("COMMAND", "scripts/bench-compare.sh"), "",
            f"Raw lines: {E('WEFT_JSONL')} (Weft) and {E('PEERS_DIR')}/*/results/*.jsonl (peers, ts >= {E('SESSION_TS')}). "
            "One Weft scenario alone: `target/release/weft-bench a --backend postgres` (see `--help`).", ""]
    open(E("BENCHMARKS", "BENCHMARKS.md"), "w").write("\n".join(out))


if __name__ == "__main__":
    main()
