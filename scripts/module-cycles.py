#!/usr/bin/env python3
"""Checks that a crate's modules import each other without a circle.

    scripts/module-cycles.py so1s-core/src so1s-inference/src

Builds the module graph of each crate's src/ from the paths its code names (`use
crate::a::b`, `super::x`, inline `crate::a::f()`), each resolved to the deepest module it
names, test modules left out; a parent and its own child may use each other, so those edges
are dropped. Prints every circle left (a strongly connected set of modules) and exits 1 if
there is one. A module that needs a leaf of another (`registry::state`) should name the leaf,
so the graph sees what it really uses."""
import os, re, sys

def modname(root, path):
    rel = os.path.relpath(path, root)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ('mod', 'lib'):
        parts = parts[:-1]
    return tuple(parts)

def resolve(mod, path_parts, modules):
    # longest prefix that is a module
    for i in range(len(path_parts), 0, -1):
        if tuple(path_parts[:i]) in modules:
            return tuple(path_parts[:i])
    return ()

def main(root):
    files = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            if f.endswith('.rs'):
                p = os.path.join(d, f)
                files[modname(root, p)] = open(p).read()
    modules = set(files)
    edges = {m: set() for m in modules}
    for m, text in files.items():
        # strip test modules
        t = re.split(r'#\[cfg\(test\)\]\s*mod tests', text)[0]
        t = re.sub(r'//.*', '', t)
        for mt in re.finditer(r'\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)', t):
            kind, rest = mt.group(1), mt.group(2).split('::')[1:]
            if kind == 'crate':
                base = []
            else:
                # super from m: if m's file is mod.rs/lib or leaf, super = parent of m
                base = list(m[:-1])
                while rest and rest[0] == 'super':
                    base = base[:-1]; rest = rest[1:]
            target = resolve(m, base + rest, modules)
            if target != m:
                edges[m].add(target)
        # use super::{a, b} groups
        for mt in re.finditer(r'\buse (crate|super)::\{([^}]*)\}', t):
            base = [] if mt.group(1) == 'crate' else list(m[:-1])
            for item in mt.group(2).split(','):
                item = item.strip().split('::')
                if item and item[0]:
                    target = resolve(m, base + item, modules)
                    if target != m:
                        edges[m].add(target)
    # find cycles (SCCs) ignoring parent<->child edges
    def related(a, b):
        return a[:len(b)] == b or b[:len(a)] == a
    g = {m: {t for t in ts if not related(m, t)} for m, ts in edges.items()}
    index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)
    def strong(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in g[v]:
            if w not in index:
                strong(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: sccs.append(comp)
    for v in g:
        if v not in index: strong(v)
    for comp in sccs:
        print(root + ':', end=' ')
        names = ['::'.join(c) or 'crate' for c in comp]
        print('cycle:', ', '.join(sorted(names)))
        for c in comp:
            print('   ', '::'.join(c) or 'crate', '->', sorted('::'.join(t) for t in g[c] if t in comp))
    return 1 if sccs else 0

if __name__ == '__main__':
    failed = 0
    for root in sys.argv[1:]:
        failed |= main(root)
    sys.exit(failed)
