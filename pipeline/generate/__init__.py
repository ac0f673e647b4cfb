"""The generate stage: stage.py (the run, top to bottom), config.py, plan.py (what to generate), resume.py (what
is already written, the fingerprint), commit.py (the single writer), engines.py (the engine for a backend:
engine_vllm.py, engine_openai.py, engine_hf.py, engine_ray.py, behind engine_api.py), progress.py."""
