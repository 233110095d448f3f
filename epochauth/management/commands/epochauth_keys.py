from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandParser

from epochauth import keys
from epochauth.management import base


class Command(base.EpochauthCommand):
    help = "Print the JWKS of the configured keys, or generate a new signing key (--generate ALG)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--generate", choices=sorted(keys.SUPPORTED_ALGORITHMS), metavar="ALGORITHM"
        )

    def handle(self, *args: Any, generate: str | None, **options: Any) -> None:
        if generate is None:
            self.stdout.write(json.dumps(keys.get_keyring().jwks(), indent=2))
            return
        material = keys.generate_private_key_pem(generate)
        key = keys.load_key(generate, material)
        self.stdout.write(material.rstrip())
        self.stderr.write(
            f"\nNew {generate} key, kid {key.kid}. Put it in EPOCHAUTH['SIGNING_KEY'] (or a file named by "
            "SIGNING_KEY_FILE) and move the previous key to VERIFICATION_KEYS until its tokens expired."
        )
        if not key.is_symmetric:
            self.stderr.write(json.dumps({"keys": [key.public_jwk()]}, indent=2))
