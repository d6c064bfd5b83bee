"""HTTP routes of the training server. Routes only translate HTTP to calls on the stores and
the runner (server/service/jobs.py, bundles.py, runner.py)."""
