"""Driver logging: the CLI speaks through its own console, so leanscore's loggers stay at
WARNING unless ``LEANSCORE_LOG_LEVEL`` (e.g. INFO, DEBUG) asks for more; the chatty libraries
(exporters, quantizer, py4j) are quiet either way. A failing command then still prints one line."""

from __future__ import annotations

import logging
import os


def configure_logging(level: str | None = None) -> None:
    level = level or os.environ.get("LEANSCORE_LOG_LEVEL", "WARNING")
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING
    )
    logging.getLogger("leanscore").setLevel(level.upper())
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "py4j"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
