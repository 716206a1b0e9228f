#!/bin/sh
# Writes part of its files, then fails: wua must install none of them.
mkdir -p "$DESTDIR/opt/monitor"
echo "partial" > "$DESTDIR/opt/monitor/agent"
echo "install.sh: required service 'collector' not found" >&2
exit 1
