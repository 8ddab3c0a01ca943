"""Run untrusted agent code in a separate, locked-down process."""
