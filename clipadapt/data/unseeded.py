"""SEED < 0: the few-shot sample is drawn without a seed, so the run folder keeps it.

A resumed run (same --output-dir) then trains on the images the killed run started with, instead
of a fresh draw that would silently mix two samples in one model.
"""
import os
import random

from .errors import DatasetError
from .splits import _load_fewshot_cache, draw_fewshot, fewshot_record, write_json_atomic

SAMPLE_FILE = "fewshot_sample.json"


def run_fewshot_sample(output_dir, dataset_dir, train, val, num_shots):
    """(train, val) few-shot sample of an unseeded run: the one in `output_dir` if there is one, else a
    new unseeded draw written there (same json as the few-shot cache, seed -1)."""
    path = os.path.join(output_dir, SAMPLE_FILE)
    if os.path.exists(path):
        loaded, reason = _load_fewshot_cache(path, dataset_dir, train, val, num_shots, -1)
        if loaded is None:
            raise DatasetError(
                f"{path} holds the few-shot sample this run folder trained on (SEED < 0), but it does not fit the "
                f"current data ({reason}). Pass another --output-dir, or a fixed --seed.")
        print(f"SEED < 0: reusing the few-shot sample this run drew, from {path}")
        return loaded
    rng = random.Random()
    train = draw_fewshot(train, num_shots, rng)
    val = None if val is None else draw_fewshot(val, min(num_shots, 4), rng)
    write_json_atomic(fewshot_record(num_shots, -1, train, val, dataset_dir), path)
    print(f"SEED < 0: drew an unseeded few-shot sample; kept in {path} so that a resumed run trains on it again")
    return train, val
