"""Docstring corpora for summarization: a docstring's first paragraph is its author's summary of the rest.

Two corpora of (document, summary) pairs, both read from what is installed, never downloaded:

- ``load_docstring_pairs``: the Python standard library's docstrings (imported modules). This is the
  benchmark set (``bench/summarize_rouge.py``) and the test split of the package corpus.
- ``load_package_docstrings``: the docstrings of the installed packages in ``DOCSTRING_PACKAGES``, read
  from their source files with ``ast`` (nothing is imported or run), to train a summarizer on pairs that
  the benchmark never scores. Pairs that also occur in the standard library are dropped.
"""

import ast
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Value

# ---------------------------------------------------------------------------------------------------
# The standard library: the benchmark pairs.
# ---------------------------------------------------------------------------------------------------

# Pure-Python modules with well-written docstrings, present on every CPython >= 3.10. The order fixes
# the order of the pairs.
# fmt: off
DOCSTRING_MODULES = (
    "abc", "argparse", "ast", "asyncio", "base64", "bdb", "bisect", "calendar", "cmd", "code", "codecs",
    "codeop", "collections", "colorsys", "compileall", "concurrent.futures", "configparser", "contextlib",
    "copy", "cProfile", "csv", "dataclasses", "datetime", "difflib", "dis", "doctest",
    "email.headerregistry", "email.message", "email.parser", "email.policy", "email.utils", "enum",
    "filecmp", "fileinput", "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext", "glob",
    "graphlib", "gzip", "heapq", "hmac", "html.parser", "http.client", "http.cookiejar", "http.server",
    "imaplib", "importlib.metadata", "inspect", "ipaddress", "json", "linecache", "locale", "logging",
    "logging.handlers", "mailbox", "mimetypes", "modulefinder", "multiprocessing.managers",
    "multiprocessing.pool", "netrc", "numbers", "operator", "optparse", "os", "pathlib", "pdb", "pickle",
    "pkgutil", "platform", "plistlib", "poplib", "pprint", "profile", "pstats", "py_compile", "pydoc",
    "queue", "random", "re", "reprlib", "runpy", "sched", "secrets", "selectors", "shelve", "shlex",
    "shutil", "smtplib", "socket", "socketserver", "statistics", "string", "subprocess", "sysconfig",
    "tabnanny", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace", "traceback",
    "tracemalloc", "types", "typing", "unittest", "unittest.mock", "urllib.parse", "urllib.request",
    "urllib.robotparser", "uuid", "warnings", "wave", "weakref", "wsgiref.handlers",
    "wsgiref.simple_server", "xml.dom.minidom", "xml.dom.pulldom", "xml.etree.ElementTree",
    "xml.sax.saxutils", "xmlrpc.client", "xmlrpc.server", "zipfile", "zipimport", "zoneinfo",
)
# fmt: on

# A first paragraph that is a call signature ("sorted(iterable, /, ...)") is not a summary.
_SIGNATURE = re.compile(r"^[\w.]+\(.*\)(\s*->.*)?$")
# Shorter first paragraphs are headings ("Constructor.", "Covariance"); longer ones are descriptions.
_MIN_SUMMARY_WORDS = 3
_MAX_SUMMARY_WORDS = 60
# An underlined title ("ast\n~~~") is a heading too.
_UNDERLINE = re.compile(r"[-=~^*]{3,}")


def _documented_objects(module) -> list:
    """The module, then its public functions and classes (and their methods), in name order."""
    prefix = module.__name__
    objects = [module]
    for name, obj in sorted(vars(module).items()):
        home = getattr(obj, "__module__", None) or ""
        is_local = home == prefix or home.startswith(prefix + ".")
        if name.startswith("_") or not is_local or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        objects.append(obj)
        if inspect.isclass(obj):
            for attr, member in sorted(vars(obj).items()):
                public = not attr.startswith("_") or attr == "__init__"
                is_method = inspect.isfunction(member) or isinstance(
                    member, (classmethod, staticmethod, property)
                )
                if public and is_method:
                    objects.append(member)
    return objects


def _is_pair(summary: str, body: str, min_body_words: int) -> bool:
    return (
        _MIN_SUMMARY_WORDS <= len(summary.split()) <= _MAX_SUMMARY_WORDS
        and not _SIGNATURE.match(summary)
        and not _UNDERLINE.search(summary)
        and len(body.split()) >= min_body_words
    )


def split_docstring(doc: str) -> tuple[str, str]:
    """(summary, body): the first paragraph on one line, and the paragraphs after it."""
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(doc).strip(), maxsplit=1)
    summary = " ".join(paragraphs[0].split())
    body = paragraphs[1].strip() if len(paragraphs) > 1 else ""
    return summary, body


@functools.lru_cache(maxsize=1)
def _docstrings() -> tuple[str, ...]:
    """The own docstrings of ``DOCSTRING_MODULES`` and their members, each object once, in order."""
    docs, seen = [], set()
    # Touching deprecated aliases (typing.io, say) warns; the warning means nothing to the caller.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for module_name in DOCSTRING_MODULES:
            try:
                module = importlib.import_module(module_name)
            except ImportError:  # a CPython build without e.g. ssl or zlib
                continue
            # The same object is reachable from a package and its submodule. Own __doc__ only, since
            # inspect.getdoc would give every undocumented method its base class's docstring.
            for obj in _documented_objects(module):
                if id(obj) not in seen and isinstance(obj.__doc__, str):
                    seen.add(id(obj))
                    docs.append(obj.__doc__)
    return tuple(docs)


@functools.lru_cache(maxsize=4)
def _docstring_pairs(min_body_words: int) -> tuple[tuple[str, str], ...]:
    pairs = {}  # (document, summary) -> None: deduplicated, in first-seen order
    for doc in _docstrings():
        summary, body = split_docstring(doc)
        if _is_pair(summary, body, min_body_words):
            pairs[(body, summary)] = None
    return tuple(pairs)


def load_docstring_pairs(max_pairs: int | None = None, min_body_words: int = 30) -> Dataset:
    """Document/summary pairs from standard-library docstrings: the offline summarization corpus.

    Each function, class, method and module docstring of ``DOCSTRING_MODULES`` gives one pair whose
    ``summary`` is the first paragraph (the docstring's own summary line) and whose ``document`` is the
    rest. Pairs whose document has fewer than ``min_body_words`` words are dropped. The order (module
    list order, then names) and so the first ``max_pairs`` are the same in every run on one Python.
    """
    pairs = _docstring_pairs(min_body_words)[:max_pairs]
    return Dataset.from_dict(
        {"document": [document for document, _ in pairs], "summary": [summary for _, summary in pairs]},
        features=Features({"document": Value("string"), "summary": Value("string")}),
    )


# ---------------------------------------------------------------------------------------------------
# Installed packages: the training pairs.
# ---------------------------------------------------------------------------------------------------

# Packages that this project's requirements install (directly, or as a dependency of one: torch brings
# networkx and sympy, datasets pandas, scikit-learn scipy and numpy, rouge-score nltk), each with a
# license that allows the use (Apache-2.0, BSD-3-Clause, LGPL-2.1 for gensim). Their docstrings are
# mostly NumPy or Google style: the summary line, then prose, parameters and examples.
# fmt: off
DOCSTRING_PACKAGES = (
    "transformers", "torch", "networkx", "sympy", "pandas", "sklearn", "scipy", "numpy", "datasets",
    "huggingface_hub", "accelerate", "matplotlib", "nltk", "gensim",
)
# fmt: on
# Their own test suites are assertions, not documentation.
_SKIPPED_FOLDERS = frozenset({"tests", "test", "testing"})
# Every 20th pair (by a hash of its summary, so that the split does not depend on the package versions
# or on the order of the files) is the validation split.
VALIDATION_EVERY = 20


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    """Import name -> the distributions that provide it (a scan of every installed one: done once)."""
    return importlib.metadata.packages_distributions()


def _distribution_version(package: str) -> str:
    for distribution in _distributions().get(package, [package]):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def _source_docstrings(path: Path) -> list[str]:
    """Docstrings of a source file's module, classes and functions, in file order; [] if it does not parse."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError):  # templates and other non-Python .py files
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    nodes = sorted(
        (node for node in ast.walk(tree) if isinstance(node, kinds)), key=lambda n: getattr(n, "lineno", 0)
    )
    return [doc for node in nodes if (doc := ast.get_docstring(node, clean=False))]


@functools.lru_cache(maxsize=4)
def _package_pairs(packages: tuple[str, ...], min_body_words: int) -> tuple[tuple[str, str, str], ...]:
    """(document, summary, "package==version") of each package, deduplicated, in package and file order."""
    stdlib = _docstring_pairs(min_body_words)
    taken = {document for document, _ in stdlib} | {summary for _, summary in stdlib}
    pairs = {}
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ValueError(f"Package {package!r} is not installed; install it or leave it out of packages.")
        root = Path(spec.origin).parent
        source = f"{package}=={_distribution_version(package)}"
        for path in sorted(root.rglob("*.py")):
            if _SKIPPED_FOLDERS.intersection(path.relative_to(root).parts[:-1]):
                continue
            for doc in _source_docstrings(path):
                summary, body = split_docstring(doc)
                if _is_pair(summary, body, min_body_words) and not {summary, body} & taken:
                    pairs.setdefault((body, summary), source)
    return tuple((body, summary, source) for (body, summary), source in pairs.items())


def load_package_docstrings(
    packages: Sequence[str] = DOCSTRING_PACKAGES, min_body_words: int = 30
) -> DatasetDict:
    """Document/summary pairs from installed packages' docstrings, to train a summarizer.

    ``train`` and ``validation`` come from ``packages`` (each pair's ``package`` column says which, with
    its version), split by a hash of the summary; ``test`` is the standard-library set
    (``load_docstring_pairs``), which no pair of the other splits repeats. Reading all default packages'
    sources takes about two minutes on a small CPU; the result is cached in the process.
    """
    features = Features({"document": Value("string"), "summary": Value("string"), "package": Value("string")})
    splits = {"train": [], "validation": []}
    for document, summary, source in _package_pairs(tuple(packages), min_body_words):
        held_out = zlib.crc32(summary.encode()) % VALIDATION_EVERY == 0
        splits["validation" if held_out else "train"].append((document, summary, source))
    test = load_docstring_pairs(min_body_words=min_body_words)
    return DatasetDict(
        {
            **{
                name: Dataset.from_dict(
                    {key: [row[i] for row in rows] for i, key in enumerate(features)}, features=features
                )
                for name, rows in splits.items()
            },
            "test": Dataset.from_dict(
                {**test.to_dict(), "package": ["python-stdlib"] * len(test)}, features=features
            ),
        }
    )
