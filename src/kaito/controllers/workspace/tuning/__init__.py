"""Tuning Workspaces: one Job named after the Workspace, and the status read back from it.

Modules: ``job`` (the Job, its default ConfigMap, the status read from the Job and its pods) and
``workload`` (:class:`TuningWorkload`, the reconciler's plug-in). The builders' names are
re-exported here.
"""

from kaito.controllers.workspace.tuning.job import (
    DEFAULT_DATA_SIZE_LIMIT,
    DOWNLOADER,
    JOB,
    PULLER,
    PUSHER,
    TOLERATIONS,
    JobOutcome,
    TuningJobOptions,
    build_tuning_config,
    build_tuning_job,
    default_affinity,
    desired_tuning_status,
    job_status_to_conditions,
    tuning_config_name,
)
from kaito.controllers.workspace.tuning.workload import TuningWorkload

__all__ = [
    "DEFAULT_DATA_SIZE_LIMIT",
    "DOWNLOADER",
    "JOB",
    "PULLER",
    "PUSHER",
    "TOLERATIONS",
    "JobOutcome",
    "TuningJobOptions",
    "TuningWorkload",
    "build_tuning_config",
    "build_tuning_job",
    "default_affinity",
    "desired_tuning_status",
    "job_status_to_conditions",
    "tuning_config_name",
]
