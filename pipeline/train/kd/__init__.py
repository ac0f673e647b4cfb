"""The kd stage: `stage.py` runs `trainer.py` (KDTrainer) over `data.py` (stored teacher top-k aligned to tokens); `config.py`."""
