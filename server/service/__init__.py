"""The HTTP service: app, routes, job store, job runner, bundle store, metrics, settings.
Never imports torch; a job runs in its own worker process (runner.py)."""
