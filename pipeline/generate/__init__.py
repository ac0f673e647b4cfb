"""The generate stage: stage.py (the run), config.py, work.py (plan, resume, fingerprint), engines."""
