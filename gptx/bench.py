"""`python -m gptx.bench`, the command's first name; the code lives in gptx.tools.bench."""

import sys

from gptx.tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
