"""ONNX Runtime sessions as every network of the project opens them (the face embedder,
the face detector): the preferred execution providers, CPU threads and spinning.

onnxruntime is imported only when a session is opened (the ``service`` extra), so that
the metadata tools need none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Providers in order of preference when none are named: CUDA when this build has it.
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def open_session(
    source: str | bytes,
    *,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    spin: bool | None = None,
    log_severity: int | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``source`` (a path or the model's bytes).

    Args:
        providers: execution providers in order of preference; by default
            :data:`PREFERRED_PROVIDERS` that this onnxruntime build offers.
        threads: intra-op threads for the CPU provider (``None``: ONNX Runtime decides).
        spin: whether idle intra-op threads busy-wait (``None``: ONNX Runtime's default).
        log_severity: ONNX Runtime's log level for this session (3: errors only).

    Raises:
        Whatever ONNX Runtime raises for a graph it cannot load (its errors are untyped):
        callers say which file it was.
    """
    import onnxruntime as ort

    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in PREFERRED_PROVIDERS if p in available]
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if spin is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spin)))
    if log_severity is not None:
        options.log_severity_level = log_severity
    return ort.InferenceSession(source, sess_options=options, providers=list(providers))
