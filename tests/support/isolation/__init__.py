"""Property-based isolation (docs/isolation.md): a state machine drives several tenants through every
tool, resource and prompt, and checks each answer and every tenant's rows against a model.

- `model`: what each tenant wrote, as the machine expects the server to hold it; callers are
  (tenant, principal) pairs.
- `scan`: answers as text, the marker/identifier scanner, and masking for twin comparisons.
- `rows`: each tenant's rows read through the owner connection, digests, and their diff with the model.
- `ops`: one planner per operation: the request, its twin (foreign ids swapped for unknown ones)
  and the check that compares the answer with the model and updates it.
- `sessions`: tenants with marked data, and MCP sessions for their callers (in-memory or HTTP).
- `machine`: the RuleBasedStateMachine and its statistics, parameterised by a `Harness`.
"""
