"""The noise report's analysis, free of torch: reading results, the design model, text, figures, simulation."""
