"""Module Markdown: the body of a module file split into its `## Title {#id}` sections,
rendered with markdown-it-py (raw HTML off) and sanitized with nh3; and the inspection that
refuses what rendering would silently escape or drop (raw HTML, handlers, unsafe links)."""

from __future__ import annotations

import html
import re
import urllib.parse
from dataclasses import dataclass
from typing import NamedTuple

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token

KEY_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"  # module keys, section and question ids
KEY = re.compile(KEY_PATTERN)

# What a module page may contain (the content spec); everything else is dropped by nh3.
ALLOWED_TAGS = frozenset(
    {"p", "h3", "ul", "ol", "li", "strong", "em", "a", "blockquote", "br"}
    | {"table", "thead", "tbody", "tr", "th", "td"}
)
LINK_SCHEMES = frozenset({"https", "mailto", "tel"})
LINK_REL = "noopener noreferrer"


class Finding(NamedTuple):
    """A problem at a line of the file being read (None: the file as a whole)."""

    line: int | None
    message: str


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    html: str  # sanitized: safe to mark |safe in a template
    plain_text: str  # one line per block (paragraph, list item, sub-heading, table cell)


RAW_TAG = re.compile(r"<\s*(/?)\s*([A-Za-z][A-Za-z0-9:-]*)|<!--")


def tag_of(raw: str) -> str:
    """`<script>` for a piece of raw HTML (to name it in a problem)."""
    match = RAW_TAG.search(raw)
    if match is None:
        return raw.strip()[:20]
    return "<!-- -->" if match.group(0) == "<!--" else f"<{match.group(2).lower()}>"


class _Inspector(MarkdownIt):
    """Parses with raw HTML on and every link kept, so that the check sees what the
    renderer would silently escape or drop, and refuses it."""

    def validateLink(self, url: str) -> bool:  # noqa: N802 (markdown-it's name)
        return True


_RENDERER = MarkdownIt("commonmark", {"html": False}).enable("table")
_INSPECTOR = _Inspector("commonmark", {"html": True}).enable("table")
_CLEANER = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    attributes={"a": {"href", "title"}},
    url_schemes=set(LINK_SCHEMES),
    url_relative="deny",
    link_rel=LINK_REL,
)


def sanitize(fragment: str) -> str:
    return _CLEANER.clean(fragment)


def render_markdown(text: str) -> str:
    """Markdown to safe HTML: raw HTML is escaped, then only the allowed tags and links stay."""
    return sanitize(_RENDERER.render(text))


_SECTION_ID = re.compile(r"\s*\{#([^}]*)\}\s*$")
_HANDLER = re.compile(r"\bon([a-z]+)\s*=", re.IGNORECASE)
_JAVASCRIPT = re.compile(r"javascript\s*:", re.IGNORECASE)
_SCRIPT = re.compile(r"<\s*script", re.IGNORECASE)


def _inline_text(token: Token) -> str:
    parts = []
    for child in token.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return "".join(parts).strip()


def _html_problems(raw: str) -> list[str]:
    if raw.lstrip().startswith("<!--"):
        return ["HTML comments are not allowed (they would show as text)"]
    problems = [f"raw HTML is not allowed: {tag_of(raw)}"]
    problems += [
        f"an inline handler is not allowed: on{name.lower()}" for name in _HANDLER.findall(raw)
    ]
    return problems


def _link_problem(href: str) -> str | None:
    plain = re.sub(r"[\s\x00-\x1f]", "", html.unescape(urllib.parse.unquote(href))).lower()
    for scheme in ("javascript:", "vbscript:", "data:"):
        if plain.startswith(scheme):
            return f"a {scheme} link is not allowed"
    parts = urllib.parse.urlsplit(href)
    if (parts.scheme == "https" and parts.netloc) or parts.scheme in ("mailto", "tel"):
        return None
    if parts.scheme == "http":
        return f"link {href!r} is not allowed: use https://"
    return f"link {href!r} is not allowed: only https:, mailto: and tel: links"


def inspect_body(body: str, *, first_line: int) -> list[Finding]:
    """Raw HTML, inline handlers, unsafe links and images in the Markdown source."""
    lines = body.split("\n")
    findings: list[Finding] = []

    def line_of(token: Token, needle: str = "") -> int | None:
        if token.map is None:
            return None
        start, end = token.map
        for index in range(start, min(end, len(lines))):
            if needle and needle in lines[index]:
                return first_line + index
        return first_line + start

    for token in _INSPECTOR.parse(body):
        if token.type == "html_block":
            at = line_of(token)
            findings += [Finding(at, message) for message in _html_problems(token.content)]
        for child in token.children or []:
            if child.type == "html_inline":
                at = line_of(token, child.content)
                findings += [Finding(at, m) for m in _html_problems(child.content)]
            elif child.type == "link_open":
                href = str(child.attrGet("href") or "")
                message = _link_problem(href)
                if message is not None:
                    findings.append(Finding(line_of(token, href), message))
            elif child.type == "image":
                message = "images are not allowed (a module page loads nothing from elsewhere)"
                findings.append(Finding(line_of(token), message))
    # A last look at the source itself, for what hides where the parser sees plain text.
    reported = {finding.message for finding in findings}
    for index, text in enumerate(lines):
        for pattern, message in (
            (_SCRIPT, "raw HTML is not allowed: <script>"),
            (_JAVASCRIPT, "a javascript: link is not allowed"),
        ):
            if pattern.search(text) and message not in reported:
                findings.append(Finding(first_line + index, message))
                reported.add(message)
    return findings


def _section_heading(heading: str, *, seen: set[str]) -> tuple[str, str, str | None]:
    """(id, title, problem) of a `## Title {#id}` heading."""
    marker = _SECTION_ID.search(heading)
    if marker is None:
        return (
            "",
            heading,
            f"section heading '{heading}' has no id: write '## {heading} {{#some-id}}'",
        )
    section_id, title = marker.group(1), heading[: marker.start()].strip()
    if not KEY.match(section_id):
        return section_id, title, f"section id '{section_id}' is not lowercase-with-dashes"
    if section_id in seen:
        return section_id, title, f"section id '{section_id}' is used twice"
    return section_id, title, None


def _heading_problem(tag: str, heading: str) -> str | None:
    """What is wrong with a heading inside a section (h1, h4 and below, an id)."""
    if tag == "h1":
        return "a # heading is not used: the title comes from the front matter"
    if tag != "h3":
        return "only ## sections and ### sub-headings are used"
    if _SECTION_ID.search(heading):
        return "only ## section headings take an {#id}"
    return None


def parse_sections(
    body: str, *, first_line: int
) -> tuple[list[Section], dict[str, int], list[Finding]]:
    """The `##` sections (sanitized HTML and plain text), the line of each id, and the
    problems; `first_line` is the file line where `body` starts."""
    tokens = _RENDERER.parse(body)
    sections: list[Section] = []
    lines: dict[str, int] = {}
    findings: list[Finding] = []
    current: tuple[str, str, int | None] | None = None  # id, title, line
    body_tokens: list[Token] = []
    stray = False

    def close() -> None:
        if current is None:
            return
        section_id, title, at = current
        texts = (_inline_text(token) for token in body_tokens if token.type == "inline")
        text = "\n".join(text for text in texts if text)
        if not text:
            findings.append(Finding(at, f"section '{section_id}' has no text"))
        rendered = _RENDERER.renderer.render(body_tokens, _RENDERER.options, {})
        sections.append(Section(section_id, title, sanitize(rendered), text))

    index = 0
    while index < len(tokens):
        token = tokens[index]
        at = first_line + token.map[0] if token.map else None
        if token.type == "heading_open" and token.tag == "h2":
            close()
            section_id, title, problem = _section_heading(
                _inline_text(tokens[index + 1]), seen=set(lines)
            )
            if problem is not None:
                findings.append(Finding(at, problem))
            lines.setdefault(section_id, at or first_line)
            current, body_tokens = (section_id, title, at), []
            index += 3  # heading_open, inline, heading_close
            continue
        problem = None
        if token.type == "heading_open":
            problem = _heading_problem(token.tag, _inline_text(tokens[index + 1]))
        elif token.type in ("code_block", "fence"):
            problem = "code blocks are not used (is a line indented by 4 spaces by mistake?)"
        elif current is None and token.map is not None and not stray:
            problem = "text before the first ## section (all text belongs to a section)"
            stray = True  # once is enough
        if problem is not None:
            findings.append(Finding(at, problem))
        if current is not None:
            body_tokens.append(token)
        index += 1
    close()
    if len(sections) < 2:
        findings.append(Finding(None, "a module has at least 2 ## sections"))
    return sections, lines, findings
