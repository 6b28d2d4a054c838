"""Airflow DAG running cohort-sync nightly: export cohorts to S3, then reconcile a CRM list.

Exit code 3 means "deferred to next month" (the monthly download quota does not allow
more): the task is marked *skipped*, not failed, so no alert fires for a quota that ran
out as planned. Exit 1 fails the task (Airflow retries it; requests already issued are
reused, so a retry spends no quota for them). Needs Airflow 2.6+ (BashOperator's
``skip_on_exit_code``) and the ``cohort-sync`` binary on the worker's PATH; the pipeline
files live beside the DAG in ``pipelines/``. Credentials come from Airflow Variables
exported as environment variables, never from the pipeline files.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow import DAG
from airflow.models import Variable
from airflow.operators.bash import BashOperator

PIPELINES = os.path.join(os.path.dirname(__file__), "pipelines")
# Exit codes of the cohort-sync CLI contract.
EXIT_DEFERRED_BY_QUOTA = 3

env = {
    "AMPLITUDE_API_KEY": "{{ var.value.amplitude_api_key }}",
    "AMPLITUDE_SECRET_KEY": "{{ var.value.amplitude_secret_key }}",
    "EXPORT_BUCKET": Variable.get("export_bucket", default_var="my-warehouse-bucket"),
    "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
}

with DAG(
    dag_id="cohort_sync_nightly",
    schedule="15 3 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["amplitude", "cohorts"],
) as dag:
    export = BashOperator(
        task_id="export_cohorts",
        bash_command=(
            f"cohort-sync run {PIPELINES}/export.toml"
            " --report /tmp/cohort-sync-export-{{ ts_nodash }}.json"
        ),
        env=env,
        skip_on_exit_code=EXIT_DEFERRED_BY_QUOTA,
        # The run handles SIGTERM: leases released, report written, exit 143.
        execution_timeout=timedelta(hours=6),
    )
    reconcile = BashOperator(
        task_id="reconcile_crm_list",
        bash_command=f"cohort-sync run {PIPELINES}/crm-reverse.toml",
        env=env,
        skip_on_exit_code=EXIT_DEFERRED_BY_QUOTA,
        execution_timeout=timedelta(hours=2),
        # A skipped export (quota) does not stop the reconcile: its baseline may come from
        # the last snapshot.
        trigger_rule="none_failed",
    )
    export >> reconcile
