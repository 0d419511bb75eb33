#!/usr/bin/env python3
"""Classify the rows of `duplicates --most 200` output.
Usage: hack/dupclass.py DUPLICATES_OUTPUT [REPO] [-v]
  generated   : either side is a bpf2go *_bpfel.go file
  boilerplate : the scanner itself marked the row boilerplate
  import-only : on both sides every line of the range lies in the Go file
                header (package clause, build tags, comments, import block)
  declarations: not import-only, and on both sides >= 75% of the code lines
                past the header are declarative: struct fields (with or
                without tags), `type X struct {`, cobra Use/Short/Long/Args/
                RunE lines, map/slice literal entries of a table, a
                `func TestX(t *testing.T) {` line with its lab.Require/new-lab
                first lines, closing braces
  real        : the rest (shared statements: logic to look at)"""
import re, sys, os
args = [a for a in sys.argv[1:] if a != '-v']
out, repo = args[0], (args[1] if len(args) > 1 else '.')
row = re.compile(r'^(D\d+) (\S+):(\d+)-(\d+) ~ (\S+):(\d+)-(\d+)(.*)$')
DECL = [r'^[A-Za-z_]\w*(\s*,\s*\w+)*\s+[\w.*\[\]{}]+(\s+`[^`]*`)?$',   # struct field
        r'^(type \w+ struct|var \w+ \w+|const|var) ?[({]?$', r'^type \w+ struct \{$',
        r'^(Use|Short|Long|Args|RunE|Hidden|PreRun):', r'^cmd := &cobra\.Command\{$',
        r'^func new\w+\(g \*cli\.Globals\) \*cobra\.Command \{$', r'^var [\w, ]+ [\w.*\[\]]+$',
        r'^"[^"]*"\s*:\s*.*,$', r'^\{.*\},?$', r'^for \w+, \w+ := range map\[.*\{$',
        r'^func Test\w+\(t \*testing\.T\) \{$', r'^lab\.Require\(t', r'^\w+ := (lab\.New\w+|new\w+|start\w+)\(t\b',
        r'^[})\]]+,?$', r'^\w+\s+= \[\]byte\("[^"]*"\)$', r'^\w+\s+(\w+ )?= "[^"]*"$']
DECL = [re.compile(p) for p in DECL]
def lines(path): return open(os.path.join(repo, path)).read().split('\n')
def header_end(L):
    inblock, last = False, 0
    for i, l in enumerate(L, 1):
        s = l.strip()
        if inblock:
            last = i
            if s == ')': inblock = False
            continue
        if s.startswith('import ('): inblock, last = True, i; continue
        if s == '' or s.startswith('//') or s.startswith('package ') or s.startswith('import '):
            if s: last = i
            continue
        break
    return last
def side(path, a, b):
    if not path.endswith('.go'): return 'code'
    L = lines(path); h = header_end(L)
    if b <= h: return 'import'
    code = [l.strip() for l in L[max(a, h + 1) - 1:b] if l.strip() and not l.strip().startswith('//')]
    if not code: return 'import'
    d = sum(1 for l in code if any(p.match(l) for p in DECL))
    return 'decl' if d >= 0.75 * len(code) else 'code'
counts, rows = {}, {}
for l in open(out):
    m = row.match(l.strip())
    if not m: continue
    d, f1, a1, b1, f2, a2, b2, rest = m.groups()
    if f1.endswith('_bpfel.go') or f2.endswith('_bpfel.go'): k = 'generated'
    elif 'boilerplate' in rest: k = 'boilerplate'
    else:
        s1, s2 = side(f1, int(a1), int(b1)), side(f2, int(a2), int(b2))
        k = 'import-only' if s1 == s2 == 'import' else 'declarations' if 'code' not in (s1, s2) else 'real'
    counts[k] = counts.get(k, 0) + 1
    rows.setdefault(k, []).append(d)
print(' '.join(f'{k}={v}' for k, v in sorted(counts.items())), 'total=%d' % sum(counts.values()))
if '-v' in sys.argv:
    for k in ('declarations', 'real'): print(k + ':', ' '.join(rows.get(k, [])))
