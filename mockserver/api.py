"""The API's handlers, one per ``operationId`` of the contract.

Each handler gets a validated :class:`Call` and returns a status and a body;
``app`` does auth, decoding, validation and encoding around it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import Unprocessable
from .jsontext import dumps
from .lookup import found_tune, own_prompt, remembered_prompt, remembered_tune, visible_tune
from .prepared import Stored
from .prompts import create_prompt
from .responses import NO_BODY
from .serialize import prompt_json, tune_json
from .services import Services
from .store import Row
from .tunes import create_tune, delete_tune


@dataclass(slots=True)
class Call:
    """One validated request."""

    tenant: str
    path: dict[str, int]
    query: dict[str, Any]
    body: dict[str, Any]


Result = tuple[int, Any]
"""A status and the body: a value to encode as JSON, or JSON encoded already (bytes)."""
ENCODED_BODIES = 1024
Handler = Callable[["Api", Call], Awaitable[Result]]


class Api:
    def __init__(self, services: Services, complete: Callable[[int], Awaitable[None]]) -> None:
        self.services = services
        self._complete = complete
        self.base_url = services.settings.base_url
        # A read of an unchanged tune or prompt answers the bytes encoded the last time.
        self._tune_body = lru_cache(maxsize=ENCODED_BODIES)(self._encode_tune)
        self._prompt_body = lru_cache(maxsize=ENCODED_BODIES)(self._encode_prompt)
        self._reads = services.reads

    def _encode_tune(self, stored: Stored) -> bytes:
        return dumps(self._tune(stored.row()))

    def _encode_prompt(self, stored: Stored) -> bytes:
        return dumps(self._prompt(stored.row()))

    def _tune(self, row: Row) -> dict[str, Any]:
        return tune_json(row, self.base_url)

    def _prompt(self, row: Row) -> dict[str, Any]:
        return prompt_json(row, self.base_url)

    # tunes -------------------------------------------------------------
    async def create_tune(self, call: Call) -> Result:
        row = await create_tune(self.services, call.tenant, call.body["tune"])
        return 201, self._tune(row)

    async def list_tunes(self, call: Call) -> Result:
        q = call.query
        with self.services.store.read() as tx:
            rows = tx.list_tunes(call.tenant, q["limit"], q.get("before_id"), q["offset"])
        return 200, [self._tune(row) for row in rows]

    async def get_tune(self, call: Call) -> Result:
        tune_id = call.path["id"]
        stored = found_tune(remembered_tune(self._reads, call.tenant, tune_id), tune_id)
        return 200, self._tune_body(stored)

    async def delete_tune(self, call: Call) -> Result:
        with self.services.store.begin() as tx:
            row = visible_tune(tx, call.tenant, call.path["id"])
        await delete_tune(self.services, call.tenant, row)
        return 200, {"message": "Tune successfully deleted"}

    # prompts -----------------------------------------------------------
    async def create_prompt(self, call: Call) -> Result:
        fields = call.body["prompt"]
        row = await create_prompt(self.services, call.tenant, call.path["tune_id"], fields)
        return 201, self._prompt(row)

    async def list_tune_prompts(self, call: Call) -> Result:
        q = call.query
        with self.services.store.read() as tx:
            tune = visible_tune(tx, call.tenant, call.path["tune_id"])
            rows = tx.list_prompts(
                call.tenant, tune["id"], q["limit"], q.get("before_id"), q["offset"]
            )
        return 200, [self._prompt(row) for row in rows]

    async def list_prompts(self, call: Call) -> Result:
        q = call.query
        with self.services.store.read() as tx:
            rows = tx.list_prompts(call.tenant, None, q["limit"], q.get("before_id"), q["offset"])
        return 200, [self._prompt(row) for row in rows]

    async def get_prompt(self, call: Call) -> Result:
        if self.services.settings.prompt_polls is None:
            path = call.path
            stored = remembered_prompt(self._reads, call.tenant, path["id"], path.get("tune_id"))
            return 200, self._prompt_body(stored)
        return 200, self._prompt(await self._poll_prompt(call, self.services.settings.prompt_polls))

    async def _poll_prompt(self, call: Call, polls_needed: int) -> Row:
        """A read of a prompt with ``--prompt-polls N``: the Nth read finishes it."""
        tune_id = call.path.get("tune_id")
        with self.services.store.begin() as tx:
            row = own_prompt(tx, call.tenant, call.path["id"], tune_id)
            if row["trained_at"] is not None or row["user_error"]:
                return row
            polls = tx.count_poll(row["id"])
            tune = tx.tune_by_id(row["tune_id"])
        if polls >= polls_needed and tune is not None and tune["trained_at"] is not None:
            await self._complete(row["id"])
        with self.services.store.begin() as tx:
            return own_prompt(tx, call.tenant, call.path["id"], tune_id)

    async def delete_prompt(self, call: Call) -> Result:
        with self.services.store.begin() as tx:
            row = own_prompt(tx, call.tenant, call.path["id"], call.path.get("tune_id"))
            tx.delete_prompt(call.tenant, row["id"])
        self.services.files.delete_prefix(f"prompts/{row['id']}")
        return 200, {"message": "Prompt successfully deleted"}

    async def duplicate_prompt(self, call: Call) -> Result:
        with self.services.store.read() as tx:
            source = own_prompt(tx, call.tenant, call.path["id"])
        fields = _input_fields(source)
        fields.update(call.body.get("prompt") or {})
        index = call.body.get("image_index")
        shown = self._prompt(source)
        if shown["input_image"] and not fields.get("input_image_url"):
            fields["input_image_url"] = shown["input_image"]
        if index is not None:
            if index >= len(shown["images"]):
                message = f"must be less than {len(shown['images'])}, the images of the prompt"
                raise Unprocessable.on("image_index", message)
            fields["input_image_url"] = shown["images"][index]
        row = await create_prompt(self.services, call.tenant, source["tune_id"], fields)
        return 201, self._prompt(row)

    async def like_prompt(self, call: Call) -> Result:
        return await self._set_like(call, True, 201)

    async def unlike_prompt(self, call: Call) -> Result:
        return await self._set_like(call, False, 200)

    async def _set_like(self, call: Call, liked: bool, status: int) -> Result:
        with self.services.store.begin() as tx:
            row = own_prompt(tx, call.tenant, call.path["id"])
            tx.update_prompt(row["id"], liked=liked)
        return status, NO_BODY


INTERNAL_ATTRS = ("width", "height", "adapters", "input_image", "mask_image")


def _input_fields(prompt: Row) -> dict[str, Any]:
    """The stored prompt's own fields, as a create call would send them."""
    return {k: v for k, v in prompt["attrs"].items() if k not in INTERNAL_ATTRS}


HANDLERS: dict[str, Handler] = {
    "createTune": Api.create_tune,
    "listTunes": Api.list_tunes,
    "getTune": Api.get_tune,
    "getTuneJson": Api.get_tune,
    "deleteTune": Api.delete_tune,
    "createPrompt": Api.create_prompt,
    "listTunePrompts": Api.list_tune_prompts,
    "getTunePrompt": Api.get_prompt,
    "getTunePromptJson": Api.get_prompt,
    "deleteTunePrompt": Api.delete_prompt,
    "listPrompts": Api.list_prompts,
    "getPrompt": Api.get_prompt,
    "getPromptJson": Api.get_prompt,
    "deletePrompt": Api.delete_prompt,
    "duplicatePrompt": Api.duplicate_prompt,
    "likePrompt": Api.like_prompt,
    "unlikePrompt": Api.unlike_prompt,
}
