"""Puts this machine's own gptx config folder on Hydra's search path, when it exists.

`$GPTX_CONFIG_DIR` (default `~/.config/gptx`) may hold `local/default.yaml`, which gptx's primary
config reads as `optional local: default`: a cluster's launcher, partition, account or `output_root`,
set once per machine instead of on every command. A search-path plugin rather than `hydra.searchpath`,
so a machine without that folder gets no warning about it.
"""

import os
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

ENV = "GPTX_CONFIG_DIR"


def local_config_dir() -> Path:
    """The folder of this machine's gptx configs: $GPTX_CONFIG_DIR, else ~/.config/gptx."""
    return Path(os.environ.get(ENV) or Path.home() / ".config" / "gptx").expanduser()


class GptxLocalConfigSearchPath(SearchPathPlugin):
    """Appends the local config folder (only if it exists) after every other config source."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        folder = local_config_dir()
        if folder.is_dir():
            search_path.append(provider="gptx-local", path=f"file://{folder.resolve()}")
