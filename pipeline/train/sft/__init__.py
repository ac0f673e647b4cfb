"""The sft stage: `stage.py` runs it, `config.py` is its recipe class (also the base of kd's)."""
