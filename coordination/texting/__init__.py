"""Texting: the outbox, consent, reminder planning, the check before sending, the
dispatcher, the gateways, replies and delivery callbacks."""
