"""Hand-written tool logic for domains whose tools need more than the generated kinds.

One module per domain (``hooks/<domain>.py``), named by the domain file's ``hooks:`` key and
imported when the domain loads; each registers functions with ``registry.register_hook``."""
