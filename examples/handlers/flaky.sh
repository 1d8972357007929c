#!/bin/sh
# Fails on its first two attempts, then succeeds. Exit status 100 would mean
# "permanent failure: do not retry"; any other non-zero status is retried.
cat > /dev/null
if [ "$WEFT_ATTEMPT" -lt 3 ]; then
  echo "service unavailable (attempt $WEFT_ATTEMPT)" >&2
  exit 1
fi
echo "{\"ok\": true, \"attempt\": $WEFT_ATTEMPT}"
