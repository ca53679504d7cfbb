"""`pso bench closed-loop` offline: ``trace`` (a telemetry file as natural demand), ``bench``
(scenarios and traces run through every policy; the table), ``report`` (the HTML report)."""
