#!/bin/sh
# Runs one test under a time limit (AP_TEST_TIMEOUT seconds, default 600)
# so a hang becomes a failure instead of a stuck suite.
exec timeout -k 10 "${AP_TEST_TIMEOUT:-600}" "$@"
