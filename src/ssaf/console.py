"""What a training run prints: what a person needs on the console; the full detail stays in train.log.

transformers logs through its own handler to stderr; here its records go through Hydra's handlers instead
(the console and train.log), and the console drops the messages that appear on every run and mean nothing
to act on: the load report of a freshly initialised task head (expected when fine-tuning), the
"mtime may not be reliable" note. Progress bars are drawn only on a terminal: redirected into a file they
leave escape codes and interleave with the metric lines.
"""

from __future__ import annotations

import logging
import re
import sys

HEAD_PREFIXES = ("classifier.", "qa_outputs.", "pre_classifier.", "score.", "head.")  # the new task heads
ROUTINE = ("mtime may not be reliable",)


def routine(message: str) -> bool:
    """A message that appears on every run and asks for nothing."""
    if any(text in message for text in ROUTINE):
        return True
    if "LOAD REPORT" in message:
        rows = [line for line in message.splitlines() if "|" in line and not line.lstrip().startswith(("Key", "-"))]
        keys = [re.split(r"\s*\|\s*", row.strip()) for row in rows]
        return bool(keys) and all(k[0].startswith(HEAD_PREFIXES) and "MISSING" in k[1:2] for k in keys if k[0])
    return False


class ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not routine(record.getMessage())


def interactive() -> bool:
    return sys.stderr.isatty()


def quiet_libraries() -> None:
    """Route transformers' logging through the root handlers and filter the routine messages on the console."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    hf_logging.set_verbosity_warning()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.addFilter(ConsoleFilter())
    if not interactive():
        import datasets

        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()
