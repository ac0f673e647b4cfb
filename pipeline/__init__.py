"""reasoning-distill: distil a teacher's chain-of-thought into small open students."""

__version__ = "0.1.0"
