"""The TTS-VAR search engine: candidate state, batch schedules, selection and strategies."""
from .schedule import PRESET_NAMES, BatchSchedule, preset
from .selection import (cluster_select, cluster_step, combine_rewards, final_pick, pca_maps, potential, resample,
                        resample_step, resampling_weights, score_step)
from .state import SearchState
from .strategies import STRATEGIES, SearchResult, run_search, schedule_for
from .streams import Stream, derive_seed

__all__ = ["BatchSchedule", "PRESET_NAMES", "preset", "SearchState", "Stream", "derive_seed", "cluster_select",
           "cluster_step", "combine_rewards", "final_pick", "pca_maps", "potential", "resample", "resample_step",
           "resampling_weights", "score_step", "STRATEGIES", "SearchResult", "run_search", "schedule_for"]
