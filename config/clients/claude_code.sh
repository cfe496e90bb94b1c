#!/usr/bin/env sh
# Register Mindscape (from PyPI) with Claude Code: stdio, tenant acme, the embedded database in the data dir.
claude mcp add mindscape -e MINDSCAPE_DATA_DIR=/absolute/path/to/mindscape-data -- uvx mindscape-mcp serve --tenant acme
