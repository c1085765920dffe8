"""Real English text offline: sentences from the docstrings of the Python standard library."""

from __future__ import annotations

import importlib
import inspect
import random
import re
import warnings

import pandas as pd

# Pure-Python, import-safe modules with plenty of prose in their docstrings.
STDLIB_MODULES = (
    "argparse", "asyncio", "base64", "bisect", "calendar", "collections", "concurrent.futures",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib",
    "email", "enum", "fractions", "ftplib", "functools", "gettext", "glob", "gzip", "heapq",
    "hmac", "html", "http.client", "http.server", "imaplib", "inspect", "ipaddress", "json",
    "logging", "mailbox", "mimetypes", "multiprocessing", "numbers", "operator", "optparse",
    "os", "pathlib", "pickle", "pkgutil", "platform", "poplib", "pprint", "pydoc", "queue",
    "random", "re", "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "smtplib",
    "socket", "socketserver", "ssl", "statistics", "string", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace", "traceback", "typing",
    "unittest", "urllib.parse", "urllib.request", "uuid", "warnings", "weakref", "xml.dom",
    "zipfile", "zoneinfo",
)  # fmt: skip

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _docstrings(module_name: str) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = importlib.import_module(module_name)
        except Exception:  # a module unavailable on this build of Python: skip it
            return []
        return _module_docs(module)


def _module_docs(module) -> list[str]:
    docs = [inspect.getdoc(module) or ""]
    for _, member in inspect.getmembers(module):
        if getattr(member, "__module__", None) != module.__name__:
            continue
        docs.append(inspect.getdoc(member) or "")
        if inspect.isclass(member):
            for _, method in inspect.getmembers(member, inspect.isfunction):
                docs.append(inspect.getdoc(method) or "")
    return docs


def _sentences(doc: str) -> list[str]:
    out = []
    for paragraph in re.split(r"\n\s*\n", doc):
        raw = paragraph.splitlines()
        lines = [ln.strip() for ln in raw]
        # Code samples (indented), tables and argument lists are not prose.
        if any(ln[:1].isspace() for ln in raw) or any(
            ln.startswith((">>>", "...", "|", "-", "*", ":")) for ln in lines
        ):
            continue
        text = " ".join(ln for ln in lines if ln)
        for sentence in _SENTENCE_END.split(text):
            sentence = sentence.strip()
            words = sentence.split()
            if 4 <= len(words) <= 80 and sentence[0].isalpha() and "=" not in sentence:
                out.append(sentence)
    return out


def stdlib_sentences(*, modules: tuple[str, ...] = STDLIB_MODULES) -> list[str]:
    """Deduplicated sentences, in a stable order (module list order, then first appearance)."""
    seen: dict[str, None] = {}
    for name in modules:
        for doc in _docstrings(name):
            for sentence in _sentences(doc):
                seen.setdefault(sentence, None)
    return list(seen)


def text_table(rows: int, *, seed: int = 0) -> pd.DataFrame:
    """``rows`` rows of (doc_id, text): the sentences shuffled with ``seed``, repeated when
    ``rows`` exceeds the number of distinct sentences (doc_id stays unique)."""
    if rows < 1:
        raise ValueError(f"rows must be a positive number, got {rows}")
    sentences = stdlib_sentences()
    random.Random(seed).shuffle(sentences)
    texts = [sentences[i % len(sentences)] for i in range(rows)]
    return pd.DataFrame({"doc_id": range(rows), "text": texts}).astype({"doc_id": "int64"})


def labelled_sentences(modules: tuple[str, ...]) -> pd.DataFrame:
    """A real labelled text set made offline: (text, label) rows, each sentence of a module's
    docstrings labelled with the module's position in ``modules``. A sentence found in more
    than one of the modules is left out (its label would be ambiguous)."""
    seen: dict[str, set[int]] = {}
    for label, name in enumerate(modules):
        for doc in _docstrings(name):
            for sentence in _sentences(doc):
                seen.setdefault(sentence, set()).add(label)
    rows = [(text, next(iter(labels))) for text, labels in seen.items() if len(labels) == 1]
    if not rows:
        raise ValueError(f"no docstring sentences found in modules {list(modules)}")
    return pd.DataFrame(rows, columns=["text", "label"]).astype({"label": "int64"})
