"""What a training run prints: what a person needs on the console; the full detail stays in train.log.

transformers logs through its own handler to stderr; here its records go through Hydra's handlers instead
(the console and train.log), and the console drops the messages that appear on every run and mean nothing
to act on: the load report of a freshly initialised task head and of the pre-training parts it leaves
unused (expected when fine-tuning), the "mtime may not be reliable" note. Progress bars (datasets' maps,
transformers' "Loading weights") are drawn only when both stdout and stderr are a terminal: redirected
into a file they leave escape codes and interleave with the metric lines.
"""

from __future__ import annotations

import logging
import re
import sys

HEAD_PREFIXES = ("classifier.", "qa_outputs.", "pre_classifier.", "score.", "head.")  # the new task heads
# Parts of a pre-training checkpoint that a fine-tuning head leaves unused: the pooler (question answering
# reads token states), the masked-LM and next-sentence heads (bert-base-uncased, RoBERTa's lm_head).
UNUSED_PREFIXES = ("pooler.", "cls.predictions.", "cls.seq_relationship.", "lm_head.")
ROUTINE = ("mtime may not be reliable",)


def routine(message: str) -> bool:
    """A message that appears on every run and asks for nothing: among them transformers' load report when
    all it lists is a new task head (MISSING) and pre-training parts the head does not use (UNEXPECTED)."""
    if any(text in message for text in ROUTINE):
        return True
    if "LOAD REPORT" in message:
        rows = [line for line in message.splitlines() if "|" in line and not line.lstrip().startswith(("Key", "-"))]
        keys = [re.split(r"\s*\|\s*", row.strip()) for row in rows]
        return bool(keys) and all(expected_difference(k[0], k[1] if len(k) > 1 else "") for k in keys if k[0])
    return False


def expected_difference(key: str, status: str) -> bool:
    """A load-report row that fine-tuning a pre-trained encoder always produces."""
    return (status == "MISSING" and key.startswith(HEAD_PREFIXES)) or (
        status == "UNEXPECTED" and key.startswith(UNUSED_PREFIXES)
    )


# A log record with this attribute set (``extra={FILE_ONLY: True}``) goes to train.log, not the console:
# text the console already shows, printed as it is.
FILE_ONLY = "ssaf_file_only"


class ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, FILE_ONLY, False) and not routine(record.getMessage())


def interactive() -> bool:
    """Both output streams are a terminal: with either redirected (``> train.out``, ``| tee``, nohup, a job
    scheduler), progress bars would land in a file or between the lines of one."""
    return sys.stderr.isatty() and sys.stdout.isatty()


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
