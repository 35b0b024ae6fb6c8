"""The summary's sections as Markdown and as one self-contained HTML page."""

from __future__ import annotations

import base64
import html
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .evidence import fmt

if TYPE_CHECKING:
    from .nodes import Section


def _cell(value) -> str:
    return "failed" if isinstance(value, float) and np.isnan(value) else fmt(value)


def markdown_table(table: pd.DataFrame) -> str:
    """A DataFrame as a GitHub Markdown table (index first; NaN → "failed")."""
    head = [str(table.index.name or "")] + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for index, row in table.iterrows():
        lines.append("| " + " | ".join([fmt(index)] + [_cell(v) for v in row.tolist()]) + " |")
    return "\n".join(lines)


def _status(section: Section) -> str:
    return "found" if section.found else f"not run: `{section.command}`"


def render_markdown(sections: list[Section], header: list[str]) -> str:
    lines = list(header)
    lines += ["", "| experiment | pipeline | status |", "|---|---|---|"]
    for s in sections:
        lines.append(f"| {s.experiment.title} | `{s.experiment.pipeline}` | {_status(s)} |")
    for s in sections:
        lines += ["", f"## {s.experiment.title} (`{s.experiment.pipeline}`)", ""]
        for claim in s.experiment.claims:
            lines += [f"*Claim.* {claim}", ""]
        if not s.found:
            needs = f" (after `{s.experiment.needs}`)" if s.experiment.needs else ""
            lines.append(f"**Not run yet.** Run{needs}: `{s.command}`")
            continue
        if s.settings:
            lines += [f"*Run settings:* {s.settings}", ""]
        lines += [f"- {name}: {value}" for name, value in s.facts]
        for caption, table in s.tables:
            lines += ["", f"{caption}:", "", markdown_table(table)]
        for title, intro, found in s.subsections:
            lines += ["", f"### {title}", "", intro, ""]
            lines += [f"- {name}: {value}" for name, value in found.facts]
            for caption, table in found.tables:
                lines += ["", f"{caption}:", "", markdown_table(table)]
        if s.versions:
            lines += [
                "",
                "Versions read: "
                + ", ".join(f"`{name}` {version or 'n/a'}" for name, version in s.versions.items()),
            ]
        lines += [f"- {line}" for line in s.provenance]
    return "\n".join(lines) + "\n"


def _png_tag(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}" width="720">'


def _html_table(table: pd.DataFrame) -> str:
    shown = table.map(_cell)
    shown.index = [fmt(i) for i in table.index]
    shown.index.name = table.index.name
    return shown.to_html(escape=True)


def _html_facts(facts: list[tuple[str, str]]) -> str:
    if not facts:
        return ""
    esc = html.escape
    return "<ul>" + "".join(f"<li>{esc(n)}: {esc(v)}</li>" for n, v in facts) + "</ul>"


def render_html(sections: list[Section], header: list[str], summary_png: bytes | None) -> str:
    esc = html.escape
    body = [f"<h1>{esc(header[0].lstrip('# '))}</h1>"]
    body += [f"<p>{esc(line)}</p>" for line in header[1:] if line]
    if summary_png:
        body.append(_png_tag(summary_png, "summary figure"))
    for s in sections:
        body.append(
            f"<h2>{esc(s.experiment.title)} (<code>{esc(s.experiment.pipeline)}</code>)</h2>"
        )
        body += [f"<p><em>Claim.</em> {esc(claim)}</p>" for claim in s.experiment.claims]
        if not s.found:
            body.append(f"<p><strong>Not run yet.</strong> <code>{esc(s.command)}</code></p>")
            continue
        if s.settings:
            body.append(f"<p><em>Run settings:</em> {esc(s.settings)}</p>")
        body.append(_html_facts(s.facts))
        for caption, table in s.tables:
            body += [f"<p>{esc(caption)}</p>", _html_table(table)]
        for title, intro, found in s.subsections:
            body += [f"<h3>{esc(title)}</h3>", f"<p>{esc(intro)}</p>", _html_facts(found.facts)]
            for caption, table in found.tables:
                body += [f"<p>{esc(caption)}</p>", _html_table(table)]
        if s.versions:
            listing = ", ".join(f"{n} {v or 'n/a'}" for n, v in s.versions.items())
            body.append(f"<p><small>Versions read: {esc(listing)}</small></p>")
        body += [f"<p><small>{esc(line)}</small></p>" for line in s.provenance]
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(header[0])}"
        f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )
