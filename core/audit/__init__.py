"""The audit log: append-only, read by admins."""
