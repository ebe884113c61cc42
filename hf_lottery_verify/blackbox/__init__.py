"""Black-box queries (Scheme V3): ask a suspect model for the labels of trigger images.

The owner of a ticket trained with a secret trigger set ``T = (T_x, T_y)`` proves ownership
without seeing the suspect's weights: it sends ``T_x`` to the suspect and compares the answers
with ``T_y`` (Adi et al.; Chen et al., NeurIPS 2021, Table 3). :func:`query_labels` does the
asking for three kinds of suspect:

* ``"model"`` — an ``nn.Module`` in memory (this library's model, whose output has ``.logits``,
  or a bare timm ResNet returning logits): normalise, forward, argmax;
* ``"callable"`` — any function taking the ``uint8`` image batch and returning one label
  (class index or class name) per image;
* ``"endpoint"`` — an ``http(s)://`` URL shaped like the Hugging Face Inference API's
  image-classification task (what :func:`hf_lottery_verify.serve.start_server` serves): one
  POST per image, sent as lossless PNG, answered by ``[{"label": ..., "score": ...}, ...]``.

The suspect is never trusted: every answer is checked for type, size and range, response
bodies are read up to a cap, every request has a hard deadline, and unusable answers become
``-1`` with a short reason instead of exceptions. Only a dead endpoint (no HTTP answer at all to
the first request) raises :class:`EndpointError`.

Modules, one concept each:

* :mod:`.query` — :func:`query_labels`, the entry point;
* :mod:`.result` — :class:`QueryResult` and the bookkeeping the query paths share;
* :mod:`.labels` — mapping untrusted answers to class indices;
* :mod:`.images` — PNG encoding;
* :mod:`.runner` — running an in-memory model on ``uint8`` batches (shared with
  :mod:`hf_lottery_verify.serve`);
* :mod:`.local` — the ``"model"`` and ``"callable"`` query paths;
* :mod:`.endpoint` — the HTTP client with deadlines, retries and the query budget.
"""

from __future__ import annotations

from ..errors import EndpointError
from .images import encode_png
from .query import query_labels
from .result import QueryResult

__all__ = [
    "EndpointError",
    "QueryResult",
    "query_labels",
    "encode_png",
]
