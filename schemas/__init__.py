"""The JSON Schemas of prodcat's messages (a package only so they install as package data)."""
