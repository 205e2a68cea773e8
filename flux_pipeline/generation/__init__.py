"""The generation step's engine on plain values: triage against the ledger, admit within the
budget, record each outcome. It imports no Dagster and no resource."""
