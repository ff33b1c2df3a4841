"""The embedded stack: endpoint + resources + event-source runner invoking the processor in-process."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from daemon.logs import get_logger
from embedded.endpoint import EmbeddedEndpoint, embedded_client, point_environment_at
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

    def client(self, service: str) -> Any:
        return embedded_client(service, self.endpoint.url, self.region)

    def start(self) -> StackResources:
        """Raises EndpointUnavailable when the address is taken."""
        from embedded.event_source_mapping.poller import EventSourcePoller  # imports the processor: only when embedded runs

        self.endpoint.start()
        kinesis = self.client("kinesis")
        self.resources = create_resources(
            self.settings, kinesis=kinesis, dynamodb=self.client("dynamodb"), sqs=self.client("sqs"), region=self.region
        )
        # The processor builds its clients from its environment, as it does in Lambda.
        point_environment_at(self.endpoint.url, self.region)
        os.environ.update(self.settings.processor_environment(self.resources.dead_letter_queue_url))
        from processor.handler import handler

        sqs = self.client("sqs")
        queue_url = self.resources.dead_letter_queue_url

        def send_to_dead_letter_queue(failure: dict[str, Any]) -> None:
            sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(failure))
            self.log.error("batch_sent_to_on_failure_destination", queue_url=queue_url, failure=failure)

        self.runner = EventSourcePoller(
            kinesis=kinesis,
            stream_name=self.resources.stream_name,
            region=self.region,
            function=handler,
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
        self._stopping.set()
        if self._progress.is_alive():
            self._progress.join()
        if self.runner is not None:
            self.runner.stop(_RUNNER_STOP_TIMEOUT_S)
            self.runner = None
        self.endpoint.stop()
