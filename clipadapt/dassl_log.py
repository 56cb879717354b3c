"""Reading Dassl's log.txt: the one reader, for the run registry (is a plain CoOp run finished, what
did the final test print) and for the tables (CoOp's parse_test_res rule)."""
import re
from typing import List, Optional

LOG_NAME = "log.txt"
FINISH_TRAINING = "Finish training"  # Dassl >= 0.6.1; older forks print "Finished training"
EVAL_START = "Evaluate on the *test* set"
TEST_RESULT = "=> result"
METRIC_LINE = re.compile(r"^\* (\w+): ([-+\d.eE]+)%$")  # a stripped "* accuracy: 92.8%"


class ResultError(Exception):
    """A result could not be read; the message says where and why."""


def read_lines(path) -> List[str]:
    with open(path, errors="replace") as f:
        return [line.strip() for line in f]


def result_regex(keyword: str) -> "re.Pattern":
    """CoOp's pattern for a metric line such as ``* accuracy: 92.8%``."""
    return re.compile(rf"\* {re.escape(keyword)}: ([\.\deE+-]+)%")


def looks_eval_only(lines: List[str]) -> bool:
    """An eval-only run prints a result but never trains (a crashed training run has 'epoch [' lines)."""
    trained = FINISH_TRAINING in lines or any(line.startswith("epoch [") for line in lines)
    return TEST_RESULT in lines and ("eval_only: True" in lines or not trained)


def choose_end_signal(lines: List[str]) -> str:
    """'Finish training' for training logs; '=> result' for eval-only logs, which lack it."""
    return TEST_RESULT if looks_eval_only(lines) else FINISH_TRAINING


def parse_log(path, keywords=("accuracy",), end_signal: Optional[str] = None):
    """CoOp's rule: ``* keyword: X%`` values printed after the line ``end_signal``; the last match wins.

    ``end_signal=None`` picks it from the log (see ``choose_end_signal``).
    Returns ``({keyword: value}, end_signal_used)``; raises ResultError if a keyword is missing.
    """
    lines = read_lines(path)
    if end_signal is None:
        end_signal = choose_end_signal(lines)
    regexes = {keyword: result_regex(keyword) for keyword in keywords}
    found = {}
    reached = False
    for line in lines:
        reached = reached or line == end_signal
        if not reached:
            continue
        for keyword, regex in regexes.items():
            match = regex.search(line)
            if match:
                found[keyword] = float(match.group(1))
    missing = [keyword for keyword in keywords if keyword not in found]
    if missing:
        raise ResultError(explain_missing_result(path, lines, missing, end_signal))
    return found, end_signal


def explain_missing_result(path, lines: List[str], missing: List[str], end_signal: str) -> str:
    wanted = ", ".join(f"'* {keyword}: <number>%'" for keyword in missing)
    message = f"no result in {path}: looked for {wanted} after the line '{end_signal}'"
    if end_signal not in lines:
        if end_signal == FINISH_TRAINING and looks_eval_only(lines):
            return message + (f", but the log has '{TEST_RESULT}' and no '{FINISH_TRAINING}' "
                              "(an eval-only log): pass --test-log")
        return message + ", which never appears (did the run crash, or is it still running?)"
    after = lines[lines.index(end_signal):]
    reported = sorted({m.group(1) for m in (re.match(r"\* (\w+): [\d.,eE+-]+%?$", x) for x in after) if m})
    message += ", which appears, but the keyword does not follow it"
    return message + (f"; metrics after it: {', '.join(reported)}" if reported else "")


def has_final_result(path) -> bool:
    """CoOp's scripts' rule for a finished run: a '* accuracy' line after 'Finish training' or the final
    test's start."""
    final = False
    for line in read_lines(path):
        final = final or line.startswith((FINISH_TRAINING, EVAL_START))
        if final and line.startswith("* accuracy:"):
            return True
    return False


def final_metrics(path) -> dict:
    """{metric: value} of the last '=> result' block (the final evaluation)."""
    metrics, inside = {}, False
    for line in read_lines(path):
        if line == TEST_RESULT:
            metrics, inside = {}, True
            continue
        match = METRIC_LINE.match(line)
        if inside and match:
            metrics[match.group(1)] = float(match.group(2))
        elif inside and line.startswith("=> "):
            inside = False  # "=> per-class result" and the like
    return metrics
