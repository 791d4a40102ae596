"""Which model runs on which accelerators: problem building, planning and reconciliation."""
