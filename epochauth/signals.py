"""Signals for things users hook into (auditing, notifications, provisioning)."""

from django.dispatch import Signal

#: A token was minted. kwargs: user, claims (never the token itself), session_id (None outside a session).
token_issued = Signal()

#: A session ended (one signal per session, also for each session a user's epoch bump ends). kwargs:
#: session, reason ("logout", "reuse", "admin", "revoked", "group_removed", "epoch_bumped", "limit",
#: "deleted", "backchannel_logout"), actor (or None).
session_revoked = Signal()

#: A session is ending, inside the transaction that ends it (not for the sessions an epoch bump ends:
#: ``epoch_bumping`` stands for them): what must commit or roll back with it (an outbox row) is written
#: here. kwargs: session, reason, actor.
session_ending = Signal()

#: An epoch grew. kwargs: kind ("user" | "group" | "identity" | "global"), object_id, epoch, actor, reason.
epoch_bumped = Signal()

#: An epoch is growing, inside the transaction of its bump: what must commit or roll back with it (an
#: outbox row) is written here, and a receiver that raises undoes the bump. kwargs: kind, object_id,
#: actor, reason.
epoch_bumping = Signal()

#: A user lost groups: tokens minted before confer only ``groups`` now. kwargs: user_id, groups, reason.
groups_changed = Signal()

#: A new (issuer, sub) was turned into a user. kwargs: identity, user, claims.
identity_provisioned = Signal()

#: A login provider answered a browser login with tokens (the Token Manager keeps its refresh token).
#: kwargs: user, issuer, tokens (the token endpoint's JSON answer: never log it).
upstream_tokens = Signal()

#: Our token endpoint exchanged a token of an external issuer for one of ours (RFC 8693), after saving
#: it (the Token Manager asks that issuer for a grant of its own). kwargs: user, issuer, client_id,
#: subject_token (never log it).
token_exchanged = Signal()

#: A provider's back-channel logout ended browser logins here (the Token Manager ends those users'
#: grants at that provider). kwargs: issuer, user_ids (of the logins ended), sid.
provider_logout = Signal()
