"""Turn submissions into backtest runs, each exactly once.

Sources, one code path for both profiles: the operational store (agents in status ``submitted``)
and the bus topic ``backtest-requests`` (re-run requests for existing agents; in the gcp profile the
API publishes there). The cursor is the highest ``submission_seq`` already turned into a run, so a
restarted daemon neither loses nor repeats a submission; run keys (agent id + sequence) make a
repeated tick a no-op even before the cursor is saved.
"""

import dagster as dg

from assets.partitions import agents_partitions
from farm_dagster.agents import BacktestRequest, pending_submissions, resubmit_agent
from farm_dagster.resources.base import Bus, NotFoundError, OperationalStore
from farm_dagster.settings import get_settings
from jobs.definitions import backtest_agent_job

SUBSCRIPTION = "dagster-submission-sensor"


def _drain_requests(context: dg.SensorEvaluationContext, bus: Bus, opstore: OperationalStore) -> int:
    """Apply re-run requests from the bus; a request for an unknown or busy agent is logged and dropped."""
    topic = get_settings().topic_backtest_requests
    applied = 0
    try:
        bus.ensure_subscription(topic, SUBSCRIPTION)
        messages = bus.pull(topic, SUBSCRIPTION, max_messages=100, timeout_seconds=0.2)
    except Exception as exc:  # the bus being down must not stop submissions from the store
        context.log.warning(f"backtest-requests topic unavailable, reading the store only: {exc}")
        return 0
    for message in messages:
        agent_id = str(message.payload.get("agent_id", ""))
        try:
            raw = message.payload.get("request")
            resubmit_agent(opstore, agent_id, BacktestRequest.model_validate(raw) if raw else None)
            applied += 1
        except (NotFoundError, ValueError) as exc:
            context.log.warning(f"dropping backtest request {message.id} for {agent_id!r}: {exc}")
    bus.ack(topic, SUBSCRIPTION, [m.id for m in messages])
    return applied


@dg.sensor(
    job=backtest_agent_job,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New or re-submitted agents -> `agents` partition + one backtest run each.",
)
def agent_submission_sensor(
    context: dg.SensorEvaluationContext, opstore: OperationalStore, bus: Bus
) -> dg.SensorResult | dg.SkipReason:
    cursor = int(context.cursor or 0)
    _drain_requests(context, bus, opstore)
    pending = pending_submissions(opstore, cursor)
    if not pending:
        return dg.SkipReason(f"no submission after #{cursor}")
    known = set(context.instance.get_dynamic_partitions(agents_partitions.name))
    new_keys = sorted({doc["id"] for doc in pending} - known)
    requests = [
        dg.RunRequest(
            partition_key=doc["id"],
            run_key=f"{doc['id']}:{doc['submission_seq']}",
            tags={
                "farm/agent_id": doc["id"],
                "farm/user_id": str(doc.get("user_id", "")),
                "farm/submission_seq": str(doc["submission_seq"]),
            },
        )
        for doc in pending
    ]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[agents_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=str(max(int(doc["submission_seq"]) for doc in pending)),
    )
