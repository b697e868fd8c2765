"""Training: the Ray driver (launch), the per-worker function (worker), the step loop (loop)."""
