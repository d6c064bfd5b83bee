"""HTTP routes of the training server. Routes only translate HTTP to calls on the stores and
the runner (server/jobs.py, server/bundles.py, server/worker.py)."""
