"""`python -m gptx.compare`, the command's first name; the code lives in gptx.tools.compare."""

import sys

from gptx.tools.compare import main

if __name__ == "__main__":
    sys.exit(main())
