"""The Celery app the workers of FLUX_EXECUTOR=celery run (`pip install -e '.[celery]'`):

    celery -A flux_pipeline_deploy.celery_app worker -Q dagster -n flux1@%h --concurrency 2

dagster_celery's own app module with the broker and result backend the executor is configured with
(FLUX_CELERY_BROKER, FLUX_CELERY_BACKEND: flux_pipeline.lib.executors.celery_settings) and the
executor's defaults (one task prefetched per worker process). A worker executes steps of the code
location, so it needs the code location's environment too (FAL_KEY, FLUX_DATA_DIR, FLUX_LEDGER,
DAGSTER_HOME with deploy/dagster.yaml, ...)."""

from dagster_celery.config import DEFAULT_CONFIG, dict_wrapper
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from flux_pipeline.lib.executors import celery_settings

app = make_app({**celery_settings(), "config_source": dict_wrapper(DEFAULT_CONFIG)})

execute_plan = create_task(app)
