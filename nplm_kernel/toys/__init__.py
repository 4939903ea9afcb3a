"""Toy campaigns: generators (what a toy is), the worker (one toy or a batch, its store row),
executors (serial, process pool, dask, batch systems, any Executor) and run_toys, which runs or
resumes a campaign, or one shard of it, into a toy store."""

from .campaign import DEFAULT_BATCH_SIZE, CampaignResult, campaign_identity, run_toys
from .executors import (
    DEFAULT_EXECUTOR,
    EXECUTOR_SETTINGS,
    MAX_LOSSES,
    BatchJobs,
    DaskScheduler,
    ExecutorError,
    resolve_executor,
)
from .generators import (
    MIN_WEIGHTED_POOL_RATIO,
    NULL_TOYS,
    AuxiliaryToys,
    LocalExcessToys,
    PermutationToys,
    ReferencePoolToys,
    ToyGenerator,
    ToySample,
    WeightedPoolToys,
    pool_toys,
    split_reference,
)
from .worker import THREADS_PER_TOY, ToyTask, ToyUnit, run_one_toy, run_toy_batch, toy_seed, toy_threads

__all__ = ["DEFAULT_BATCH_SIZE", "CampaignResult", "campaign_identity", "run_toys", "DEFAULT_EXECUTOR",
           "EXECUTOR_SETTINGS", "MAX_LOSSES", "BatchJobs", "DaskScheduler", "ExecutorError", "resolve_executor",
           "AuxiliaryToys", "LocalExcessToys", "PermutationToys", "ReferencePoolToys", "ToyGenerator", "ToySample",
           "THREADS_PER_TOY", "ToyTask", "ToyUnit", "run_one_toy", "run_toy_batch", "toy_seed", "toy_threads",
           "MIN_WEIGHTED_POOL_RATIO", "NULL_TOYS", "WeightedPoolToys", "pool_toys", "split_reference"]
