import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatforge.infer.tools import Limits, Tools, run_python


@pytest.mark.parametrize("code", [
    "1 + 2 * 3 - 4 / 8", "7 // 2, 7 % 3, -2 ** 4", "2 ** 100", "(3 > 2) and (2 >= 2) and 1 != 2", "abs(-3.5)",
    "round(2 / 3, 3)", "max(3, 7, 2) + min([4, 1])", "sum(range(101))", "sorted([3, 1, 2], reverse=True)",
    "len('hello world')", "'strawberry'.count('r')", "'Hello'.upper() + 'X'.lower()", "'a,b,,c'.split(',')",
    "'banana'.replace('an', 'AN')", "'abcdef'[1:4], 'abcdef'[::-1], 'abcdef'[-1]", "[1, 2, 3][1]",
    "[i * i for i in range(10) if i % 3 == 0]", "sum(x for x in range(10))", "{'a': 1, 'b': 2}['b']",
    "'-'.join(['x', 'y', 'z'])", "1 if 2 < 1 else 'no'", "list(zip([1, 2], 'ab'))", "divmod(17, 5)",
    "'x' in 'xyz' and 3 not in [1, 2]", "int('42') + float('1.5')", "1 < 2 < 3 < 2",
])
def test_the_safe_subset_agrees_with_python(code):
    value = eval(code)  # the test's oracle, on trusted input
    assert run_python(code) == (value if isinstance(value, str) else repr(value))


def test_statements_names_and_strings():
    assert run_python("x = 6\ny = x * 7\ny") == "42"
    assert run_python("'plain text'") == "plain text"  # a string result is shown as is
    assert run_python("x = 1") == ""
    assert run_python("1/0") == "Error: ZeroDivisionError: division by zero"


ESCAPES = [
    "import os", "from os import system", "__import__('os').system('touch /tmp/pwned')", "eval('1+1')",
    "exec('x=1')", "open('/etc/passwd').read()", "open('/tmp/pwned', 'w')", "compile('1', 'f', 'eval')",
    "().__class__.__bases__[0].__subclasses__()", "''.__class__", "[].__len__()", "getattr(1, '__class__')",
    "globals()", "locals()", "vars()", "type(1)", "lambda: 1", "(lambda: 1)()", "def f(): pass",
    "class A: pass", "while True: pass", "for i in range(10): pass", "with open('x') as f: pass",
    "try:\n  1\nexcept: 0", "del x", "x.y = 1", "x[0] = 1", "async def f(): pass", "b'bytes'",
    "f'{().__class__}'", "'{0.__class__}'.format(1)", "'%s' % 1", "print(1)", "input()", "breakpoint()",
    "help()", "exit()", "9 ** 9 ** 9", "2 ** 100000", "pow(10, 10 ** 6)", "10 ** 4000 * 10 ** 4000",
    "'a' * 10 ** 10", "[0] * 10 ** 9", "'ab' * 9999", "[1] * 5000 + [2] * 6000", "'x'.replace('', 'y' * 5000)",
    "'-'.join(['a' * 5000] * 10)", "range(10 ** 9)", "list(range(10 ** 12))", "[x for x in range(10 ** 9)]",
    "[[1] * 10000 for i in range(10000)]", "sum(1 for a in range(10000) for b in range(10000))",
    "str(['a' * 9999] * 10000)", "-" * 1999 + "1", "(" * 5000 + ")" * 5000, "[" * 150 + "]" * 150,
    "x" * 3000, "not " * 500 + "1", "int('9' * 5000)", "10.0 ** 400", "{i: i for i in range(20000)}",
]


@pytest.mark.parametrize("code", ESCAPES)
def test_escape_attempts_are_refused_within_the_limits(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    out = run_python(code)
    assert time.perf_counter() - t0 < 2 * Limits().seconds
    assert out.startswith("Error: ") and "\n" not in out and len(out) <= Limits().output_chars + 1
    assert not list(tmp_path.iterdir())  # nothing written


def test_time_and_output_limits_are_configurable():
    out = run_python("[sorted(range(10000)) for i in range(10000)]", Limits(seconds=0.05, allocated=10**9))
    assert out == "Error: took longer than 0.05 s"
    assert run_python("'ab' * 300", Limits(output_chars=10)) == "ababababab…"
    assert run_python("1 + 1", Limits(steps=2)) == "Error: more than 2 steps"


# Arithmetic over small ints and floats: whatever Python computes, we compute the same.
atoms = st.one_of(st.integers(-50, 50), st.floats(-10, 10, allow_nan=False).map(lambda f: round(f, 3)))
exprs = st.recursive(atoms.map(repr), lambda inner: st.tuples(inner, st.sampled_from(
    ["+", "-", "*", "/", "//", "%", "**", "<", "==", "and", "or"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(exprs)
def test_random_arithmetic_matches_python(code):
    ours = run_python(code)
    if ours.startswith("Error: the power"):  # refused as too large: Python itself may not finish (50 ** 50 ** 50)
        return
    try:
        expected = repr(eval(code))
    except Exception as e:  # noqa: BLE001 - any Python error must come back as our one-line error
        assert ours.startswith(f"Error: {type(e).__name__}")
        return
    assert ours == expected


def test_tools_runtime_reports_disabled_tools_and_search_failures():
    class Down:
        def search(self, query, k):
            raise OSError("connection refused")

    assert Tools().run("python", "2+2") == "4"
    assert Tools(python=False).run("python", "2+2") == "Error: the python tool is not enabled"
    assert Tools().run("search", "x") == "Error: the search tool is not enabled"
    assert Tools(search=Down()).run("search", "x") == "Error: search failed: connection refused"
