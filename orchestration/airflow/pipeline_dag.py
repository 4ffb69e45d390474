"""Monthly pipeline, built from datasets_config.yml: one task group per dataset, then
transform once every dataset is done.

Per dataset (a period-less dataset runs without --period, as a full refresh):

    wait_for_file  ingest --all, then check-counts: waits (reschedules) while the file
                   has not arrived (exit 5), up to ARRIVAL_TIMEOUT; skips the group
                   (exit 99) when stage already holds the current file's validation
                   (lineage: file sha256, validation, Delta version, and counts)
    validate       checks the file; a rejected file (exit 3) fails the group
    load_stage     replaces the period in stage.<dataset> in one transaction

Exit codes become Airflow outcomes in one place (`call`): 0 success, 99 skipped,
5 "not arrived" (the sensor pokes again later), 1 and 4 are retried (a transient
failure, a lock held by another run), 2 and 3 fail at once without retries (a
usage/config error or a rejected file: retrying cannot help).

Why a DAG per dataset rather than one `pipeline run` task: each dataset waits for
its own file and fails alone, and operators see which one is late or rejected. The
datasets come from the config, so a new dataset gets its tasks without editing this
file.

Airflow Variables (or edit the defaults): pipeline_bin, pipeline_config,
pipeline_database_url, pipeline_retries (default 2). Logs of each call are the binary's JSON lines.
"""
import json
import os
import subprocess
from datetime import datetime, timedelta

import yaml
from airflow import DAG
from airflow.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from airflow.models import Variable
from airflow.operators.python import PythonOperator
from airflow.sensors.python import PythonSensor
from airflow.utils.task_group import TaskGroup
from airflow.utils.trigger_rule import TriggerRule

PIPELINE = Variable.get("pipeline_bin", default_var="/opt/pipeline/bin/pipeline")
CONFIG = Variable.get("pipeline_config", default_var="/opt/pipeline/datasets_config.yml")
DATABASE_URL = Variable.get("pipeline_database_url", default_var="")
RETRIES = int(Variable.get("pipeline_retries", default_var="2"))
# The month the data interval starts in, e.g. 2025-06.
PERIOD = "{{ data_interval_start.strftime('%Y-%m') }}"
POKE_INTERVAL = timedelta(minutes=30)
ARRIVAL_TIMEOUT = timedelta(days=5)

# Exit codes (documentation/operations.md).
OK, FAILURE, USAGE, REJECTED, LOCKED, NOT_ARRIVED, NOTHING_TO_DO = 0, 1, 2, 3, 4, 5, 99


class NotArrived(Exception):
    """The period's file has not landed yet."""


def call(*args):
    """Runs `pipeline --json ARGS`; returns its JSON result or raises what the exit
    code means to Airflow."""
    env = dict(os.environ)
    if DATABASE_URL:
        env["DATABASE_URL"] = DATABASE_URL
    cmd = [PIPELINE, "--config", CONFIG, "--log-format", "json", "--json", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in proc.stderr.splitlines():
        print(line)
    try:
        result = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except ValueError:
        result = {"error": proc.stdout.strip()}
    code = proc.returncode
    message = f"pipeline {' '.join(args)} exited {code}: {result.get('error') or ''}".strip()
    if code == OK:
        return result
    if code == NOTHING_TO_DO:
        raise AirflowSkipException(message)
    if code == NOT_ARRIVED:
        raise NotArrived(message)
    if code in (FAILURE, LOCKED):
        raise AirflowException(message)  # retried
    raise AirflowFailException(message)  # 2, 3 and anything else: no retry


def period_args(period_kind, period):
    return [] if period_kind == "none" else ["--period", period]


def arrived(dataset, period_kind, period):
    """Sensor poke: ingest what landed, then ask check-counts. False while the file
    is missing (poke again later); skipped when stage already holds it."""
    try:
        call("ingest", "--all")
    except AirflowFailException as e:
        # Some landed file was rejected (exit 3): that file's own dataset fails at
        # its validate; the others go on.
        print(e)
    try:
        call("check-counts", "--dataset", dataset, *period_args(period_kind, period))
    except NotArrived as e:
        print(e)
        return False
    return True


def validate(dataset, period_kind, period):
    return call("validate", "--dataset", dataset, *period_args(period_kind, period))


def load_stage(dataset, period_kind, period):
    return call("load-stage", "--dataset", dataset, *period_args(period_kind, period))


def transform(period):
    return call("transform", "--period", period)


def datasets(config_path):
    """(name, period kind) of every dataset in the config, in its order."""
    with open(config_path) as f:
        config = yaml.safe_load(f)
    return [(name, (ds or {}).get("period", "month")) for name, ds in config["datasets"].items()]


with DAG(
    dag_id="pipeline_monthly",
    start_date=datetime(2025, 1, 1),
    schedule="@monthly",
    catchup=True,
    max_active_runs=1,
    default_args={"retries": RETRIES, "retry_delay": timedelta(minutes=10)},
    tags=["pipeline"],
) as dag:
    groups = []
    for name, kind in datasets(CONFIG):
        with TaskGroup(group_id=name) as group:
            op_args = [name, kind, PERIOD]
            wait = PythonSensor(
                task_id="wait_for_file",
                python_callable=arrived,
                op_args=op_args,
                mode="reschedule",
                poke_interval=POKE_INTERVAL,
                timeout=ARRIVAL_TIMEOUT,
            )
            check = PythonOperator(task_id="validate", python_callable=validate, op_args=op_args)
            load = PythonOperator(task_id="load_stage", python_callable=load_stage, op_args=op_args)
            wait >> check >> load
        groups.append(group)
    # Runs when every load succeeded or was skipped as already done; a dataset still
    # waiting holds it back, a failed one fails it (its models would be empty).
    run_transform = PythonOperator(
        task_id="transform",
        python_callable=transform,
        op_args=[PERIOD],
        trigger_rule=TriggerRule.NONE_FAILED,
    )
    groups >> run_transform
