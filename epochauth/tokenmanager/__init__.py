"""The Token Manager: the users' upstream refresh tokens, kept from browser login (encrypted at rest), for
services that act on a user's behalf later; ended at the provider when the user's access ends."""
