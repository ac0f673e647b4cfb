"""The training stages: sft (sft.py), kd (kd.py + kd_trainer.py) and opd (opd.py + opd_trainer.py), each with
its recipe class (config.py, kd_config.py, opd_config.py) beside it, as TRL keeps *_config.py beside *_trainer.py."""
