"""pushauth-loadtest: open-loop load tests of the broker with real devices and a real RP.

Modules: cluster (Redis and broker processes), schedule (arrival times), stats
(HdrHistogram recording and merging), device (a simulated authenticator on one
WebSocket), rp (the relying party's two HTTP calls and verification), worker (one
load generator process), monitor (broker CPU and memory), runs (the three modes),
report (table, JSON, PNG), cli.
"""
