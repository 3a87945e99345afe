"""The review API behind API Gateway (Cognito authorizer): the same resolver `face-dedup serve`
runs locally. Thin: wire the dependencies once per cold start, then resolve each request."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from face_dedup.bootstrap import build_function
from face_dedup.settings import Settings
from face_dedup_api.app import Dependencies, app, configure
from face_dedup_api.images import ImageSigner

logger = Logger(service="face-dedup-api")
tracer = Tracer(service="face-dedup-api", auto_patch=False)  # see tests/infra/test_traces.py


@lru_cache(maxsize=1)
def _configured() -> bool:
    settings = Settings.load()
    parts = build_function(settings, "api")  # with the engine: it serves 1:1 verification
    # Face images are presigned S3 links in the cloud; the signer only backs stores without them.
    signer = ImageSigner(os.urandom(32))
    configure(
        Dependencies(service=parts.service, signer=signer, queries=parts.queries, uploads=parts.uploads)
    )
    return True


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    _configured()
    return app.resolve(event, context)
