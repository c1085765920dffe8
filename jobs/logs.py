"""Driver logging: our packages at INFO, the chatty libraries (exporters, quantizer) quiet."""

from __future__ import annotations

import logging
import os


def configure_logging(level: str | None = None) -> None:
    level = level or os.environ.get("LEANSCORE_LOG_LEVEL", "INFO")
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING
    )
    for name in ("compression", "udfs", "jobs"):
        logging.getLogger(name).setLevel(level)
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "py4j"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
