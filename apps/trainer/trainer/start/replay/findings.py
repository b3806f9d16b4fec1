"""What a replay's probes say about a step: the documents and tokens behind its loss, the layers
whose norms jump, and the documents a run may go on without (``data.exclude``).

A document's share of a step is its tokens' summed loss above the batch's mean token loss
(``excess``: what the document adds to the step's loss beyond an average stretch of text of its
length), so a long ordinary document does not outrank a short bad one, and a document the model
finds easy counts against itself. Documents are named by their number in the split (what
``data.exclude`` takes) and their origin (tjx.data's document index: file, line, byte offset).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence

import numpy as np

from tjx import data
from trainer.start.replay.runner import Replayed, StepRecord

#: Documents, tokens and layers a step's findings keep.
TOP_DOCUMENTS = 5
TOP_TOKENS = 10
TOP_LAYERS = 5
#: Characters of a document's text (its stretch in the batch) the report quotes.
SNIPPET_CHARS = 160
#: The suggested exclusion: the top documents whose excess adds up to this share of the step's
#: positive excess (at most `TOP_DOCUMENTS`).
EXCLUDE_SHARE = 0.5


@dataclasses.dataclass
class DocumentFinding:
    """A document's part in a step's batch."""

    number: int
    where: str
    tokens: int
    mean_loss: float
    excess: float
    snippet: str
    rows: list[int]


@dataclasses.dataclass
class TokenFinding:
    """One of a step's most surprising targets."""

    row: int
    column: int
    document: int
    loss: float
    token: str
    before: str


@dataclasses.dataclass
class LayerFinding:
    """A layer at a step beside its norms at the other probed steps (their median)."""

    layer: str
    grad: float | None = None
    grad_ratio: float | None = None
    update: float | None = None
    update_ratio: float | None = None
    activation: float | None = None
    attention: float | None = None


@dataclasses.dataclass
class StepFindings:
    """What a step's probes found."""

    step: int
    loss: float
    token_mean: float | None = None
    sequences: list[float] = dataclasses.field(default_factory=list)
    documents: list[DocumentFinding] = dataclasses.field(default_factory=list)
    tokens: list[TokenFinding] = dataclasses.field(default_factory=list)
    layers: list[LayerFinding] = dataclasses.field(default_factory=list)
    exclude: list[int] = dataclasses.field(default_factory=list)


def focus_steps(replayed: Replayed) -> list[int]:
    """The steps the report looks into: the marked spikes (``--spikes``), else the probed step
    with the highest replayed loss."""
    spikes = sorted(s for seg in replayed.request.segments for s in seg.spikes)
    if spikes:
        return spikes
    probed = [r for r in replayed.steps.values() if r.probes is not None]
    return [max(probed, key=lambda r: (r.loss, -r.step)).step] if probed else []


def layer_series(replayed: Replayed, name: str) -> dict[str, list[tuple[int, float]]]:
    """``{layer: [(step, value), ...]}`` of a per-layer probe (``grad_norms``,
    ``update_norms``) over the probed steps."""
    out: dict[str, list[tuple[int, float]]] = {}
    for step in sorted(replayed.steps):
        probes = replayed.steps[step].probes
        for layer, value in ({} if probes is None else probes.norms.get(name, {})).items():
            out.setdefault(layer, []).append((step, value))
    return dict(sorted(out.items(), key=lambda kv: _layer_order(kv[0])))


def _layer_order(name: str) -> tuple[int, int, str]:
    parts = name.split()
    if parts[-1].isdigit():
        return (1, int(parts[-1]), name)
    return (0 if name in ("embed", "pos_embed") else 2, 0, name)


def _ratio(value: float, others: Sequence[float]) -> float | None:
    base = statistics.median(others) if others else None
    return None if not base else value / base


def _layers(replayed: Replayed, record: StepRecord) -> list[LayerFinding]:
    assert record.probes is not None
    probes = record.probes
    found: dict[str, LayerFinding] = {}
    same_segment = next(
        seg for seg in replayed.request.segments if seg.start < record.step <= seg.stop
    )
    others = [
        replayed.steps[s]
        for s in same_segment.probed
        if s != record.step and s in replayed.steps and replayed.steps[s].probes is not None
    ]
    for name, attr in (("grad_norms", "grad"), ("update_norms", "update")):
        for layer, value in probes.norms.get(name, {}).items():
            item = found.setdefault(layer, LayerFinding(layer))
            rest = [o.probes.norms[name][layer] for o in others if o.probes is not None]
            setattr(item, attr, value)
            setattr(item, f"{attr}_ratio", _ratio(value, rest))
    for i, layer in enumerate(replayed.layers):
        item = found.setdefault(layer, LayerFinding(layer))
        if "activations" in replayed.request.probes and "activation_max" in probes.maxima:
            item.activation = probes.maxima["activation_max"][i]
        if "attention" in replayed.request.probes and "attention_logit_max" in probes.maxima:
            value = probes.maxima["attention_logit_max"][i]
            item.attention = value if np.isfinite(value) else None

    def jump(item: LayerFinding) -> float:
        return max(item.grad_ratio or 0.0, item.update_ratio or 0.0)

    ranked = sorted(found.values(), key=lambda f: (-jump(f), _layer_order(f.layer)))
    return ranked


def _where(documents: data.DocumentIndex, doc: int) -> str:
    """A document's origin (its file and line, row or byte), or that it was not recorded."""
    if not documents.recorded:
        return f"{documents.source}: origin not recorded (shards prepared by an older tjx-data)"
    return documents.origin(doc).describe() or documents.source


def _snippet(text: str) -> str:
    flat = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1] + "…"


def _documents(
    record: StepRecord,
    documents: data.DocumentIndex,
    loader: data.PackedLoader,
    tokenizer: data.Tokenizer,
) -> tuple[list[DocumentFinding], float]:
    assert record.probes is not None and record.probes.token_loss is not None
    assert record.positions is not None and record.targets is not None
    losses = record.probes.token_loss
    scored = (record.targets != data.IGNORE_INDEX) & (record.positions >= 0)
    mean = float(losses[scored].mean()) if scored.any() else 0.0
    owner = documents.document_of(record.positions)
    found = []
    for doc in np.unique(owner[scored]).tolist():
        mask = scored & (owner == doc)
        where = record.positions[mask]
        lo, hi = int(where.min()), int(where.max()) + 1
        ids = loader.stream.gather(np.array([lo], np.int64), min(hi - lo, 4 * SNIPPET_CHARS))[0]
        total = float(losses[mask].sum())
        found.append(
            DocumentFinding(
                number=int(doc),
                where=_where(documents, int(doc)),
                tokens=int(mask.sum()),
                mean_loss=total / int(mask.sum()),
                excess=total - mean * int(mask.sum()),
                snippet=_snippet(tokenizer.decode([int(t) for t in ids])),
                rows=sorted({int(r) for r in np.nonzero(mask)[0]}),
            )
        )
    found.sort(key=lambda f: (-f.excess, f.number))
    return found, mean


def _tokens(
    record: StepRecord,
    documents: data.DocumentIndex | None,
    loader: data.PackedLoader | None,
    tokenizer: data.Tokenizer,
) -> list[TokenFinding]:
    assert record.probes is not None and record.probes.token_loss is not None
    assert record.targets is not None
    losses = record.probes.token_loss
    scored = np.asarray(record.targets != data.IGNORE_INDEX)
    order = np.argsort(np.where(scored, -losses, np.inf), axis=None, kind="stable")[:TOP_TOKENS]
    out = []
    for flat in order.tolist():
        row, col = divmod(flat, losses.shape[1])
        if not scored[row, col]:
            break
        position = -1 if record.positions is None else int(record.positions[row, col])
        doc = -1
        if documents is not None and position >= 0:
            doc = int(documents.document_of(np.array([position]))[0])
        before = ""
        if position > 0 and loader is not None:
            lo = max(0, position - 24)
            ids = loader.stream.gather(np.array([lo], np.int64), position - lo)[0]
            before = _snippet(tokenizer.decode([int(t) for t in ids]))[-40:]
        token = _snippet(tokenizer.decode([int(record.targets[row, col])]))
        out.append(TokenFinding(row, col, doc, float(losses[row, col]), token, before))
    return out


def _exclude(found: Sequence[DocumentFinding]) -> list[int]:
    positive = [f for f in found if f.excess > 0]
    total, kept, out = sum(f.excess for f in positive), 0.0, []
    for item in positive[:TOP_DOCUMENTS]:
        out.append(item.number)
        kept += item.excess
        if kept >= EXCLUDE_SHARE * total:
            break
    return out


def findings(replayed: Replayed) -> list[StepFindings]:
    """The findings of each `focus_steps` step."""
    request, out = replayed.request, []
    # A single source's loader (a mixture asks for no document probe): its stream and documents
    loader = replayed.loader if isinstance(replayed.loader, data.PackedLoader) else None
    documents = None
    if loader is not None and any(p in request.probes for p in ("documents", "tokens")):
        documents = data.load_documents(loader.index.path)
    tokenizer = replayed.bundle.tokenizer
    for step in focus_steps(replayed):
        record = replayed.steps[step]
        item = StepFindings(step, record.loss)
        probes = record.probes
        losses = None if probes is None else probes.token_loss
        if losses is not None and record.targets is not None and tokenizer is not None:
            scored = record.targets != data.IGNORE_INDEX
            counts = np.maximum(scored.sum(axis=1), 1)
            item.sequences = (losses.sum(axis=1) / counts).tolist()
            if documents is not None and loader is not None and record.positions is not None:
                docs, item.token_mean = _documents(record, documents, loader, tokenizer)
                item.documents = docs[:TOP_DOCUMENTS] if "documents" in request.probes else []
                item.exclude = _exclude(docs)
            if "tokens" in request.probes:
                item.tokens = _tokens(record, documents, loader, tokenizer)
        item.layers = _layers(replayed, record)[:TOP_LAYERS]
        out.append(item)
    return out


def probe_values(replayed: Replayed) -> dict[str, object]:
    """Every replayed step's loss and every probed value as plain JSON (``probes.json``): norms,
    maxima by layer, each sequence's loss."""
    steps: dict[str, object] = {}
    for number, record in sorted(replayed.steps.items()):
        entry: dict[str, object] = {"loss": record.loss, "logged": record.logged}
        probes = record.probes
        if probes is not None:
            entry |= probes.norms
            for name, values in probes.maxima.items():
                entry[name] = dict(zip(replayed.layers, values, strict=False))
            if probes.token_loss is not None and record.targets is not None:
                counts = np.maximum((record.targets != data.IGNORE_INDEX).sum(axis=1), 1)
                entry["sequence_loss"] = (probes.token_loss.sum(axis=1) / counts).tolist()
        steps[str(number)] = entry
    return {"run": str(replayed.request.run_dir), "steps": steps}
