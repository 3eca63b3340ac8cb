"""Development and test tooling. Production code never imports this package."""
