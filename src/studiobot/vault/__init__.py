"""Users' own provider keys: encrypted at rest, added privately, never shown again.

``cipher`` holds the cryptography (MultiFernet under rotating master keys, keyed fingerprints,
hints), ``masterkeys`` finds or makes the master keys, and ``store`` the ``api_keys`` table.
``scheduler.keys`` answers "which key does this job call its provider with". Rules and sources:
reference-platform-rules section 5 (Fernet, MultiFernet rotation, OWASP key storage and logging).
"""
