"""`python -m gptx.evaluate`, the command's first name; the code lives in gptx.tools.evaluate."""

import sys

from gptx.tools.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
