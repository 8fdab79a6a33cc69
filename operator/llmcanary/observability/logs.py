"""Log hygiene for an operator that watches thousands of child objects.

kopf logs one INFO line for every watch-event handler that returns: every status change
of every pod, Deployment, Service, ConfigMap and route of every LLMDeployment. Those
handlers only schedule a pass, so the line says nothing; with 1,000 LLMDeployments being
created it was 73% of the operator's log. ``llmcanary run -v`` keeps them.
"""

from __future__ import annotations

import logging
import re

#: kopf's logger for everything said about one object.
KOPF_OBJECTS_LOGGER = "kopf.objects"
_CHILD_HANDLER_SUCCEEDED = re.compile(r"Handler 'child-[a-z]+' succeeded\.")


class DropChildEventSuccess(logging.Filter):
    """Drops kopf's "Handler 'child-...' succeeded." lines; keeps everything else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.INFO
            and _CHILD_HANDLER_SUCCEEDED.fullmatch(record.getMessage()) is not None
        )


def quiet_child_events() -> None:
    logging.getLogger(KOPF_OBJECTS_LOGGER).addFilter(DropChildEventSuccess())
