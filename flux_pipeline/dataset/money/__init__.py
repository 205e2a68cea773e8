"""What has been paid for: the request ledger, its stores, and the leases of the rows a run works on."""
