"""MkDocs hook: the CLI reference page is generated from finsent's option dataclasses at build time."""

MARKER = "<!-- finsent:cli-reference -->"


def on_page_markdown(markdown, **kwargs):
    if MARKER not in markdown:
        return markdown
    from finsent.cli.reference import markdown as reference

    return markdown.replace(MARKER, reference())
