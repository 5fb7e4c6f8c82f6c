#!/usr/bin/env python3
"""Copy function definitions from src/sql/*.sql into the upgrade script.

    python3 test/upgrade/sync.py sql/upgrade/tokex--0.1--0.2.sql tokex._refuse tokex_api.token ...

For each name, the definition in the install script parts (from its
"CREATE FUNCTION name(" to the end of its body) replaces the one in the
upgrade script, keeping the upgrade script's verb (CREATE or CREATE OR
REPLACE: the script knows whether the function existed before).  A name the
upgrade script does not define yet is reported, not added: where it goes
(and whether 0.1 had it) is for the author to decide.  make upgradecheck
then shows whether the two schemas agree.
"""
import glob
import re
import sys


def definitions(text):
    """name -> (start, end) of each CREATE [OR REPLACE] FUNCTION statement."""
    out = {}
    for m in re.finditer(r'^CREATE (?:OR REPLACE )?FUNCTION ([\w.]+)\(', text, re.M):
        start = m.start()
        # the statement ends at the first line ending in ';' after its body's
        # closing dollar quote (bodies are $$...$$, $b$...$b$ or LANGUAGE C)
        rest = text[start:]
        body = re.search(r"AS\s+(\$\w*\$)", rest)
        if body and body.start() < rest.find('\n\n') if '\n\n' in rest else True:
            tag = body.group(1)
            close = rest.find(tag, body.end())
            end = rest.find(';', close + len(tag)) + 1
        else:
            end = rest.find(';') + 1
        out[m.group(1)] = (start, start + end)
    return out


def main():
    script, names = sys.argv[1], sys.argv[2:]
    source = ''.join(open(f).read() for f in sorted(glob.glob('src/sql/*.sql')))
    src_defs = definitions(source)
    text = open(script).read()
    for name in names:
        if name not in src_defs:
            sys.exit(f'{name}: not defined in src/sql')
        defs = definitions(text)
        if name not in defs:
            print(f'{name}: not in {script}; add it by hand', file=sys.stderr)
            continue
        s, e = defs[name]
        verb = re.match(r'CREATE (?:OR REPLACE )?FUNCTION', text[s:]).group(0)
        a, b = src_defs[name]
        new = re.sub(r'^CREATE (?:OR REPLACE )?FUNCTION', verb, source[a:b])
        text = text[:s] + new + text[e:]
        print(f'{name}: synced')
    open(script, 'w').write(text)


if __name__ == '__main__':
    main()
