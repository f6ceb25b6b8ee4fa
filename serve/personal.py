"""Per-person models in the service: `<models_dir>/<subject>.onnx`, loaded on demand, least recently used dropped.

A request that names a subject is scored by that person's model (stages/personalize.py writes it)
when there is one, else by the generic model. A person's model must promise what the generic one
promises (labels, input contract, preprocessing) and name the requested subject; a file that does
not is refused rather than served. At most `cache_size` per-person onnxruntime sessions stay
loaded; a model file replaced on disk is reloaded on its next use.
"""
from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from pathlib import Path

import onnx

from har import subject as subject_id
from har.modelfile import ModelCard, ModelFileError
from har.runtime import ModelRuntime
from serve.validation import RequestError

log = logging.getLogger("serve")


def check_subject(subject: str) -> str:
    """har.subject's check, refused as an HTTP answer (422)."""
    try:
        return subject_id.check_subject(subject)
    except subject_id.SubjectIdError as error:
        raise RequestError(422, str(error)) from None


class PersonalModels:
    """Subject id -> that person's ModelRuntime, or None (the generic model answers)."""

    def __init__(self, folder: Path | str | None, generic: ModelCard, *, cache_size: int, threads: int = 1):
        if cache_size < 1:
            raise ValueError(f"serve.personal.cache_size must be at least 1, got {cache_size}")
        self.folder = Path(folder) if folder else None
        self.generic, self.cache_size, self.threads = generic, cache_size, threads
        self._cache: OrderedDict[str, tuple[int, ModelRuntime]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._cache)

    def runtime_for(self, subject: str | None) -> ModelRuntime | None:
        """The person's runtime, or None when no subject is given or the person has no model."""
        if subject is None or self.folder is None:
            return None
        path = self.folder / f"{check_subject(subject)}.onnx"
        try:
            modified = path.stat().st_mtime_ns
        except FileNotFoundError:
            with self._lock:
                self._cache.pop(subject, None)
            return None
        with self._lock:
            cached = self._cache.get(subject)
            if cached is not None and cached[0] == modified:
                self._cache.move_to_end(subject)
                return cached[1]
        runtime = self._load(path, subject)
        with self._lock:
            self._cache[subject] = (modified, runtime)
            self._cache.move_to_end(subject)
            while len(self._cache) > self.cache_size:
                dropped, _ = self._cache.popitem(last=False)
                log.info("personal model of %s unloaded (cache of %d)", dropped, self.cache_size)
        return runtime

    def _load(self, path: Path, subject: str) -> ModelRuntime:
        try:
            runtime = ModelRuntime(path, threads=self.threads)
            named = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}.get("subject")
            card, generic = runtime.card, self.generic
            if named != subject:
                raise ModelFileError(f"{path}: metadata names subject {named!r}, not {subject!r}")
            for what in ("labels", "input_contract", "preprocessing"):
                if json.dumps(getattr(card, what), sort_keys=True) != json.dumps(getattr(generic, what), sort_keys=True):
                    raise ModelFileError(f"{path}: its {what} differ from the generic model's")
        except ModelFileError as error:
            log.error("personal model refused: %s", error)
            raise RequestError(503, f"the personal model of subject {subject!r} cannot be served: "
                                    f"{str(error).split(': ', 1)[-1]}") from None
        log.info("personal model of %s loaded: %s version %s", subject, runtime.card.name, runtime.card.version)
        return runtime


def answered_by(card: ModelCard, subject: str | None, personal: bool) -> dict:
    """What every answer says about who scored it."""
    return {"model": card.name, "version": card.version, "subject": subject, "personal": personal}
