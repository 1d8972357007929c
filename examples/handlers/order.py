"""The order saga's handlers: `order.py <action>` reads the task's JSON input
on stdin and prints its output. Each action appends a line to $SAGA_LOG when
set (what a real handler would do to a database or an API), and `ship`
always fails, so the saga compensates."""

import json
import os
import sys

action = sys.argv[1]
task = json.load(sys.stdin)
order = task["input"].get("order_id", "unknown")


def record(line):
    path = os.environ.get("SAGA_LOG")
    if path:
        with open(path, "a") as log:
            log.write(line + "\n")
    print(line, file=sys.stderr)


if action == "ship":
    print(f"carrier rejected order {order}", file=sys.stderr)
    sys.exit(100)  # permanent: do not retry
elif action == "charge":
    record(f"charge {order} {task['input'].get('amount', 0)}")
    print(json.dumps({"payment_id": f"pay-{order}"}))
elif action == "reserve":
    record(f"reserve {order}")
    print(json.dumps({"reservation_id": f"res-{order}"}))
else:
    # An undo: its input has the step, that step's output and the failure.
    record(f"{action} {order}")
    print(json.dumps({"undone": task["step"], "of": task["output"]}))
