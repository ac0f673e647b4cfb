"""The generate stage: stage.py (the run), config.py, plan.py (what to generate, resume, fingerprint), engines.py
(the engine for a backend: engine_vllm.py, engine_openai.py, engine_hf.py, behind engine_api.py), progress.py."""
