"""The opd stage: `stage.py` runs `trainer.py` (OPDTrainer) with `teachers.py` (local or served scoring); `config.py`."""
