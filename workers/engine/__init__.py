"""The ML engine: generation, losses, training, evaluation. Knows nothing of Django.

Modules that import torch are imported lazily by their callers; this package itself stays light.
"""
