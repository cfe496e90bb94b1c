#!/usr/bin/env sh
# Register Mindscape (from a clone) with Claude Code: stdio, tenant acme, the embedded database in the data dir.
claude mcp add mindscape -e MINDSCAPE_DATA_DIR=/absolute/path/to/mindscape-data -- uv run --directory /absolute/path/to/mindscape-clone mindscape serve --tenant acme
