"""Invoke any function's handler locally with a sample event.

    python -m functions.invoke ingest events/ingest/selfie-s3-via-sqs.json
    python -m functions.invoke workflow.search events/workflow/search.json

The handler runs in this process with the FACE_DEDUP_* settings of the environment: real AWS
(credentials and resource names of a deployed stack), or an emulator such as `moto_server`
with FACE_DEDUP_AWS_ENDPOINT_URL pointing at it. The whole flow on emulated AWS, set up and
checked, is tests/e2e/test_serverless_on_moto.py.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

HANDLERS = {
    "ingest": ("functions.ingest.handler", "handler"),
    "workflow.search": ("functions.workflow.handler", "search"),
    "workflow.complete": ("functions.workflow.handler", "complete"),
    "workflow.notify": ("functions.workflow.handler", "notify"),
    "workflow.record_failure": ("functions.workflow.handler", "record_failure"),
    "digest": ("functions.digest.handler", "handler"),
    "api": ("functions.api.handler", "handler"),
    "reconcile": ("functions.reconcile.handler", "handler"),
    "index_setup": ("functions.index_setup.handler", "handler"),
    "audit_archive": ("functions.audit_archive.handler", "handler"),
    "abis": ("functions.abis.handler", "handler"),  # deployed with face-dedup:mosip-abis=true
    # deployed with face-dedup:migration=true
    "migrate": ("functions.migrate.handler", "handler"),
    "migrate.switch": ("functions.migrate.handler", "switch"),
    "migrate.finish": ("functions.migrate.handler", "finish"),
    "migrate.shadow": ("functions.migrate.handler", "shadow"),
    "migrate.report": ("functions.migrate.handler", "report"),
    "migrate.shadow_fill": ("functions.migrate.handler", "shadow_fill"),
    "bulk_analyse": ("functions.bulk.handler", "handler"),  # deployed with face-dedup:bulk-import=true
    "bulk.prepare": ("functions.bulk.handler", "prepare"),
    "bulk.join": ("functions.bulk.handler", "join"),
    "bulk.decide": ("functions.bulk.handler", "decide"),
}


class LocalContext:
    function_name = "face-dedup-local"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:local:000000000000:function:face-dedup-local"
    memory_limit_in_mb = 3008
    aws_request_id = "local-invocation"
    log_group_name = "/aws/lambda/face-dedup-local"
    log_stream_name = "local"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("function", choices=sorted(HANDLERS))
    parser.add_argument("event", type=Path)
    args = parser.parse_args()
    module_name, attribute = HANDLERS[args.function]
    handler = getattr(importlib.import_module(module_name), attribute)
    event: Any = json.loads(args.event.read_text(encoding="utf-8"))
    result = handler(event, LocalContext())
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
