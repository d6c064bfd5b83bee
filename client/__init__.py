"""SIQ client package."""
