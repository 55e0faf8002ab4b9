"""`python -m gptx.export`, the command's first name; the code lives in gptx.tools.export."""

import sys

from gptx.tools.export import main

if __name__ == "__main__":
    sys.exit(main())
