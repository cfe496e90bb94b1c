#!/usr/bin/env sh
# Register a Mindscape HTTP service with Claude Code; the key comes from `mindscape key create`.
claude mcp add --transport http mindscape http://127.0.0.1:8000/mcp --header "Authorization: Bearer ${MINDSCAPE_API_KEY:?set MINDSCAPE_API_KEY}"
