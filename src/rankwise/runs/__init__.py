"""Run directories: the files a run writes and how (rundir.py: atomic writes, the run's lock and records), what
state a directory holds (state.py: new, running, finished, conflict, ...), and run names (naming.py)."""
