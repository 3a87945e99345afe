"""MOSIP ABIS on Amazon MQ: the event source mapping delivers MOSIP's requests (batch size 1,
one invocation at a time: an Identify must see every Insert queued before it); each goes
through the same ABIS handlers as `face-dedup abis`, on the same core, and the reply goes to
the response queue over STOMP+SSL (face_dedup.mosip.amazon_mq says why nothing is lost).

Thin by design: build once per cold start, then parse the event and answer each message.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from face_dedup.bootstrap import build_function, read_secret
from face_dedup.deployment import ABIS_BROKER_SECRET_ENV
from face_dedup.mosip.amazon_mq import StompReplySender, credentials_from_secret, handle_event
from face_dedup.mosip.config import AbisConfig
from face_dedup.mosip.datashare import DatashareClient
from face_dedup.mosip.handlers import AbisHandler
from face_dedup.mosip.iso_face import face_reader
from face_dedup.settings import Settings

SECRET_ENV = ABIS_BROKER_SECRET_ENV  # the name of the variable holding the secret's ARN

logger = Logger(service="face-dedup-abis")
tracer = Tracer(service="face-dedup-abis", auto_patch=False)  # see tests/infra/test_traces.py


@lru_cache(maxsize=1)
def abis() -> tuple[AbisHandler, StompReplySender]:
    """Models, clients and the broker connection: once per cold start, never per request."""
    config = AbisConfig.load()
    settings = Settings.load().with_overrides(tenant=config.tenant)
    service = build_function(settings, "abis").service
    datashare = DatashareClient(config.datashare)
    handler = AbisHandler(
        service,
        datashare.fetch,
        max_results=config.max_results,
        target_fpir=config.target_fpir,
        open_cases=False,  # the function declares no case ports: no case is opened from here
        read_face=face_reader(settings.decode),
    )
    secret = read_secret(settings, os.environ[SECRET_ENV])
    sender = StompReplySender(config.broker_url, credentials_from_secret(secret), config.response_queue)
    return handler, sender


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    abis_handler, sender = abis()
    return handle_event(event, abis_handler, sender)
