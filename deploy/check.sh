#!/usr/bin/env bash
# Checks the deploy assets: the Prometheus rules and their unit tests, the
# example Prometheus config, the Grafana dashboard, and that every metric they
# use is in the catalogue of SPEC.md section 4.
#
#   deploy/check.sh            (from anywhere; needs promtool and python3)
#
# promtool comes with Debian's `prometheus` package
# (apt-get install -y prometheus) or a Prometheus release tarball.
# Prints one line per check and a last line `N passed, M failed`; exits
# non-zero if any check failed.
set -uo pipefail
cd "$(dirname "$0")/.."

RULES=deploy/prometheus/weft-alerts.yml
TESTS=deploy/prometheus/weft-alerts.test.yml
CONFIG=deploy/prometheus/prometheus.yml
DASHBOARD=deploy/grafana/weft-dashboard.json

# The metric catalogue of SPEC.md section 4. Keep in step with the spec.
COUNTERS="weft_runs_started_total weft_runs_finished_total weft_step_attempts_total
weft_step_retries_total weft_leases_expired_total weft_worker_polls_total
weft_http_requests_total"
HISTOGRAMS="weft_run_duration_seconds weft_step_duration_seconds
weft_step_queue_wait_seconds weft_step_handler_seconds
weft_worker_poll_duration_seconds weft_http_request_duration_seconds
weft_db_query_duration_seconds"
GAUGES="weft_runs_active weft_steps_ready weft_steps_running
weft_oldest_ready_step_age_seconds weft_workers_active weft_runs_stalled
weft_db_pool_connections weft_build_info"
export COUNTERS HISTOGRAMS GAUGES

passed=0
failed=0
n=0
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# check NAME COMMAND...: runs COMMAND, records ok / not ok with its output.
check() {
  local name=$1
  shift
  n=$((n + 1))
  if "$@" >"$TMP/out" 2>&1; then
    passed=$((passed + 1))
    echo "ok $n - $name"
  else
    failed=$((failed + 1))
    echo "not ok $n - $name"
    sed 's/^/    /' "$TMP/out"
  fi
}

need_promtool() {
  if ! command -v promtool >/dev/null 2>&1; then
    echo "promtool not found: apt-get install -y prometheus (Debian) or a Prometheus release"
    return 1
  fi
}

promtool_check_rules() { need_promtool && promtool check rules "$RULES"; }
promtool_test_rules() { need_promtool && promtool test rules "$TESTS"; }
promtool_check_config() { need_promtool && promtool check config "$CONFIG"; }

dashboard_json() { python3 -m json.tool "$DASHBOARD" >/dev/null; }

# Every PromQL expression of the dashboard parses: written out as alerting
# rules (Grafana's variables replaced by values) and given to promtool.
dashboard_promql() {
  need_promtool || return 1
  python3 - "$DASHBOARD" >"$TMP/dashboard-rules.yml" <<'EOF' || return 1
import json, re, sys
dash = json.load(open(sys.argv[1]))
exprs = []
def walk(panels):
    for p in panels:
        for t in p.get("targets", []):
            if t.get("expr"):
                exprs.append((p.get("title", "?"), t["expr"]))
        walk(p.get("panels", []))
walk(dash.get("panels", []))
if not exprs:
    sys.exit("no PromQL expression found in the dashboard")
print("groups:\n  - name: dashboard\n    rules:")
for i, (title, e) in enumerate(exprs):
    e = e.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    e = re.sub(r"\$\{?\w+\}?", ".*", e)
    print(f"      - alert: panel_{i}\n        expr: {json.dumps(e)}")
    print(f"        annotations: {{title: {json.dumps(title)}}}")
EOF
  promtool check rules "$TMP/dashboard-rules.yml"
}

# The dashboard's shape: templated datasource, workflow and queue variables,
# every panel on that datasource and with a unit.
dashboard_shape() {
  python3 - "$DASHBOARD" <<'EOF'
import json, sys
dash = json.load(open(sys.argv[1]))
errors = []
if dash.get("schemaVersion", 0) < 39:
    errors.append(f"schemaVersion {dash.get('schemaVersion')} < 39")
if not any(i.get("name") == "DS_PROMETHEUS" and i.get("pluginId") == "prometheus" for i in dash.get("__inputs", [])):
    errors.append("no DS_PROMETHEUS datasource input")
variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
if variables.get("datasource", {}).get("type") != "datasource":
    errors.append("no `datasource` variable of type datasource")
for name in ("workflow", "queue"):
    v = variables.get(name)
    if not v or "label_values(" not in json.dumps(v.get("query")):
        errors.append(f"no `{name}` variable from label_values")
titles = set()
for p in dash.get("panels", []):
    if p.get("type") == "row":
        continue
    title = p.get("title", "?")
    if title in titles:
        errors.append(f"duplicate panel title {title!r}")
    titles.add(title)
    if not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
        errors.append(f"panel {title!r} has no unit")
    for ds in [p.get("datasource")] + [t.get("datasource") for t in p.get("targets", [])]:
        if not ds or ds.get("uid") != "${datasource}":
            errors.append(f"panel {title!r} does not use the ${{datasource}} variable")
            break
    if not p.get("targets"):
        errors.append(f"panel {title!r} has no query")
print(f"{len(titles)} panels")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
EOF
}

# Every weft_* name in FILES is a catalogue metric (histograms also as their
# _bucket, _sum and _count series).
catalogue_names() {
  python3 - "$@" <<'EOF'
import os, re, sys
allowed = set(os.environ["COUNTERS"].split()) | set(os.environ["GAUGES"].split())
for h in os.environ["HISTOGRAMS"].split():
    allowed |= {h, h + "_bucket", h + "_sum", h + "_count"}
unknown = {}
used = set()
for path in sys.argv[1:]:
    for name in re.findall(r"\bweft_[a-z0-9_]+", open(path).read()):
        used.add(name)
        if name not in allowed:
            unknown.setdefault(name, set()).add(path)
print(f"{len(used)} metric names used in {', '.join(sys.argv[1:])}")
for name, paths in sorted(unknown.items()):
    print(f"unknown metric {name} (not in SPEC.md section 4) in {', '.join(sorted(paths))}")
sys.exit(1 if unknown else 0)
EOF
}
catalogue_dashboard() { catalogue_names "$DASHBOARD"; }
catalogue_rules() { catalogue_names "$RULES" "$TESTS"; }

# Every alert carries a severity label and the summary, description and
# runbook annotations, and its runbook names a `weft` command.
rules_metadata() {
  python3 - "$RULES" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
blocks = re.split(r"(?m)^\s*- alert:\s*", text)[1:]
if not blocks:
    sys.exit("no alert found")
errors = []
for block in blocks:
    block = re.split(r"(?m)^\s*- (?:name|record):", block)[0]
    name = block.split()[0]
    for key in ("severity", "summary", "description", "runbook"):
        if not re.search(rf"(?m)^\s+{key}:\s*\S", block):
            errors.append(f"{name}: no {key}")
    m = re.search(r"(?m)^\s+runbook:(.*)$", block)
    if m and "`weft " not in m.group(1):
        errors.append(f"{name}: runbook names no `weft ...` command")
print(f"{len(blocks)} alerts")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
EOF
}

# Every alert of the rules file has, in the unit tests, a case where it fires
# (with expected annotations) and a case where it does not.
rules_coverage() {
  python3 - "$RULES" "$TESTS" <<'EOF'
import re, sys
alerts = re.findall(r"(?m)^\s*- alert:\s*(\S+)", open(sys.argv[1]).read())
lines = open(sys.argv[2]).read().splitlines()
fires, quiet = set(), set()
for i, line in enumerate(lines):
    m = re.match(r"^\s*alertname:\s*(\S+)\s*$", line)
    if not m:
        continue
    # The case runs to the next eval_time / alertname / test group.
    case = []
    for nxt in lines[i + 1:]:
        if re.match(r"^\s*(- eval_time:|alertname:|- interval:|- input_series:)", nxt):
            break
        case.append(nxt)
    body = "\n".join(case)
    if re.search(r"(?m)^\s*exp_alerts:\s*\[\s*\]", body) or not re.search(r"exp_labels:", body):
        quiet.add(m.group(1))
    elif re.search(r"exp_annotations:", body):
        fires.add(m.group(1))
errors = []
for a in alerts:
    if a not in fires:
        errors.append(f"{a}: no test case where it fires with expected annotations")
    if a not in quiet:
        errors.append(f"{a}: no test case where it does not fire")
for a in sorted((fires | quiet) - set(alerts)):
    errors.append(f"{a}: tested but not in the rules file")
print(f"{len(alerts)} alerts, {len(fires)} with a firing case, {len(quiet)} with a quiet case")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
EOF
}

check "promtool check rules $RULES" promtool_check_rules
check "promtool test rules $TESTS" promtool_test_rules
check "promtool check config $CONFIG" promtool_check_config
check "every alert has severity, summary, description and a runbook naming a weft command" rules_metadata
check "every alert has a firing and a non-firing unit test" rules_coverage
check "metric names in the rules and tests are in the SPEC section 4 catalogue" catalogue_rules
check "$DASHBOARD is valid JSON (python3 -m json.tool)" dashboard_json
check "dashboard has the datasource, workflow and queue variables and a unit on every panel" dashboard_shape
check "dashboard PromQL parses (promtool)" dashboard_promql
check "metric names in the dashboard are in the SPEC section 4 catalogue" catalogue_dashboard

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
