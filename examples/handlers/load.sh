#!/bin/sh
# Pretends to load the rows; prints how many.
python3 -c 'import json,sys; t=json.load(sys.stdin); print(json.dumps({"loaded": len(t["steps"]["transform"]["rows"])}))'
