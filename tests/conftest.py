"""Shared fixtures. The integration broker is started once per session (see integration/)."""
