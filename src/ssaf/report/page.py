"""report.md -> report.html: the same Markdown, rendered by markdown-it-py (CommonMark with GFM tables),
with the plots embedded, so the HTML file is one self-contained page."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from markdown_it import MarkdownIt

# Tables fit the page: cells wrap between words (a word longer than its column breaks, rather than widen
# the table); paths in the lists break anywhere. Figures scale down to the page width.
CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 1em auto; padding: 0 1em; line-height: 1.4 }
table { border-collapse: collapse; width: 100%; font-size: 12px; margin: 0.5em 0 1.5em }
th, td { border: 1px solid #ccc; padding: 3px 5px; text-align: left; vertical-align: top; overflow-wrap: break-word }
th { background: #f3f3f3 }
tbody tr:nth-child(even) { background: #fafafa }
code { font-size: 90%; overflow-wrap: anywhere }
li { overflow-wrap: anywhere }
figure { margin: 1em 0 }
img { max-width: 100%; height: auto }
figcaption { font-size: 13px; color: #555 }
"""


def render_markdown(text: str) -> str:
    """CommonMark plus GFM tables as HTML; raw HTML in the text is escaped, not passed through."""
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def html_page(markdown: str, title: str, plots: list[Path]) -> str:
    """A self-contained page: ``markdown`` rendered, then each PNG in ``plots`` inline with its caption."""
    figures = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" '
        f'alt="{html.escape(p.stem)}"><figcaption>{html.escape(p.stem.replace("_", " "))}</figcaption></figure>\n'
        for p in plots
    )
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head>\n<body>\n{render_markdown(markdown)}{figures}</body></html>\n"
    )
