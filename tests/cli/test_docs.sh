# test_docs.sh: the repository stands on its own. Over every file git would ship (tracked
# and not-ignored ones):
#  1. no path points outside the repository: the design documents' old home beside the
#     checkout, a work or home directory (absolute paths such as /usr/lib or /tmp are
#     system paths and allowed), or a relative ../ path that climbs above the root;
#  2. every section cited as "DSA-SPEC §N", "DSA-SPEC §N.M" (also lists and ranges:
#     "DSA-SPEC §3.1, §3.2", "§5-§8", and help texts' "DSA-SPEC 3.2") and every bare "§N"
#     outside docs/ exists as a heading of docs/DSA-SPEC.md;
#  3. every DESIGN.md section cited by its quoted name or as "memory rule" exists, and
#     every STYLE.md rule or convention cited by number exists;
#  4. every relative link of the Markdown files resolves to a file of the repository.
. "$(dirname "$0")/lib.sh"

root=$(pwd)
if ! git -C "$root" rev-parse --git-dir > /dev/null 2>&1; then
  skip "documentation checks" "not a git checkout"
  exit 0
fi
(cd "$root" && git ls-files -z --cached --others --exclude-standard) > "$work/files"

python3 - "$root" "$work/files" << 'EOF'
import os, re, sys

root, listing = sys.argv[1], sys.argv[2]
files = sorted({f for f in open(listing, "rb").read().decode().split("\0") if f and os.path.isfile(os.path.join(root, f))})
me = "tests/cli/test_docs.sh"


def text_of(f):
    data = open(os.path.join(root, f), "rb").read()
    if b"\0" in data[:8192]:
        return None  # binary
    return data.decode("utf-8", "replace")


texts = {f: t for f in files if (t := text_of(f)) is not None}
results = []


def check(name, problems):
    if problems:
        print(f"not ok - {name}")
        for p in problems[:40]:
            print(f"    | {p}")
        if len(problems) > 40:
            print(f"    | ... and {len(problems) - 40} more")
    else:
        print(f"ok - {name}")


def lines_matching(pattern, skip=()):
    rx = re.compile(pattern)
    for f, t in texts.items():
        if f in skip:
            continue
        for n, line in enumerate(t.splitlines(), 1):
            for m in rx.finditer(line):
                yield f, n, line, m


# 1. paths outside the repository. The patterns are built from pieces so that this file
# does not match itself.
outside = [
    r"\.\./" + "shared",                    # the documents' old place beside the checkout
    r"(?<![\w.~$-])/" + "work/",           # the work tree of the machine this was written on
    r"(?<![\w.~$-])/" + r"home/[a-z_][\w.-]*", r"(?<![\w.~$-])/" + "Users/", r"(?<![\w.~$-])/" + "root/",
]
problems = []
for pat in outside:
    for f, n, line, m in lines_matching(pat, skip=(me,)):
        problems.append(f"{f}:{n}: {m.group(0)!r} points outside the repository: {line.strip()[:120]}")
check("no tracked file refers to a path outside the repository", problems)

problems = []
for f, n, line, m in lines_matching(r"(?:^|(?<=[\s\"'(=`\[]))((?:\.\./)+)[\w.-]*"):
    target = os.path.normpath(os.path.join(os.path.dirname(f), m.group(0)))
    if target.startswith(".."):
        problems.append(f"{f}:{n}: {m.group(0)!r} climbs above the repository root")
check("no relative path climbs above the repository root", problems)

# 2. DSA-SPEC sections
spec = texts.get("docs/DSA-SPEC.md", "")
heads = set(re.findall(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", spec, re.M))
sec = r"§? ?\d+(?:\.\d+)*"
cite = re.compile(r"DSA-SPEC(?:\.md)?,? (" + sec + r"(?:(?:, | and |-|–)" + sec + r")*)")
problems, cited = [], set()
for f, n, line, m in lines_matching(cite.pattern):
    for num in re.findall(r"\d+(?:\.\d+)*", m.group(1)):
        num = num.rstrip(".")
        cited.add(num)
        if num not in heads:
            problems.append(f"{f}:{n}: cites DSA-SPEC {num}, which docs/DSA-SPEC.md has no heading for")
for f, n, line, m in lines_matching(r"§ ?(\d+(?:\.\d+)*)"):
    if f.startswith("docs/") and f != "docs/DSA-SPEC.md":
        continue
    num = m.group(1).rstrip(".")
    if f == "docs/DSA-SPEC.md" and ("paper" in line[max(0, m.start() - 8):m.start()]):
        continue  # the V3.2 paper's own sections
    cited.add(num)
    if num not in heads:
        problems.append(f"{f}:{n}: cites §{num}, which docs/DSA-SPEC.md has no heading for")
if not heads:
    problems.append("docs/DSA-SPEC.md has no numbered headings")
check(f"every cited DSA-SPEC section exists ({len(cited)} distinct, {len(heads)} headings)", problems)

# 3. DESIGN.md sections by name, STYLE.md rules by number
design = texts.get("docs/DESIGN.md", "")
dheads = {h.strip().lower() for h in re.findall(r"^#{2,3} ([^\n*(]+)", design, re.M)}
problems = []
for f, n, line, m in lines_matching(r"DESIGN\.md,? (?:\"([^\"]+)\"|(memory rule))"):
    name = (m.group(1) or m.group(2)).lower()
    if name not in dheads:
        problems.append(f"{f}:{n}: cites DESIGN.md section \"{name}\", not a heading of docs/DESIGN.md")
style = texts.get("docs/STYLE.md", "")
rules = set(re.findall(r"^(\d+)\. \*\*", style, re.M))
for f, n, line, m in lines_matching(r"STYLE\.md,? (?:rules?|conventions?) (\d+(?:(?:, | and )\d+)*)"):
    for num in re.findall(r"\d+", m.group(1)):
        if num not in rules:
            problems.append(f"{f}:{n}: cites STYLE.md rule {num}, which docs/STYLE.md does not have")
check("every cited DESIGN.md section and STYLE.md rule exists", problems)

# 4. Markdown links
problems = []
for f in (f for f in texts if f.endswith(".md")):
    for n, line in enumerate(texts[f].splitlines(), 1):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = os.path.normpath(os.path.join(os.path.dirname(f), target.split("#")[0]))
            if not os.path.exists(os.path.join(root, path)) or path.startswith(".."):
                problems.append(f"{f}:{n}: link to {target}: no such file in the repository")
check("every relative Markdown link resolves inside the repository", problems)
for doc in ("docs/DSA-SPEC.md", "docs/DESIGN.md", "docs/STYLE.md"):
    check(f"{doc} is in the repository", [] if doc in texts else [f"{doc} is missing"])
EOF
