"""The real server's pydantic models: every answer is validated against them and every POST body item by item.

The real server is a FastAPI app; FastAPI validates each answer against the endpoint's response model (`Animals`,
`Animal`) and the POST body against `List[IncomingAnimal]`, and that validation is most of what an answer costs
it. The simulator does the same work with the same library, so its CPU per animal is the real server's, and its
422 answers carry FastAPI's `{"detail": [{"type", "loc", "msg", "input"}]}` shape because they come from pydantic.

Where the real models are unknown, these are never kinder: `IncomingAnimal` takes no string for an id or a
number for `born_at`, and an id outside the run is refused (the simulator's ledger has no place for it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter, ValidationError, ValidationInfo, field_validator
from starlette.concurrency import run_in_threadpool

from .ledger import _epoch_ms

__all__ = ["Animal", "AnimalSummary", "Animals", "IncomingAnimal", "answer", "body_errors", "dumps", "query_errors"]


class AnimalSummary(BaseModel):
    """One item of a listing page."""

    id: int
    name: str
    born_at: int | None


class Animals(BaseModel):
    """A listing page."""

    page: int
    total_pages: int
    items: list[AnimalSummary]


class Animal(AnimalSummary):
    """One animal's detail."""

    friends: str


def _iso_8601(text: str) -> str:
    """An ISO-8601 time, by the judge's own reading (the ledger's; a naive time is UTC)."""
    _epoch_ms(text)  # ValueError -> pydantic's value_error
    return text


class IncomingAnimal(BaseModel):
    """One animal of a POST /home batch, checked strictly (the judge compares what it took, field by field)."""

    model_config = ConfigDict(extra="ignore")

    id: StrictInt
    name: StrictStr
    born_at: Annotated[StrictStr, AfterValidator(_iso_8601)] | None = Field(...)
    friends: list[StrictStr]

    @field_validator("id")
    @classmethod
    def _in_the_run(cls, value: int, info: ValidationInfo) -> int:
        total = info.context["total"] if info.context else None
        if total is not None and not 0 <= value < total:
            raise ValueError(f"id {value} is not an animal here (0..{total - 1})")
        return value


_BATCH = TypeAdapter(list[IncomingAnimal])
_PAGE = TypeAdapter(int)
ANIMALS = TypeAdapter(Animals)
ANIMAL = TypeAdapter(Animal)


async def answer(adapter: TypeAdapter[Any], operation: Callable[..., BaseModel], *args: Any) -> bytes:
    """FastAPI's path for a plain `def` path operation with a response model, step by step, as the real server's.

    The operation runs in the threadpool (FastAPI's run_in_threadpool), its model is dumped to a dict, validated
    against the response model in the threadpool again, serialized in JSON mode and dumped by json.dumps (FastAPI's
    JSONResponse). This is what an answer costs the real server, so the simulator costs the same per request.
    """
    content = (await run_in_threadpool(operation, *args)).model_dump(by_alias=True)
    value = await run_in_threadpool(adapter.validate_python, content)
    return dumps(adapter.dump_python(value, mode="json"))


def dumps(content: Any) -> bytes:
    """FastAPI's JSONResponse rendering."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


def _errors(error: ValidationError, where: str) -> list[dict[str, Any]]:
    """pydantic's errors as FastAPI lists them: type, loc (prefixed with body/query), msg, input (and ctx)."""
    found = []
    for item in error.errors(include_url=False):
        entry = {"type": item["type"], "loc": [where, *item["loc"]], "msg": item["msg"], "input": item["input"]}
        if "ctx" in item:
            entry["ctx"] = {k: v if isinstance(v, (str, int, float, bool)) or v is None else str(v) for k, v in item["ctx"].items()}
        found.append(entry)
    return found


def body_errors(body: bytes, content_type: str | None, total: int) -> tuple[list[Any] | None, list[dict[str, Any]]]:
    """A POST body read as FastAPI reads a `List[IncomingAnimal]` body: (the batch, []) or (None, its 422 errors).

    No Content-Type means JSON, as in FastAPI; any other type than application/json or application/*+json leaves
    the body as bytes, which then fails as "not a list".
    """
    payload: Any = body.decode("utf-8", "replace")
    if _is_json_type(content_type):
        try:
            payload = json.loads(body)
        except ValueError as exc:
            error = {"type": "json_invalid", "loc": ["body", getattr(exc, "pos", 0)], "msg": "JSON decode error",
                     "input": {}, "ctx": {"error": getattr(exc, "msg", str(exc))}}
            return None, [error]
    try:
        _BATCH.validate_python(payload, context={"total": total})
    except ValidationError as exc:
        return None, _errors(exc, "body")
    return payload, []


def query_errors(name: str, raw: str) -> tuple[int | None, list[dict[str, Any]]]:
    """A query parameter read as FastAPI reads an `int` one: (its value, []) or (None, its 422 errors)."""
    try:
        return _PAGE.validate_python(raw), []
    except ValidationError as exc:
        return None, [{**e, "loc": ["query", name]} for e in _errors(exc, "query")]


def _is_json_type(content_type: str | None) -> bool:
    if not content_type:
        return True
    media = content_type.partition(";")[0].strip().lower()
    main, _, sub = media.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))
