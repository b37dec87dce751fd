#!/usr/bin/env python3
"""Checks the Markdown of the repository (every *.md that git tracks or would add) against the
tree and the program, and fails naming file:line for each problem:

  links     every relative link and image resolves to an existing file or folder, and every
            #anchor (in the same file or another .md) to a heading of that file (GitHub's slugs);
  commands  every `nade <command> ...` line in a code block (fenced or indented; also `$ nade`,
            `target/release/nade`, `cargo run ... -- <command>`) and every inline code span that
            starts with `nade ` names a real command and only flags that
            `nade <command> --help` lists;
  paths     every path the text names under docs/, scripts/, configs/, checkpoints/, resume/
            and .ci/ exists (globs must match something); src/ and tests/ are left out: the
            code map may name a file of another branch or one to come;
  records   docs/records/README.md names every file under docs/records/ and docs/images/;
  cli       docs/cli.md names every flag of every command's --help;
  generated the CPU table of docs/performance.md and the README's paragraph of ratios are what
            scripts/bench/cpu_table.py prints from the committed records (line breaks aside).

Python 3 standard library only. Run from anywhere after `cargo build --release`:

  python3 scripts/ci/check_docs.py [--nade target/release/nade]
"""
import argparse
import glob
import os
import re
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SHELL_LANGS = {"", "sh", "bash", "shell", "console", "text", "zsh"}
PATH_PREFIXES = ("docs", "scripts", "configs", "resume", "checkpoints", ".ci")
PATH_RE = re.compile(r"(?<![\w./\-$~])((?:%s)/[\w.\-/*]*[\w/*])" % "|".join(re.escape(p) for p in PATH_PREFIXES))
LINK_RE = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF_RE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML_ANCHOR_RE = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)
FLAG_RE = re.compile(r"(?<![\w\-])(--?[A-Za-z][\w\-]*)")

problems = []


def problem(path, line, what):
    problems.append(f"{path}:{line}: {what}")


def markdown_files():
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "*.md"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return sorted(p for p in set(out.split("\0")) if p and os.path.exists(os.path.join(ROOT, p)))


class Doc:
    """A Markdown file split into prose lines (code masked out), code blocks and inline code spans."""

    def __init__(self, rel):
        self.rel = rel
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            self.lines = f.read().split("\n")
        self.blocks = []  # (first line number, language, [lines])
        self.prose = []  # (line number, text with code spans blanked)
        self.spans = []  # (line number, code span text)
        self.headings = []  # (line number, raw heading text)
        fence, lang, start, body = None, "", 0, []
        in_indented = False
        prev_blank, prev_listish = True, False
        for no, line in enumerate(self.lines, 1):
            if fence:
                if re.match(r"^\s{0,3}%s\s*$" % re.escape(fence), line):
                    self.blocks.append((start, lang, body))
                    fence = None
                else:
                    body.append((no, line))
                continue
            m = re.match(r"^\s{0,3}(`{3,}|~{3,})\s*([\w+-]*)", line)
            if m:
                fence, lang, start, body = m.group(1), m.group(2).lower(), no, []
                in_indented = False
                continue
            if line.startswith("    ") and (in_indented or (prev_blank and not prev_listish)):
                if not in_indented:
                    self.blocks.append((no, "", []))
                    in_indented = True
                self.blocks[-1][2].append((no, line[4:]))
                continue
            if line.strip():
                in_indented = False
                prev_listish = bool(re.match(r"^\s*([-*+]|\d+[.)])\s", line)) or (
                    prev_listish and line.startswith("  "))
            prev_blank = not line.strip()
            if re.match(r"^\s{0,3}#{1,6}\s", line):
                self.headings.append((no, re.sub(r"^\s{0,3}#{1,6}\s+", "", line).rstrip("# ").strip()))
        # Inline code spans may run over a line break: find them in the prose as a whole.
        fenced = {no for b in self.blocks for no, _ in b[2]} | {b[0] for b in self.blocks}
        text_lines = [("" if no in fenced or self._is_fence_line(no) else l) for no, l in enumerate(self.lines, 1)]
        text = "\n".join(text_lines)
        masked = list(text)
        for m in re.finditer(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", text, re.S):
            no = text.count("\n", 0, m.start()) + 1
            self.spans.append((no, " ".join(m.group(2).split())))
            for i in range(m.start(), m.end()):
                if masked[i] != "\n":
                    masked[i] = " "
        for no, line in enumerate("".join(masked).split("\n"), 1):
            self.prose.append((no, line))

    def _is_fence_line(self, no):
        return bool(re.match(r"^\s{0,3}(`{3,}|~{3,})", self.lines[no - 1]))


def slug(heading):
    """GitHub's anchor of a heading: the rendered text, lower case, punctuation dropped,
    spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(doc):
    seen, out = {}, set()
    for _, h in doc.headings:
        s = slug(h)
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    for line in doc.lines:
        out.update(m.lower() for m in HTML_ANCHOR_RE.findall(line))
    return out


def check_links(docs):
    by_rel = {d.rel: d for d in docs}
    anchor_cache = {}

    def anchors_of(rel):
        if rel not in anchor_cache:
            d = by_rel.get(rel) or Doc(rel)
            anchor_cache[rel] = anchors(d)
        return anchor_cache[rel]

    for d in docs:
        targets = []
        for no, line in d.prose:
            for m in LINK_RE.finditer(line):
                targets.append((no, m.group(3)))
            m = REF_DEF_RE.match(line)
            if m:
                targets.append((no, m.group(1)))
        for no, target in targets:
            if not target or re.match(r"^[a-zA-Z][\w+.-]*:", target) or target.startswith("//"):
                continue  # empty, or an absolute URL (https:, mailto:, ...)
            path, _, anchor = target.partition("#")
            path = path.split("?")[0]
            if path:
                resolved = os.path.normpath(os.path.join(os.path.dirname(d.rel), path))
                if resolved.startswith("..") or not os.path.exists(os.path.join(ROOT, resolved)):
                    problem(d.rel, no, f"broken link: {target} ({resolved} does not exist)")
                    continue
            else:
                resolved = d.rel
            if anchor:
                if not resolved.endswith(".md") or os.path.isdir(os.path.join(ROOT, resolved)):
                    continue  # anchors into code files (#L10) are not checked
                if anchor.lower() not in anchors_of(resolved):
                    problem(d.rel, no, f"broken anchor: {target} (no heading '#{anchor}' in {resolved})")


def help_flags(nade, command):
    args = [nade] + ([command] if command else []) + ["--help"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    flags = set()
    in_options = False
    for line in out.split("\n"):
        if line.startswith("Options:"):
            in_options = True
            continue
        if in_options:
            m = re.match(r"^\s+(?:(-\w),\s+)?(--[\w-]+)", line)
            if m:
                flags.update(f for f in m.groups() if f)
            m = re.match(r"^\s+(-\w)\s", line)
            if m:
                flags.add(m.group(1))
    # Older names the help mentions as such: "`--path` is its older name".
    flags.update(re.findall(r"`(--[\w-]+)`", out))
    return flags


def nade_commands(nade):
    out = subprocess.run([nade, "--help"], check=True, capture_output=True, text=True).stdout
    commands = re.findall(r"^\s{2}(\w[\w-]*)\s{2,}", out.split("Commands:")[1].split("Options:")[0], re.M)
    return {c: help_flags(nade, c) for c in commands if c != "help"}, help_flags(nade, None)


def strip_comment(line):
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def nade_invocations(command_line):
    """The argument lists of the nade commands in one shell line (after `nade`)."""
    for seg in re.split(r"\s(?:&&|\|\||;|\|)\s|;\s*$", command_line):
        words = seg.split()
        while words and (words[0] in ("$", "time", "sudo", "exec") or re.match(r"^\w+=", words[0])):
            words = words[1:]
        if not words:
            continue
        if words[0] == "nade" or words[0].endswith("/nade"):
            yield words[1:]
        elif words[:2] == ["cargo", "run"] and "--" in words:
            yield words[words.index("--") + 1:]


def check_command(rel, no, args, commands, top_flags, context):
    if not args:
        return
    first = args[0]
    if first.startswith("-"):
        flags, name = top_flags, "nade"
        rest = args
    elif first in commands:
        flags, name = commands[first], f"nade {first}"
        rest = args[1:]
    elif first in ("help",) or re.match(r"^[<\[{.]|^\.\.\.$|^[A-Z_]+$", first):
        return  # `nade help`, and placeholders: `nade <command> --help`, `nade ...`
    else:
        problem(rel, no, f"unknown command in {context}: nade {first} (commands: {', '.join(sorted(commands))})")
        return
    for flag in FLAG_RE.findall(" ".join(rest)):
        if flag not in flags:
            problem(rel, no, f"unknown flag in {context}: {name} {flag} (`{name} --help` lists "
                             f"{', '.join(sorted(f for f in flags if f.startswith('--')))})")


def check_commands(docs, nade):
    commands, top_flags = nade_commands(nade)
    for d in docs:
        for _, lang, body in d.blocks:
            if lang not in SHELL_LANGS:
                continue
            pending, first_no = "", None
            for no, line in body:
                text = strip_comment(line).rstrip()
                if first_no is None:
                    first_no = no
                if text.endswith("\\"):
                    pending += text[:-1] + " "
                    continue
                text, pending = pending + text, ""
                text = re.sub(r"^\s*\$\s+", "", text)
                for args in nade_invocations(text):
                    check_command(d.rel, first_no, args, commands, top_flags, "a code block")
                first_no = None
        for no, span in d.spans:
            if span.startswith("nade "):
                check_command(d.rel, no, strip_comment(span).split()[1:], commands, top_flags, "inline code")
    return commands


def check_paths(docs):
    for d in docs:
        places = [(no, line) for no, line in enumerate(d.lines, 1)]
        for no, line in places:
            for m in PATH_RE.finditer(line):
                p = m.group(1).rstrip(".")
                if any(c in p for c in "{}$<>") or re.search(r"/[A-Z][A-Z_]*(?:\.|/|$)", p):
                    continue  # templates and placeholders: docs/{key}-test.json, resume/NAME.last...
                if "*" in p:
                    if not glob.glob(os.path.join(ROOT, p)):
                        problem(d.rel, no, f"no file matches {p}")
                elif not os.path.exists(os.path.join(ROOT, p)):
                    problem(d.rel, no, f"names {p}, which does not exist")


def check_records_index():
    index = "docs/records/README.md"
    if not os.path.exists(os.path.join(ROOT, index)):
        problem(index, 1, "missing: the index of the run records")
        return
    text = open(os.path.join(ROOT, index), encoding="utf-8").read()
    listed = set()
    for m in LINK_RE.finditer(text):
        listed.add(os.path.normpath(os.path.join("docs/records", m.group(3).partition("#")[0])))
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--",
                          "docs/records", "docs/images"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for f in sorted(p for p in set(out.split("\0")) if p):
        if f != index and os.path.exists(os.path.join(ROOT, f)) and f not in listed:
            problem(index, 1, f"does not link {f}: say what it is, what produced it and what it backs")


def check_cli_reference(commands):
    rel = "docs/cli.md"
    if not os.path.exists(os.path.join(ROOT, rel)):
        problem(rel, 1, "missing: the command-line reference")
        return
    text = open(os.path.join(ROOT, rel), encoding="utf-8").read()
    sections = re.split(r"^#{2,3} ", text, flags=re.M)
    for command, flags in sorted(commands.items()):
        body = "\n".join(s for s in sections if re.match(rf"nade {command}\b|nade \w+ and nade {command}\b", s))
        if not body:
            problem(rel, 1, f"no section for nade {command}")
            continue
        for flag in sorted(flags):
            if flag.startswith("--") and flag not in ("--help", "--version") and not re.search(
                    rf"(?<![\w-]){re.escape(flag)}(?![\w-])", body):
                problem(rel, 1, f"nade {command} {flag} (in its --help) is not in its section")


def check_generated():
    records = ["docs/records/cpu-peers-nade.jsonl", "docs/records/cpu-peers-torch.jsonl"]
    if not all(os.path.exists(os.path.join(ROOT, r)) for r in records):
        problem(records[0], 1, "missing: the CPU records that docs/performance.md's table comes from")
        return
    squash = lambda text: " ".join(text.split())
    for rel, flags in (("docs/performance.md", []), ("README.md", ["--readme"])):
        out = subprocess.run([sys.executable, "scripts/bench/cpu_table.py", *flags, *records], cwd=ROOT,
                             check=True, capture_output=True, text=True).stdout
        if squash(out) not in squash(open(os.path.join(ROOT, rel), encoding="utf-8").read()):
            problem(rel, 1, f"does not hold what `python3 scripts/bench/cpu_table.py {' '.join(flags + records)}` "
                            "prints: paste it in again")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nade", default=os.path.join(ROOT, "target/release/nade"), help="the nade binary")
    args = ap.parse_args()
    if not os.access(args.nade, os.X_OK):
        sys.exit(f"check_docs: no {args.nade}: run `cargo build --release` first (or pass --nade)")
    docs = [Doc(rel) for rel in markdown_files()]
    check_links(docs)
    commands = check_commands(docs, args.nade)
    check_paths(docs)
    check_records_index()
    check_cli_reference(commands)
    check_generated()
    for p in problems:
        print(p)
    print(f"check_docs: {len(docs)} Markdown files, {len(problems)} problem(s)", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
