"""gptx's Hydra sweepers: `hydra/sweeper=adaptive` (seed waves until every arm is decided).

Found by Hydra's plugin scan of the `hydra_plugins` namespace package; imports nothing heavy.
"""
