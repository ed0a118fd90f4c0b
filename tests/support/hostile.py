"""Hostile desired-state trees, as hypothesis strategies, for the fuzz test and benchmark.

A tree is a list of ``(relative path as bytes, file content as bytes)``: the
paths may hold non-UTF-8 names, deep folders, dot-files and files outside
``users/``; the contents are YAML built to hurt (huge and sexagesimal
numbers, anchors, tags, deep nesting, thousands of ``---``, duplicated
``model_id``s, non-mapping documents, bytes that are not UTF-8) mixed with
valid model files and small mutations of them. :func:`write_tree` puts one
on disk. Used by tests/unit/test_fuzz.py and benchmarks/fuzz_validate.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import strategies as st

VALID = (
    "model_id: m{n}\nmodel_source: $HOME/common/hf/tiny\nnum_replicas: 1\n"
    "cpus_per_replica: 1\nengine_kwargs:\n  max_model_len: 256\n"
    "env:\n  VLLM_LOGGING_LEVEL: INFO\n"
)
FIELDS = ("model_id", "model_source", "num_replicas", "gpus_per_replica", "cpus_per_replica",
          "autoscaling", "engine_kwargs", "env", "enabled", "apiVersion", "kind")

numbers = st.one_of(
    st.integers(-(2**80), 2**80).map(str),
    st.integers(300, 5000).map(lambda n: "1" + "0" * n),  # beyond float range
    st.integers(2, 3000).map(lambda n: "1" + ":00" * n),  # sexagesimal (YAML 1.1)
    st.sampled_from([".nan", ".inf", "-.inf", "1e999", "-1e999", "0x" + "f" * 80, "0o777",
                     "1_000", "+1", "-0", "1.5", "2.0", "0b101"]),
)
scalars = st.one_of(
    numbers,
    st.sampled_from(["true", "no", "null", "~", "''", "'a: b'", '"\\x00"', "!!binary AAAA",
                     "!!python/object:os.system x", "!!str 3", "&a 1", "*a", "{}", "[]",
                     "$HOME/../bob", "/etc/passwd", "etc/passwd", "org/model", "$HOME/x",
                     "https://user:token@host/x", "sk-" + "a" * 30]),
    st.text(max_size=12).map(lambda s: repr(s)),
)
keys = st.one_of(st.sampled_from(FIELDS), st.sampled_from(
    ["Model", "model ", "trust-remote-code", "worker_cls", "LD_PRELOAD", "min_replicas",
     "max_replicas", "max_model_len", "<<", "? x", "'a\\u0000'"]), st.text(max_size=8))


def _nested(depth: int) -> str:
    return "".join(f"{' ' * i}k{i}:\n" for i in range(depth)) + " " * depth + "v: 1\n"


@st.composite
def documents(draw: st.DrawFn) -> str:
    """One YAML document's text (not necessarily valid YAML)."""
    kind = draw(st.integers(0, 5))
    n = draw(st.integers(0, 9))
    if kind == 0:
        return VALID.format(n=n)
    if kind == 1:  # a valid file with one field replaced by something hostile
        field = draw(st.sampled_from(FIELDS))
        value = draw(scalars)
        lines = [ln for ln in VALID.format(n=n).splitlines() if not ln.startswith(field)]
        return "\n".join([*lines, f"{field}: {value}"]) + "\n"
    if kind == 2:  # random mapping of hostile keys and values
        pairs = draw(st.lists(st.tuples(keys, scalars), max_size=8))
        return "".join(f"{k}: {v}\n" for k, v in pairs)
    if kind == 3:  # shapes: non-mapping documents, deep nesting, flow junk
        return draw(st.sampled_from([
            "- a\n- b\n", "just a string\n", "42\n", "[env: {OPENAI_API_KEY: sk-x}]\n",
            _nested(draw(st.integers(10, 200))), "a: [" * draw(st.integers(1, 300)) + "\n",
            "a: &x [1]\nb: *x\n", "!!python/name:os.system\n", "? [a]\n: b\n", "a: b: c\n",
        ]))
    if kind == 4:  # a mutated valid file: bytes dropped, duplicated or inserted
        text = VALID.format(n=n)
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 8)))
        junk = draw(st.text(alphabet=":-[]{}&*!|>'\"#%@` \n\t", max_size=4))
        return text[:i] + junk + text[j:]
    return "a: [\n" + "---\n" * draw(st.integers(1, 5000))  # the multi-document bomb


@st.composite
def file_contents(draw: st.DrawFn) -> bytes:
    docs = draw(st.lists(documents(), min_size=1, max_size=6))
    if draw(st.integers(0, 19)) == 0:  # the same model_id many times over
        docs = [VALID.format(n=0)] * draw(st.integers(50, 2000))
    text = "---\n".join(docs).encode()
    if draw(st.integers(0, 29)) == 0:
        text = text.replace(b"m", b"\xff", 1)  # not UTF-8
    return text


names = st.one_of(
    st.sampled_from([b"m.yaml", b"a.yml", b"n.yaml", b".hidden.yaml", b"readme.md", b"x.YAML"]),
    st.binary(min_size=1, max_size=6)
    .filter(lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))
    .map(lambda b: b + b".yaml"),
)


@st.composite
def paths(draw: st.DrawFn) -> bytes:
    where = draw(st.integers(0, 9))
    if where == 0:
        return draw(names)  # top level
    if where == 1:
        return b"stray/" + draw(names)
    user = draw(st.sampled_from([b"alice", b"bob", b"Alice", b"\xffx", b"a" * 40, b".git"]))
    depth = draw(st.sampled_from([0, 0, 0, 1, 2, 40]))
    folders = b"".join(b"d%d/" % i for i in range(depth))
    return b"users/" + user + b"/" + folders + draw(names)


trees = st.lists(st.tuples(paths(), file_contents()), min_size=1, max_size=4,
                 unique_by=lambda pc: pc[0])


def write_tree(root: Path, tree: list[tuple[bytes, bytes]]) -> None:
    """Write ``tree`` under ``root`` (which gets an empty ``users/`` in any case)."""
    base = os.fsencode(root)
    os.makedirs(os.path.join(base, b"users"), exist_ok=True)
    for rel, content in tree:
        path = os.path.join(base, rel)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(content)
        except (IsADirectoryError, NotADirectoryError, FileExistsError):
            continue  # a name used both as a file and a folder: keep the first


def remove_tree(top: Path) -> None:
    """``shutil.rmtree`` without recursion: it raises RecursionError on the
    1,000 nested folders a hostile tree may hold."""
    stack = [(os.fspath(top), False)]
    while stack:
        path, emptied = stack.pop()
        if emptied:
            os.rmdir(path)
            continue
        stack.append((path, True))
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, False))
            else:
                os.unlink(entry.path)
