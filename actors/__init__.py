"""The runtime: supervised trio actors with mailboxes, the router, sessions and the storage actor."""
