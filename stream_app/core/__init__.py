"""The foundation every part builds on: settings, the message codec, log redaction."""
