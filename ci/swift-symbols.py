#!/usr/bin/env python3
"""Checks that the Swift layer in ios/ uses only what the generated Swift bindings define.

There is no Swift compiler on the CI machine, so this is a textual check, made reliable
by a convention the Swift layer follows (see ios/Sources/MSocket/MSocket.swift):
generated names are written `MSocketFFI.Name`, and generated objects are held in
properties named `ffi`. Checked:

  * every `MSocketFFI.Name` is declared in the bindings (type, protocol or function), and
    every `MSocketFFI.Name.member` is a case or function of it;
  * every call `ffi.method(label: ...)` names a function of the bindings with exactly
    those argument labels;
  * every function the layer implements with generated types in its signature (protocol
    conformances such as `onEvent(event:)`) exists in the bindings with that label;
  * every `case .name` pattern and `.name(` construction refers to an enum case declared
    in the bindings or in the layer itself;
  * every memberwise construction of a generated struct, `Name(label: ...)`, uses labels
    that are fields of that struct, in their order.

Usage: swift-symbols.py GENERATED.swift LAYER_DIR
"""

import re
import sys
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def top_labels(args):
    """Argument labels of a call's argument text (top-level `label:` only)."""
    labels, depth, current = [], 0, ""
    for ch in args:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            labels.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        labels.append(current)
    out = []
    for part in labels:
        m = re.match(r"\s*(" + IDENT + r")\s*:(?!:)", part)
        out.append(m.group(1) if m else "_")
    return out


def call_args(text, start):
    """The text between the parenthesis at `start` and its match."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return ""


def main():
    generated = strip_comments(Path(sys.argv[1]).read_text())
    layer_files = sorted(Path(sys.argv[2]).rglob("*.swift"))
    if not layer_files:
        sys.exit(f"swift-symbols: no Swift files under {sys.argv[2]}")

    types = set(re.findall(r"(?:class|struct|enum|protocol|typealias)\s+(" + IDENT + ")", generated))
    functions = {}
    for m in re.finditer(r"func\s+(" + IDENT + r")\s*\(", generated):
        functions.setdefault(m.group(1), []).append(top_labels(call_args(generated, m.end() - 1)))
    cases = set(re.findall(r"\bcase\s+(" + IDENT + ")", generated))
    struct_fields = {}
    for m in re.finditer(r"public struct (" + IDENT + r")\b[^{]*\{(.*?)\n\}", generated, flags=re.S):
        struct_fields[m.group(1)] = re.findall(r"public (?:var|let) (" + IDENT + ")", m.group(2))

    # Enum cases the layer declares itself (`case a, b(x: T), c`), in any of its files.
    own_cases = set()
    for path in layer_files:
        for decl in re.findall(r"\bcase\s+([^\n:=]*?)\s*(?:\n|$)", strip_comments(path.read_text())):
            own_cases.update(re.findall(r"(?:^|,)\s*(" + IDENT + ")", re.sub(r"\([^)]*\)", "", decl)))

    problems, used = [], 0
    for path in layer_files:
        text = strip_comments(path.read_text())
        aliases = dict(re.findall(r"typealias\s+(" + IDENT + r")\s*=\s*MSocketFFI\.(" + IDENT + ")", text))

        def where(pos):
            return f"{path}:{text.count(chr(10), 0, pos) + 1}"

        for m in re.finditer(r"\bMSocketFFI\.(" + IDENT + r")(?:\.(" + IDENT + r"))?", text):
            used += 1
            name, member = m.group(1), m.group(2)
            if name not in types and name not in functions:
                problems.append(f"{where(m.start())}: MSocketFFI.{name} is not in the bindings")
            elif member and member not in cases and member not in functions:
                problems.append(f"{where(m.start())}: MSocketFFI.{name}.{member} is not in the bindings")

        for m in re.finditer(r"\bffi\.(" + IDENT + r")\s*\(", text):
            used += 1
            name, labels = m.group(1), top_labels(call_args(text, m.end() - 1))
            if name not in functions:
                problems.append(f"{where(m.start())}: ffi.{name}(...) is not a function of the bindings")
            elif labels not in functions[name]:
                problems.append(
                    f"{where(m.start())}: ffi.{name} called with labels {labels}; the bindings have {functions[name]}"
                )

        for m in re.finditer(r"func\s+(" + IDENT + r")\s*\(([^)]*MSocketFFI\.[^)]*)\)", text):
            used += 1
            name, labels = m.group(1), top_labels(m.group(2))
            if name not in functions or labels not in functions[name]:
                problems.append(f"{where(m.start())}: func {name}({', '.join(labels)}:) is not in the bindings")

        for m in re.finditer(r"\bcase\s+(?:let\s+)?\.(" + IDENT + ")", text):
            used += 1
            if m.group(1) not in cases and m.group(1) not in own_cases:
                problems.append(f"{where(m.start())}: case .{m.group(1)} is declared nowhere")

        struct_names = {n: n for n in struct_fields}
        struct_names.update({alias: target for alias, target in aliases.items() if target in struct_fields})
        for local, target in struct_names.items():
            for m in re.finditer(r"(?<![\w.])(?:MSocketFFI\.)?" + local + r"\s*\(", text):
                labels = [l for l in top_labels(call_args(text, m.end() - 1)) if l != "_"]
                if not labels:
                    continue
                used += 1
                fields = struct_fields[target]
                unknown = [l for l in labels if l not in fields]
                if unknown:
                    problems.append(f"{where(m.start())}: {local}(...) has no field(s) {unknown}")
                elif [fields.index(l) for l in labels] != sorted(fields.index(l) for l in labels):
                    problems.append(f"{where(m.start())}: {local}(...) labels {labels} are not in the order of its fields {fields}")

    for p in problems:
        print(f"swift-symbols: {p}")
    if problems:
        sys.exit(f"swift-symbols: {len(problems)} use(s) of the Swift bindings do not match them")
    if used == 0:
        sys.exit("swift-symbols: the Swift layer uses nothing from the bindings; is the convention broken?")
    print(f"swift-symbols: {used} uses of the bindings in {len(layer_files)} file(s) checked: all defined")


if __name__ == "__main__":
    main()
