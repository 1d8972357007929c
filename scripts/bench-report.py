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
    out += [f"Session started {E('SESSION_TS')}; {E('REPS')} interleaved rounds (every Weft scenario, then one round of the peers). "
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
            "flight for `enqueue=16 concurrent requests`), then starts the worker and times the drain from the first "
            "handler call until the store shows every run completed. B and C observe completion by polling "
            "`GET /v1/runs/{id}` every 5 ms. Weft's peak RSS is the whole process (server + worker + driver); the peers' "
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
                "inside the engine; the rest of the observed latency is the HTTP start call and the 5 ms completion poll. "
                "`queue_wait` ready → claimed, `dispatch` claimed → handler start, `ingest` result received → committed, "
                "`total` claimed → committed.", "",
                "| test | variant | observed p50 | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
        for k in wt:
            rs = [r for r in groups[k] if "weft_timing_p50_ms" in r]
            obs = fmt([r["p50_ms"] if k[0] != "C" else r["lat"]["p50_ms"] for r in rs])
            out.append(f"| {k[0]} | {k[2]} | {obs} | " + " | ".join(fmt([r["weft_timing_p50_ms"].get(n) for r in rs]) for n in names) + " |")

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
