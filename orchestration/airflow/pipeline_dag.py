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
pipeline_database_url, pipeline_retries (default 2), and when runs happen:

    pipeline_first_period     e.g. 2024-01: a run for an earlier period fails at once,
                              saying so (default: none, every period may run)
    pipeline_catchup          "true" queues every month since pipeline_first_period
                              when the DAG is enabled (default "false": the latest
                              month only; backfill older ones with `airflow dags
                              backfill` or `airflow dags test`)
    pipeline_max_active_runs  months in flight at once (default 4): a month whose file
                              is late waits in its sensor without holding back the next
    pipeline_arrival_timeout_minutes  how long a sensor waits for its file (default
                              7200, five days); then the run fails, naming the file
    pipeline_poke_interval_minutes    between sensor pokes (default 30)

The DAG's own start_date is fixed far back, so Airflow never skips a run's tasks as
"before start date" (which ended a run green having done nothing); the first period
is enforced by the tasks instead, loudly. Logs of each call are the binary's JSON lines.
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
FIRST_PERIOD = Variable.get("pipeline_first_period", default_var="")
CATCHUP = Variable.get("pipeline_catchup", default_var="false").lower() == "true"
MAX_ACTIVE_RUNS = int(Variable.get("pipeline_max_active_runs", default_var="4"))
# The month the data interval starts in, e.g. 2025-06.
PERIOD = "{{ data_interval_start.strftime('%Y-%m') }}"
POKE_INTERVAL = timedelta(minutes=float(Variable.get("pipeline_poke_interval_minutes", default_var="30")))
ARRIVAL_TIMEOUT = timedelta(
    minutes=float(Variable.get("pipeline_arrival_timeout_minutes", default_var=str(5 * 24 * 60)))
)
# Far back on purpose (see above); with catchup the first period starts the queue.
START_DATE = (
    datetime.strptime(FIRST_PERIOD, "%Y-%m") if FIRST_PERIOD and CATCHUP else datetime(2000, 1, 1)
)

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


def in_range(period_kind, period):
    """Fails the task (no retry) for a period before pipeline_first_period."""
    if period_kind != "none" and FIRST_PERIOD and period < FIRST_PERIOD:
        raise AirflowFailException(
            f"period {period} is before pipeline_first_period {FIRST_PERIOD}: nothing is run for it"
        )


def up_to_date(dataset, period_kind, period, skipped):
    """Stage holds the period: skipped, unless `status --check` shows something
    that needs a look (a re-delivery ingest refused, a stale or failed stage) —
    then the run fails, with status's problems in its log."""
    status = [PIPELINE, "--config", CONFIG, "--json", "status", "--check", "--dataset", dataset]
    if period_kind != "none":
        status += ["--period", period]
    env = dict(os.environ, **({"DATABASE_URL": DATABASE_URL} if DATABASE_URL else {}))
    proc = subprocess.run(status, env=env, capture_output=True, text=True)
    if proc.returncode == OK:
        raise skipped
    try:
        problems = [p for row in json.loads(proc.stdout).get("periods", []) for p in row["problems"]]
    except (ValueError, KeyError):
        problems = [proc.stdout.strip() or proc.stderr.strip()]
    raise AirflowFailException(
        f"stage holds {dataset} {period}, but it needs a look: " + "; ".join(problems)
    )


def arrived(dataset, period_kind, period):
    """Sensor poke: ingest what landed, then ask check-counts. False while the file
    is missing (poke again later); skipped when stage already holds it and nothing
    needs a look."""
    in_range(period_kind, period)
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
    except AirflowSkipException as skipped:
        up_to_date(dataset, period_kind, period, skipped)
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
    start_date=START_DATE,
    schedule="@monthly",
    catchup=CATCHUP,
    max_active_runs=MAX_ACTIVE_RUNS,
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
                # A late file fails its run, not every later month's.
                soft_fail=False,
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
