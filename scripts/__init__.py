"""Developer scripts: `python -m scripts.run_local` is `make run`."""
