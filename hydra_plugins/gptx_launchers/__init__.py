"""gptx's Hydra launchers: `hydra/launcher=local_gpus` (a GPU pool on this machine) and the SLURM presets.

Hydra finds plugins by importing every module under the top-level `hydra_plugins` namespace package,
so this package has no `hydra_plugins/__init__.py` above it and imports nothing heavy.
"""
