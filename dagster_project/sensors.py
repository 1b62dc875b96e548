"""Sensors: the MLflow parent run of every Dagster run ends with that run's status.

A parent run is created by the first asset that logs to MLflow; without these it would stay RUNNING for
ever. ``lifecycle run`` ends it itself (it executes in process); runs launched from the UI, schedules and
backfills are ended here, by the daemon that ``dagster dev`` starts.
"""

from __future__ import annotations

import dagster as dg

from dagster_project.resources import MlflowResource

MLFLOW_STATUS = {
    dg.DagsterRunStatus.SUCCESS: "FINISHED",
    dg.DagsterRunStatus.FAILURE: "FAILED",
    dg.DagsterRunStatus.CANCELED: "KILLED",
}


def end_mlflow_parent(run: dg.DagsterRun, mlflow: MlflowResource) -> str | None:
    """End ``run``'s MLflow parent run with the status matching the Dagster run's; its id, if it had one."""
    return mlflow.end_parent_run(run.run_id, MLFLOW_STATUS[run.status])


def _status_sensor(status: dg.DagsterRunStatus) -> dg.SensorDefinition:
    @dg.run_status_sensor(
        run_status=status,
        name=f"mlflow_parent_on_{status.value.lower()}",
        monitor_all_code_locations=False,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _sensor(context: dg.RunStatusSensorContext, mlflow: MlflowResource):
        ended = end_mlflow_parent(context.dagster_run, mlflow)
        if ended:
            context.log.info(f"MLflow parent run {ended} of Dagster run {context.dagster_run.run_id} ended")

    return _sensor


SENSORS = [_status_sensor(s) for s in MLFLOW_STATUS]
