"""`python -m gptx.generate`, the command's first name; the code lives in gptx.tools.generate."""

import sys

from gptx.tools.generate import main

if __name__ == "__main__":
    sys.exit(main())
