#!/bin/sh
# Reads the task on stdin, logs to stderr, prints the output JSON on stdout.
echo "extracting for run $WEFT_RUN_ID (trace $WEFT_TRACE_ID)" >&2
cat > /dev/null
echo '{"rows": [1, 2, 3, 4]}'
