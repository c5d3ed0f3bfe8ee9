"""capindex: offline image captioning and keyword search for photo folders."""

__version__ = "0.1.0"
