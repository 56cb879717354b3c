"""Dassl's API in one place.

Trainers and datasets import everything Dassl-shaped from here. The built-in engine serves it
(same names, config keys, log lines and output layout); see `clipadapt.engine.backend`.
"""
from .builtin.registry import Registry, check_availability, unknown_name_message
from .builtin.dataset_base import Datum, DatasetBase

DATASET_REGISTRY = Registry("dataset")
TRAINER_REGISTRY = Registry("trainer")
EVALUATOR_REGISTRY = Registry("evaluator")
