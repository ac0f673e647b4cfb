"""The training stages, one package each with its recipe class beside its stage (as TRL keeps `*_config.py` beside
`*_trainer.py`): `sft/` (SFTTrainer), `kd/` (logit-level KD inside SFTTrainer), `opd/` (on-policy distillation on
TRL's DistillationTrainer). What they share: `launch.py` (train here, not at all, or under `accelerate launch`),
`data.py` (the data mixture), `models.py` (students, adapters, merging), `losses.py` (pure loss functions),
`heads.py` (the output layer read outside a forward), `template_check.py` (chat template and EOS pre-flight)."""
