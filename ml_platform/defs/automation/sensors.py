"""The new-batch sensor: a complete file landing in the incoming folder becomes a partition and a run."""

import time

import dagster as dg

from ml_platform.defs.ingestion.quarantine import batch_quarantine
from ml_platform.defs.partitions import batch_partitions
from ml_platform.lib.config import PlatformConfig
from ml_platform.lib.incoming import IncomingCursor, list_incoming, plan_incoming
from ml_platform.lib.ingestion import ingestion_code_version
from ml_platform.lib.settings import Settings

# Run tags that say why a run exists (`ml-platform status` and the UI's run list show them).
TRIGGER_TAG = "ml_platform/trigger"
SOURCE_FILE_TAG = "ml_platform/source_file"
THROUGH_PIPELINE_KEY = dg.AssetKey("champion_model")


def build_new_batch_sensor(config: PlatformConfig, settings: Settings) -> dg.SensorDefinition:
    spec = config.automation.new_batch_sensor
    incoming_dir = settings.incoming_dir(config)
    ingestion_version = ingestion_code_version(config.data, config.training)

    @dg.sensor(
        name="new_batch_sensor",
        job_name=spec.job,
        minimum_interval_seconds=spec.minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING if spec.enabled else dg.DefaultSensorStatus.STOPPED,
        description=f"Adds a batch partition for each new complete `<batch id>.{config.data.file_format}` in "
        f"{incoming_dir} and runs {spec.job} for it (at most {spec.max_batches} per tick).",
    )
    def new_batch_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        known = set(context.instance.get_dynamic_partitions(batch_partitions.name))
        plan = plan_incoming(
            list_incoming(incoming_dir),
            IncomingCursor.from_json(context.cursor),
            file_format=config.data.file_format,
            now_ns=time.time_ns(),
            settle_seconds=spec.settle_seconds,
            max_batches=spec.max_batches,
            through_pipeline=context.instance.get_materialized_partitions(THROUGH_PIPELINE_KEY) & known,
        )
        for name, reason in plan.refused.items():
            context.log.warning(f"refused {incoming_dir / name}: {reason}")
        for name, reason in plan.waiting.items():
            context.log.info(f"waiting for {name}: {reason}")
        if plan.deferred:
            context.log.info(f"{len(plan.deferred)} more batch(es) next tick (max_batches={spec.max_batches})")
        new_keys = [batch.batch_id for batch in plan.ready if batch.batch_id not in known]
        # A file written again with the content it was refused for (a re-upload, a copy) fails again.
        ready, held = [], []
        for batch in plan.ready:
            if quarantine := batch_quarantine(
                context.instance, batch.batch_id, incoming_dir / batch.file.name, ingestion_version
            ):
                held.append(quarantine.describe())
            else:
                ready.append(batch)
        run_requests = [
            dg.RunRequest(
                # One run per version of a file: a daemon that crashes after requesting it does not run it twice.
                run_key=f"{batch.batch_id}:{batch.file.fingerprint}",
                partition_key=batch.batch_id,
                tags={
                    TRIGGER_TAG: "rewritten batch file" if batch.rewritten else "new batch file",
                    SOURCE_FILE_TAG: str(incoming_dir / batch.file.name),
                },
            )
            for batch in ready
        ]
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=[batch_partitions.build_add_request(new_keys)] if new_keys else [],
            cursor=plan.cursor.to_json(),
            skip_reason=None if run_requests else "; ".join([plan.skip_reason(incoming_dir), *held]),
        )

    return new_batch_sensor
