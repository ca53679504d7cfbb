"""The live bench's parts; ``bench/live_throughput.py`` runs them and its docstring defines them.

One module per concept: `scenario` (the fleet's messages, the expected ids, filling the topic),
`ceiling` (the least work a consumer must do, PSO's parse cost), `tail` (reading outputs),
`procstat` (CPU and memory from ``/proc``), `worker` (a worker subprocess from the bench: start,
watch, stop), `worker_side` (that subprocess from the inside), `naive` (the Faust peer),
`seals` (checkpoint seal timing and bursts), `figures` (percentiles and per-sample costs),
`latency` (the paced phase's latencies), `memory` (the memory phase), `run` (one run, in order,
and its JSON). The package is imported with ``bench/`` on ``sys.path``, as running a script
from ``bench/`` puts it there.
"""
