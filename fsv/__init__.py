"""fsv: measure how in-context learning and fine-tuning relate as language models grow."""

__version__ = "0.1.0"
