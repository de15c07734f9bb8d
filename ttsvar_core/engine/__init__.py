"""The TTS-VAR search engine: requests, candidate state, batch schedules, selection, strategies and events."""
from .events import (Event, EventHandler, FinalScores, GroupRecord, HistoryScored, ScaleDone, SearchDone,
                     SelectionDone, SelectionRecord)
from .memory import NotEnoughMemory, estimate_search_memory
from .request import MAX_SEED, Prompts, RunOptions, Scorers, SearchRequest
from .schedule import DECODE_CHOICES, MAX_CANDIDATES_PER_PROMPT, PRESET_NAMES, BatchSchedule, DecodePolicy, preset
from .selection import (cluster_select, cluster_step, final_pick, pca_maps, potential, resample, resample_step,
                        resampling_weights, score_step)
from .state import SearchState
from .strategies import STRATEGIES, SearchResult, run_search, schedule_for
from .streams import Stream, derive_seed

__all__ = ["BatchSchedule", "DecodePolicy", "DECODE_CHOICES", "PRESET_NAMES", "preset", "SearchState", "Stream",
           "derive_seed", "cluster_select", "cluster_step", "final_pick", "pca_maps", "potential",
           "resample", "resample_step", "resampling_weights", "score_step", "STRATEGIES", "SearchResult",
           "run_search", "schedule_for", "Prompts", "RunOptions", "Scorers", "SearchRequest", "MAX_SEED", "Event",
           "EventHandler", "FinalScores", "GroupRecord", "HistoryScored", "ScaleDone", "SearchDone", "SelectionDone",
           "SelectionRecord", "NotEnoughMemory", "estimate_search_memory", "MAX_CANDIDATES_PER_PROMPT"]
