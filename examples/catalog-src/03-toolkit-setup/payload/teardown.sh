#!/bin/sh
# Runs before wua removes the toolkit's files; nothing to stop in this demo.
echo "toolkit teardown for $WUA_UPDATE_ID"
