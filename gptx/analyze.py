"""The noise report: is each intervention real, or is it in the noise?

    python -m gptx.analyze SWEEP_DIR [PATH ...] [--baseline baseline] [--metric test_loss] [--out DIR]

The command around `gptx.analysis`, which holds the reading, the statistics, the text and the figures.
"""

import sys

from gptx.analysis.summary import main, write_report  # noqa: F401 - the command's public names

if __name__ == "__main__":
    sys.exit(main())
