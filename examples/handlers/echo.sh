#!/bin/sh
# Echoes which step ran; ignores its input.
cat > /dev/null
echo "{\"step\": \"$WEFT_STEP\", \"attempt\": $WEFT_ATTEMPT}"
