"""Stand-in sweepers for the launcher tests (Hydra finds plugins only under hydra_plugins)."""
