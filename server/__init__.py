"""SIQ server package."""
