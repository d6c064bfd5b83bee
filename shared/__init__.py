"""SIQ shared package."""
