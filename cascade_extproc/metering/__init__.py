"""What requests cost and what they did: prices, the ledger (one record per request), the
Prometheus collectors, and the log lines (with secrets redacted)."""
