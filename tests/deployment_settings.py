"""Settings of one deployment of :mod:`tests.deployments`: the test project's (its database, cache,
issuer, key and Shared Signals side from the environment, as ``testproject/settings.py`` documents),
plus what two deployments of it on one machine need:

``DEPLOYMENT_NAME``          the cache's key prefix: deployments sharing one Redis never share a key
``DEPLOYMENT_RESOURCES``     space-separated ``RESOURCES`` (the other deployments our tokens may be for)
``DEPLOYMENT_SSF_AUDIENCE``  the ``aud`` of the SETs our transmitter sends us: our client id there
"""

import os
from datetime import timedelta

from testproject.settings import *  # noqa: F403
from testproject.settings import CACHES, EPOCHAUTH

CACHES["default"]["KEY_PREFIX"] = os.environ["DEPLOYMENT_NAME"]
# Password hashing is not under test, and the bench logs in on every trial.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if os.environ.get("DEPLOYMENT_RESOURCES"):
    EPOCHAUTH["RESOURCES"] = os.environ["DEPLOYMENT_RESOURCES"].split()
# A receiver that accepts our tokens hears about every user: the admin of a transmitter decides
# that (here for each new stream; the admin may also tick "All subjects" on one). A receiver that
# switches its delivery subscribes again at once, and asks for a verification event each time.
if EPOCHAUTH.get("SSF_TRANSMITTER"):
    EPOCHAUTH["SSF_TRANSMITTER"] = {
        "default_subjects": "ALL",
        "min_verification_interval": timedelta(0),
        # A receiver that was down hears at the next attempt: 1 s later, then 2, 4... (default 30 s).
        "retry_delay": timedelta(seconds=1),
    }
# Our transmitter names us by our client id there (SSF 1.0: the stream's aud), not by our ISSUER.
for _transmitter in EPOCHAUTH.get("SSF_TRANSMITTERS", []):
    _transmitter["audience"] = os.environ["DEPLOYMENT_SSF_AUDIENCE"]
