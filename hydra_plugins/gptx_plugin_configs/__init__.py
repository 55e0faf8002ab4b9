"""Puts installed gptx plugins' config folders on Hydra's search path (entry-point group `gptx.configs`).

A plugin package that ships interventions (`intervention/swiglu.yaml` selecting its `model.mlp=swiglu`)
registers the folder holding them: `[project.entry-points."gptx.configs"] NAME = "package:CONF_DIR"`, a
string path. Installing the package is then enough for `intervention=swiglu`; a run folder still records
each intervention file it used. A folder that is not there is skipped with a warning, never fatal.
"""

import logging
from importlib.metadata import entry_points
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

GROUP = "gptx.configs"


def plugin_config_dirs() -> list[tuple[str, Path]]:
    """(entry name, folder) of every installed plugin's config folder that exists, in name order."""
    found = []
    for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name):
        try:
            folder = Path(str(ep.load()))
        except Exception as err:  # a broken plugin must not stop gptx from composing its own configs
            logging.getLogger("gptx").warning("config folder of plugin %s (%s) failed to load: %s",
                                              ep.name, ep.value, err)
            continue
        if folder.is_dir():
            found.append((ep.name, folder.resolve()))
        else:
            logging.getLogger("gptx").warning("plugin %s names config folder %s, which is not there", ep.name,
                                              folder)
    return found


class GptxPluginConfigSearchPath(SearchPathPlugin):
    """Appends each installed plugin's config folder after gptx's own configs."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for name, folder in plugin_config_dirs():
            search_path.append(provider=f"gptx-plugin-{name}", path=f"file://{folder}")
