"""The worker's ops surface: health (lag, rates, stalls) as plain state that the HTTP API and
Prometheus metrics will read.
"""
