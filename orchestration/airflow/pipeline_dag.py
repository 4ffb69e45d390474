"""Nightly pipeline: one BashOperator per stage, for the month of the data interval.

Each task calls the `pipeline` binary with `--period` taken from Airflow's data
interval. Exit code 99 ("nothing to do", e.g. check-counts found the period
already loaded) marks the task skipped instead of failed; downstream tasks then
skip too under the default trigger rule.

Set the `pipeline_bin`, `pipeline_config` and `pipeline_database_url` Airflow
Variables (or edit the defaults below). Logs are JSON lines on stderr.
"""
from datetime import datetime, timedelta

from airflow import DAG
from airflow.models import Variable
from airflow.operators.bash import BashOperator

PIPELINE = Variable.get("pipeline_bin", default_var="/opt/pipeline/bin/pipeline")
CONFIG = Variable.get("pipeline_config", default_var="/opt/pipeline/datasets_config.yml")
ENV = {"DATABASE_URL": Variable.get("pipeline_database_url", default_var="")}
DATASET = "citizens"
# The month the data interval starts in, e.g. 2025-06.
PERIOD = "{{ data_interval_start.strftime('%Y-%m') }}"


def stage(task_id: str, args: str) -> BashOperator:
    return BashOperator(
        task_id=task_id,
        bash_command=f"{PIPELINE} --config {CONFIG} --log-format json {args}",
        env=ENV,
        append_env=True,
        skip_on_exit_code=99,
    )


with DAG(
    dag_id="pipeline_monthly",
    start_date=datetime(2025, 1, 1),
    schedule="@monthly",
    catchup=True,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["pipeline"],
) as dag:
    ingest = stage("ingest", "ingest --all")
    check = stage("check_counts", f"check-counts --dataset {DATASET} --period {PERIOD}")
    validate = stage("validate", f"validate --dataset {DATASET} --period {PERIOD}")
    load = stage("load_stage", f"load-stage --dataset {DATASET} --period {PERIOD}")
    transform = stage("transform", f"transform --period {PERIOD}")

    ingest >> validate >> check >> load >> transform
