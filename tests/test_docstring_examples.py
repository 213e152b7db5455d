"""The public API's docstrings: one form for all (summary, Args, Returns, Example::), and the examples run.

The examples are doctests on the bundled default at small sizes: they fail here when an output they show
changes.
"""

from __future__ import annotations

import doctest
import inspect

import pytest

import gan_probe
from gan_probe import api

FUNCTIONS = [getattr(api, name) for name in api.__all__]
PARAMS = [gan_probe.ChebyshevParams, gan_probe.SLQParams, gan_probe.TaylorParams]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _name(obj: object) -> str:
    return getattr(obj, "__name__", repr(obj))


@pytest.mark.parametrize("obj", FUNCTIONS + PARAMS, ids=_name)
def test_docstring_has_the_common_form(obj):
    doc = inspect.getdoc(obj) or ""
    summary = doc.splitlines()[0] if doc else ""
    assert summary.endswith(".") and len(summary) <= 120, f"{_name(obj)}: a one-line summary first"
    assert "\nArgs:\n" in doc, f"{_name(obj)}: an Args section"
    if inspect.isfunction(obj):
        assert "\nReturns:\n" in doc, f"{_name(obj)}: a Returns section"
        documented = {line.split(":")[0].strip() for line in doc.split("Args:")[1].split("Returns:")[0].splitlines()}
        names = {n for part in documented for n in part.split(", ")}
        missing = set(inspect.signature(obj).parameters) - names
        assert not missing, f"{_name(obj)}: arguments without a line in Args: {sorted(missing)}"
    assert "\nExample::\n" in doc and ">>> " in doc.split("Example::")[1], f"{_name(obj)}: a runnable example"


@pytest.mark.parametrize("obj", [api, *PARAMS], ids=_name)
def test_docstring_examples_run(obj):
    """The module's examples (its docstring and every function's) and each estimator's parameters' example."""
    finder = doctest.DocTestFinder(recurse=obj is api)
    tests = [t for t in finder.find(obj, globs={}) if t.examples]
    assert tests, f"{_name(obj)} has no examples"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} of {result.attempted} examples failed"


def test_a_failing_example_is_reported():
    """The runner above can fail: an example whose shown output is wrong counts as failed."""

    def wrong() -> None:
        """Summary.

        >>> 1 + 1
        3
        """

    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in doctest.DocTestFinder().find(wrong, globs={}):
        runner.run(test, out=lambda _text: None)
    assert runner.summarize(verbose=False).failed == 1
