"""The online model tuner: queue-model parameters learnt per (model, accelerator) with an extended Kalman filter.

Each cycle the controller builds one :class:`Observation` per replica (:func:`observations_from_snapshot`),
calls :meth:`EKFTuner.update`, merges :meth:`EKFTuner.estimates` into the system with
:func:`merge_estimates`, records the :class:`TuneReport` and saves :meth:`EKFTuner.state` in a
:class:`TunerStore`. Design section 6; docs/tuner.md.
"""

from inferno.tuner.merge import merge_estimates
from inferno.tuner.observation import Key, Observation, key_name, observations_from_snapshot
from inferno.tuner.replay import read_observations, replay
from inferno.tuner.settings import TunerSettings
from inferno.tuner.store import JsonFileStore, TunerStore
from inferno.tuner.tuner import (
    STATE_VERSION,
    Counters,
    EKFTuner,
    KeyReport,
    Outcome,
    Seed,
    Tuner,
    TuneReport,
    seeds_from_spec,
)

__all__ = [
    "STATE_VERSION",
    "Counters",
    "EKFTuner",
    "JsonFileStore",
    "Key",
    "KeyReport",
    "Observation",
    "Outcome",
    "Seed",
    "TuneReport",
    "Tuner",
    "TunerSettings",
    "TunerStore",
    "key_name",
    "merge_estimates",
    "observations_from_snapshot",
    "read_observations",
    "replay",
    "seeds_from_spec",
]
