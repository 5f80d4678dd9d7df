"""Batch dispatches: the list of results a batch carries, for Actions whose payload left it out."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller
from litestar.datastructures import State
from litestar.params import PathParameter

from api.auth import SECURITY, requires_scope
from api.models import MAX_ID, BatchOut, error_responses
from api.routing import get, read
from reconciler.errors import NotFound
from reconciler.payload import batch_listing

BatchId = Annotated[int, PathParameter(schema_extra={"minimum": 1, "maximum": MAX_ID, "format": "int64"})]


class BatchController(Controller):
    path = "/api/batches"
    tags = ["results"]
    security = SECURITY

    @get(["/{batch_id:int}", "/{batch_id:int}/"], guards=[requires_scope("results:write")],
         summary="The results of a batch dispatch: {id, check, size, results: [{result, service, endpoint}]}",
         responses=error_responses(401, 403, 404))
    async def get_batch(self, state: State, batch_id: BatchId) -> BatchOut:
        if not 1 <= batch_id <= MAX_ID:
            raise NotFound(f"batch {batch_id} does not exist")
        return await read(state.store, batch_listing, state.store, batch_id)
