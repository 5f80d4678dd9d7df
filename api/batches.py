"""Batch dispatches: the list of results a batch carries, for Actions whose payload left it out."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request
from litestar.datastructures import State
from litestar.params import PathParameter

from api.auth import SECURITY, identity_of, requires_answer
from api.models import MAX_ID, BatchOut, error_responses
from api.routing import get, read
from reconciler.errors import NotAllowed, NotFound
from reconciler.oidc import OidcIdentity
from reconciler.payload import batch_listing

BatchId = Annotated[int, PathParameter(schema_extra={"minimum": 1, "maximum": MAX_ID, "format": "int64"})]


class BatchController(Controller):
    path = "/api/batches"
    tags = ["results"]
    security = SECURITY

    @get(["/{batch_id:int}", "/{batch_id:int}/"], guards=[requires_answer],
         summary="The results of a batch dispatch: {id, check, size, results: [{result, service, endpoint}]}",
         description=(
             "Authorized by an API token with `results:write`, or by a GitHub Actions OIDC token of the"
             " repository of the batch's check (the rule that lets it answer those results; 403 for any other)."
         ),
         responses=error_responses(401, 403, 404))
    async def get_batch(self, request: Request, state: State, batch_id: BatchId) -> BatchOut:
        if not 1 <= batch_id <= MAX_ID:
            raise NotFound(f"batch {batch_id} does not exist")
        identity = identity_of(request)
        if isinstance(identity, OidcIdentity):
            why = identity.batch_refusal(await read(state.store, state.store.dispatch.batch_rule, batch_id), batch_id)
            if why is not None:
                raise NotAllowed(why)
        return await read(state.store, batch_listing, state.store, batch_id)
