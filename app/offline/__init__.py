"""The offline driver: backtests over recorded telemetry (the same engine as live), their
report, and the single-series tools.
"""
