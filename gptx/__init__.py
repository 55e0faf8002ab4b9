"""gptx: is this training change real, or is it in the noise?"""

__version__ = "0.1.0"
