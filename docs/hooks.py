# Temporary placeholder (to be overwritten): the real hook writes the CLI reference into
# docs/reference/cli.md at the `<!-- finsent:cli-reference -->` marker.


def on_page_markdown(markdown, **kwargs):
    return markdown
