"""Alarms on the pipeline's failure signals and one dashboard showing its flow."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from infra.data import DataPlane
from infra.processing import Processing
from infra.settings import StackSettings

ALARM_PERIOD = Duration.minutes(5)
# The processor is falling behind when its oldest unprocessed record is this old (Lambda's IteratorAge).
ITERATOR_AGE_ALARM_MS = 5 * 60 * 1000
# Any function error, throttle, dead letter or table throttle deserves a look: thresholds of one.
ANY = 1


class Monitoring(Construct):
    """CloudWatch alarms (no actions: subscribe what you like to them) and a dashboard."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: StackSettings, data: DataPlane, processing: Processing
    ) -> None:
        super().__init__(scope, construct_id)
        fn = processing.function
        iterator_age = fn.metric("IteratorAge", statistic="Maximum", period=ALARM_PERIOD)
        errors = fn.metric_errors(statistic="Sum", period=ALARM_PERIOD)
        throttles = fn.metric_throttles(statistic="Sum", period=ALARM_PERIOD)
        dead_letters = data.dead_letter_queue.metric_approximate_number_of_messages_visible(
            statistic="Maximum", period=ALARM_PERIOD
        )
        table_throttles = data.table.metric("WriteThrottleEvents", statistic="Sum", period=ALARM_PERIOD)

        def alarm(name: str, metric: cloudwatch.Metric, threshold: float, what: str) -> cloudwatch.Alarm:
            return cloudwatch.Alarm(
                self,
                name,
                alarm_name=f"{settings.name}-{name}",
                alarm_description=what,
                metric=metric,
                threshold=threshold,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                # No data means no traffic, not a failure.
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )

        self.alarms = [
            alarm("IteratorAge", iterator_age, ITERATOR_AGE_ALARM_MS, "The processor is falling behind the stream"),
            alarm("FunctionErrors", errors, ANY, "The processor failed whole batches (they are retried)"),
            alarm("FunctionThrottles", throttles, ANY, "Lambda throttled the processor"),
            alarm("DeadLetters", dead_letters, ANY, "Records were dead-lettered: read the dead-letter queue"),
            alarm("TableThrottles", table_throttles, ANY, "DynamoDB throttled the processor's writes"),
        ]

        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=settings.name)
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Stream",
                left=[data.stream.metric_incoming_records(), data.stream.metric_put_records_success()],
                right=[data.stream.metric_write_provisioned_throughput_exceeded()],
            ),
            cloudwatch.GraphWidget(
                title="Processor",
                left=[fn.metric_invocations(), errors, throttles],
                right=[iterator_age],
            ),
            cloudwatch.GraphWidget(
                title="Table and dead letters",
                left=[data.table.metric_consumed_write_capacity_units(), table_throttles],
                right=[dead_letters],
            ),
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms)),
        )
