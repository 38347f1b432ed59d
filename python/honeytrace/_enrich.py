"""``enrich_span``, ``enrich_session`` and ``enrich_span_context``."""

from __future__ import annotations

import contextlib
from typing import Any, Optional

from opentelemetry import baggage, trace
from opentelemetry.trace import INVALID_SPAN

from . import _core, _registry
from ._registry import TracerLike
from ._wrappers import attach, restore

_NAMESPACES = (
    ("metadata", "honeyhive_metadata"),
    ("metrics", "honeyhive_metrics"),
    ("feedback", "honeyhive_feedback"),
    ("inputs", "honeyhive_inputs"),
    ("outputs", "honeyhive_outputs"),
    ("config", "honeyhive_config"),
    ("user_properties", "honeyhive_user_properties"),
)


def _tracer_for(tracer: Optional[TracerLike]) -> Optional[TracerLike]:
    """Explicit > the tracer of the current honeytrace span > the default tracer."""
    tracer = _registry.checked(tracer, "enrich")
    if tracer is not None:
        return tracer
    found: Optional[TracerLike] = _registry.of_span(trace.get_current_span()) or _registry.default()
    return found


def _merge_metadata(
    metadata: Optional[dict[str, Any]],
    attributes: Optional[dict[str, Any]],
    extra: dict[str, Any],
) -> Optional[dict[str, Any]]:
    """HoneyHive: ``attributes`` and unknown keywords go to metadata (keywords win)."""
    if not isinstance(attributes, dict):
        if attributes is not None:
            _core._invalid_argument("enrich_span(attributes=...)")
        attributes = None
    if not attributes and not extra:
        return metadata
    merged = dict(metadata) if isinstance(metadata, dict) else {}
    merged.update(attributes or {})
    merged.update(extra)
    return merged


def enrich_span(
    metadata: Optional[dict[str, Any]] = None,
    metrics: Optional[dict[str, Any]] = None,
    feedback: Optional[dict[str, Any]] = None,
    inputs: Optional[dict[str, Any]] = None,
    outputs: Optional[dict[str, Any]] = None,
    config: Optional[dict[str, Any]] = None,
    user_properties: Optional[dict[str, Any]] = None,
    error: Optional[str] = None,
    event_id: Optional[str] = None,
    attributes: Optional[dict[str, Any]] = None,
    tracer: Optional[TracerLike] = None,
    **kwargs: Any,
) -> bool:
    """Add HoneyHive attributes to the current span.

    Dicts are flattened with dot paths (``metadata={"a": {"b": 1}}`` gives
    ``honeyhive_metadata.a.b = 1``), None values are skipped, other values become JSON.
    ``attributes`` and unknown keywords go to metadata. Returns True when it wrote to a
    recording span, False when there is none.

    With ``event_id``, the enrichment updates that HoneyHive event instead: a
    ``PUT /events`` in HoneyHive cloud mode; elsewhere it is recorded as a
    ``honeyhive.event_update`` span carrying ``honeyhive_event_id``.
    """
    values = {
        "metadata": _merge_metadata(metadata, attributes, kwargs),
        "metrics": metrics,
        "feedback": feedback,
        "inputs": inputs,
        "outputs": outputs,
        "config": config,
        "user_properties": user_properties,
    }
    if event_id is not None:
        if not isinstance(event_id, str):
            _core._invalid_argument("enrich_span(event_id=...)")
            return False
        return _update_event(_tracer_for(tracer), event_id, values, error)
    items: list[tuple[str, Any]] = [
        (ns, values[k]) for k, ns in _NAMESPACES if values[k] is not None
    ]
    if error is not None:
        items.append(("honeyhive_error", error))
    return _core.enrich(trace.get_current_span(), items)


def _update_event(
    tracer: Optional[TracerLike],
    event_id: str,
    values: dict[str, Any],
    error: Optional[str],
    record_name: str = "honeyhive.event_update",
    id_attribute: str = "honeyhive_event_id",
) -> bool:
    if tracer is None:
        return False
    if tracer.mode == "cloud":
        body: dict[str, Any] = {"event_id": event_id}
        metadata = dict(values.get("metadata") or {})
        if values.get("inputs"):
            # HoneyHive answers 400 to top-level inputs on updates: they go to metadata.
            metadata["inputs"] = values["inputs"]
        if metadata:
            body["metadata"] = metadata
        for k in ("feedback", "metrics", "outputs", "config", "user_properties"):
            if values.get(k) is not None:
                body[k] = values[k]
        if error is not None:
            body["error"] = error
        return tracer._core.update_event(body)
    # Every other mode: keep it in the exported data as a small span.
    session = record_name == "honeyhive.enrich_session"
    with enrich_span_context(
        record_name,
        tracer=tracer,
        attributes={id_attribute: event_id, "honeyhive_enrichment": record_name},
        error=error,
        session_id=event_id if session else None,
        **{k: values.get(k) for k, _ in _NAMESPACES},
    ) as span:
        return span.is_recording()


def enrich_session(
    session_id: Optional[str] = None,
    metadata: Optional[dict[str, Any]] = None,
    inputs: Optional[dict[str, Any]] = None,
    outputs: Optional[dict[str, Any]] = None,
    config: Optional[dict[str, Any]] = None,
    feedback: Optional[dict[str, Any]] = None,
    metrics: Optional[dict[str, Any]] = None,
    user_properties: Optional[dict[str, Any]] = None,
    tracer: Optional[TracerLike] = None,
    **kwargs: Any,
) -> bool:
    """Add data to a whole session: explicit ``session_id`` > the session in baggage >
    the tracer's. HoneyHive cloud: ``PUT /events`` from the background thread.
    Elsewhere: recorded in the exported data as a ``honeyhive.enrich_session`` span of
    that session. Unknown keywords go to metadata. True when sent or recorded."""
    tracer = _tracer_for(tracer)
    if tracer is None:
        return False
    if session_id is not None and not isinstance(session_id, str):
        _core._invalid_argument("enrich_session(session_id=...)")
        session_id = None
    sid = session_id or baggage.get_baggage("session_id") or tracer.session_id
    values = {
        "metadata": _merge_metadata(metadata, None, kwargs),
        "inputs": inputs,
        "outputs": outputs,
        "config": config,
        "feedback": feedback,
        "metrics": metrics,
        "user_properties": user_properties,
    }
    return _update_event(
        tracer,
        str(sid),
        values,
        None,
        record_name="honeyhive.enrich_session",
        id_attribute="honeyhive.session_id",
    )


class enrich_span_context(contextlib.ContextDecorator):
    """Start a span named ``event_name``, make it current for the block, end it on exit.

    ``enrich_span`` inside the block enriches this span (not its parent). Explicit
    ``session_id``/``project``/``source`` win over baggage and the tracer, for this span
    and its children. Exceptions are recorded and re-raised. Works with ``with`` and
    ``async with``; yields the span.
    """

    def __init__(
        self,
        event_name: str,
        *,
        inputs: Optional[dict[str, Any]] = None,
        outputs: Optional[dict[str, Any]] = None,
        metadata: Optional[dict[str, Any]] = None,
        metrics: Optional[dict[str, Any]] = None,
        feedback: Optional[dict[str, Any]] = None,
        config: Optional[dict[str, Any]] = None,
        user_properties: Optional[dict[str, Any]] = None,
        error: Optional[str] = None,
        event_id: Optional[str] = None,
        session_id: Optional[str] = None,
        project: Optional[str] = None,
        source: Optional[str] = None,
        attributes: Optional[dict[str, Any]] = None,
        tracer: Optional[TracerLike] = None,
        event_type: Optional[str] = None,
    ) -> None:
        self._spec = _core.TraceSpec(
            event_name,
            tracer=_registry.checked(tracer, "enrich_span_context"),
            event_type=event_type,
            event_id=event_id,
            session_id=session_id,
            project=project,
            source=source,
            config=config,
            metadata=metadata,
            metrics=metrics,
            feedback=feedback,
            user_properties=user_properties,
            inputs=inputs,
            outputs=outputs,
            attributes=attributes,
            error=error,
            capture_inputs=False,
            capture_outputs=False,
        )
        self._stack: list[tuple[Any, Any]] = []

    def __enter__(self) -> trace.Span:
        scope = self._spec.start(())
        if scope is None:
            self._stack.append((None, None))
            return INVALID_SPAN
        self._stack.append((scope, attach(scope.context)))
        return scope.span

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        if not self._stack:  # __exit__ without __enter__: nothing to end
            return
        scope, token = self._stack.pop()
        if scope is None:
            return
        restore(token)
        if exc is not None:
            scope.fail(exc)
        else:
            scope.finish(None)

    async def __aenter__(self) -> trace.Span:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)
