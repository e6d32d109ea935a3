"""ecoin-dashboard: a web view of the bank for device owners and operators (docs/DASHBOARD.md)."""
