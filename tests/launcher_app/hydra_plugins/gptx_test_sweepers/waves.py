"""A stand-in adaptive sweeper: it launches waves of jobs with overrides of its own.

    python tests/launcher_app/app.py -m hydra.sweeper._target_=hydra_plugins.gptx_test_sweepers.waves.WaveSweeper

runs WAVES one after another: one arm (`mode`) per wave at first, then two seeds of a new one. Each job has the
command line's overrides, a key the wave sets replacing the command line's value.
"""

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper

WAVES = (
    [["mode=ok", "init_seed=4"]],
    [["mode=fine", "init_seed=4"]],
    [["mode=new", "init_seed=5"], ["mode=new", "init_seed=6"]],
)


class WaveSweeper(Sweeper):
    """Launches WAVES one after another, each wave one call of the configured launcher."""

    def __init__(self, **params: Any) -> None:
        self.launcher = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        returns, idx = [], 0
        for wave in WAVES:
            batch = []
            for own in wave:
                keys = {line.split("=", 1)[0] for line in own}
                batch.append([*(a for a in arguments if a.split("=", 1)[0] not in keys), *own])
            returns.append(self.launcher.launch(batch, initial_job_idx=idx))
            idx += len(batch)
        return returns
