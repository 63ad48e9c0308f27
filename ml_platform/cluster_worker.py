"""The Celery app the cluster's workers run (`celery -A ml_platform.cluster_worker worker`).

dagster-celery's step tasks, configured as the jobs' executor is (`lib/cluster.celery_executor_config`),
with the broker's URL read from the environment. (`dagster-celery worker start` would write it into a
file, and runs the real worker as its child: killing the process supervisord knows would orphan it.)
"""

import os

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task, create_task

from ml_platform.lib.cluster import celery_executor_config, step_timeout_from_env

_config = celery_executor_config(step_timeout_from_env())
app = make_app(
    CeleryExecutor.for_cli(
        broker=os.environ[_config["broker"]["env"]],
        backend=os.environ[_config["backend"]["env"]],
        config_source=_config["config_source"],
    ).app_args()
)
execute_plan = create_task(app)
execute_job = create_execute_job_task(app)
resume_job = create_resume_job_task(app)
