"""The embedded stack: endpoint + resources + event-source runner invoking the processor in-process."""

from __future__ import annotations

import json
import threading
from typing import Any

from botocore.config import Config

from daemon.logs import get_logger
from embedded.endpoint import EMBEDDED_ACCESS_KEY_ID, EMBEDDED_SECRET_ACCESS_KEY, EmbeddedEndpoint, embedded_client
from embedded.resources import StackResources, create_resources
from infra.settings import StackSettings

# Time given to the batch being processed when the daemon stops.
_RUNNER_STOP_TIMEOUT_S = 10.0
# How often the stack checks whether the processor has caught up with the stream, to tell the user.
_PROGRESS_TICK_S = 1.0


class EmbeddedStack:
    """Starts the local endpoint, creates the stack's resources and runs the processor on the stream."""

    def __init__(self, settings: StackSettings, host: str, port: int, region: str) -> None:
        self.settings = settings
        self.region = region
        self.endpoint = EmbeddedEndpoint(host, port)
        self.resources: StackResources | None = None
        self.runner: Any = None
        self.log = get_logger(component="embedded")
        self._stopping = threading.Event()
        self._progress = threading.Thread(target=self._report_progress, name="embedded-progress", daemon=True)

    @property
    def endpoint_url(self) -> str:
        return self.endpoint.url

    @property
    def credentials(self) -> tuple[str, str]:
        """The dummy (access key id, secret access key) the endpoint's clients sign with."""
        return EMBEDDED_ACCESS_KEY_ID, EMBEDDED_SECRET_ACCESS_KEY

    def client(self, service: str, config: Config | None = None) -> Any:
        return embedded_client(service, self.endpoint.url, self.region, config)

    def start(self) -> StackResources:
        """Start everything; on failure, stop what already started and raise (EndpointUnavailable when the
        address is taken). The process environment is neither read nor changed: every client gets its
        endpoint, region and credentials explicitly."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> StackResources:
        # Both import the processor and Powertools: only when the embedded stack runs.
        from embedded.event_source_mapping.poller import EventSourcePoller
        from processor.clients import DYNAMODB_CONFIG, SQS_CONFIG
        from processor.config import ProcessorSettings
        from processor.handler import make_handler

        self.endpoint.start()
        kinesis = self.client("kinesis")
        sqs = self.client("sqs")
        self.resources = create_resources(
            self.settings, kinesis=kinesis, dynamodb=self.client("dynamodb"), sqs=sqs, region=self.region
        )
        queue_url = self.resources.dead_letter_queue_url
        # The settings Lambda would read from the environment the CDK stack gives the function.
        processor_settings = ProcessorSettings.from_environ(self.settings.processor_environment(queue_url))
        function = make_handler(
            processor_settings, dynamodb=self.client("dynamodb", DYNAMODB_CONFIG), sqs=self.client("sqs", SQS_CONFIG)
        )

        def send_to_dead_letter_queue(failure: dict[str, Any]) -> None:
            sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(failure))
            self.log.error("batch_sent_to_on_failure_destination", queue_url=queue_url, failure=failure)

        self.runner = EventSourcePoller(
            kinesis=kinesis,
            stream_name=self.resources.stream_name,
            region=self.region,
            function=function,
            settings=self.settings.event_source_mapping,
            on_failure=send_to_dead_letter_queue,
            function_arn=self.resources.function_arn,
            function_timeout_s=float(self.settings.function.timeout_seconds),
            logger=self.log,
        )
        self.runner.start()
        self._progress.start()
        self.log.info(
            "embedded_stack_started",
            endpoint=self.endpoint.url,
            stream=self.resources.stream_name,
            table=self.resources.table_name,
            function=self.settings.function_name,
        )
        return self.resources

    def _report_progress(self) -> None:
        """Log once each time the processor has handled every record read so far (tells the user to look)."""
        reported = 0
        while not self._stopping.wait(_PROGRESS_TICK_S):
            stats = self.runner.stats
            handled = stats.records_succeeded + stats.records_sent_to_on_failure
            if handled == stats.records_read and handled != reported:
                reported = handled
                self.log.info(
                    "processor_caught_up",
                    records_processed=stats.records_succeeded,
                    records_sent_to_on_failure=stats.records_sent_to_on_failure,
                    invocations=stats.invocations,
                    table=self.settings.table_name,
                    hint="tweet-producer table",
                )

    def stop(self) -> None:
        """Stop whatever is running (also after a start that failed half-way); safe to call twice."""
        self._stopping.set()
        try:
            if self._progress.is_alive():
                self._progress.join()
            runner, self.runner = self.runner, None
            if runner is not None:
                runner.stop(_RUNNER_STOP_TIMEOUT_S)
        finally:
            self.endpoint.stop()  # even when stopping the runner failed: the port must not stay taken
