"""A stand-in adaptive sweeper: it launches waves of one job each, with overrides of its own.

    python tests/launcher_app/app.py -m hydra.sweeper._target_=hydra_plugins.gptx_test_sweepers.waves.WaveSweeper

runs `mode=ok init_seed=4`, then `mode=fine init_seed=4`: keys the command line never set, one arm per wave.
"""

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper

WAVES = (["mode=ok", "init_seed=4"], ["mode=fine", "init_seed=4"])


class WaveSweeper(Sweeper):
    """Launches WAVES one after another, each job with the command line's overrides and its wave's."""

    def __init__(self, **params: Any) -> None:
        self.launcher = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        returns = []
        for idx, wave in enumerate(WAVES):
            returns.append(self.launcher.launch([[*arguments, *wave]], initial_job_idx=idx))
        return returns
