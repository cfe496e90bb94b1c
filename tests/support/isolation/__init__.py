"""Property-based isolation (docs/isolation.md): a state machine drives several tenants through every
tool, resource and prompt, and checks each answer and every tenant's rows against a model.

- `model`: what each tenant wrote, as the machine expects the server to hold it; callers are
  (tenant, principal) pairs.
- `scan`: answers as text, the marker/identifier scanner, and masking for twin comparisons.
- `rows`: each tenant's rows read through the owner connection, digests, and their diff with the model.
- `steps`: what a planned step is (request, check, twin) and the Hypothesis-backed `Picker`.
- `ops`: every operation the machine drives (`OPS`) and the seed steps; one planner per operation
  in `ops_personas`, `ops_memory`, `ops_campaigns`, `ops_tasks`, `ops_pages` (following cursors)
  and `ops_probes` (another tenant's identifiers, each with its twin).
- `sessions`: tenants with marked data, and MCP sessions for their callers (in-memory or HTTP).
- `machine`: the RuleBasedStateMachine and its statistics, parameterised by a `Harness`.
"""
