"""The noise report's analysis, free of torch: reading results, the design model, text, figures, simulation."""


def analyze_table(table, baseline: str = "baseline", metric: str = "test_loss", seed: int = 0,
                  min_effect: float = 0.01) -> dict:
    """The summary `gptx.analyze` writes (summary.json), from a pandas DataFrame, a list of dicts or a table file."""
    from gptx.analysis.table import analyze_table as from_table  # imported on use: no cost to other modules

    return from_table(table, baseline, metric, seed, min_effect)
