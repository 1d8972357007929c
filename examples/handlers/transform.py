"""Doubles the rows extracted upstream: reads {"input", "steps"} on stdin."""
import json
import sys

task = json.load(sys.stdin)
rows = task["steps"]["extract"]["rows"]
print(f"transforming {len(rows)} rows", file=sys.stderr)
json.dump({"rows": [r * 2 for r in rows]}, sys.stdout)
