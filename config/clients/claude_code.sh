#!/usr/bin/env sh
# Register Mindscape with Claude Code (stdio, tenant "demo").
claude mcp add mindscape -- uvx --from mindscape-mcp mindscape serve --tenant demo
