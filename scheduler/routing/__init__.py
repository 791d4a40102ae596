"""Per-request endpoint selection: the filter → score → pick mechanism and profile wiring."""
