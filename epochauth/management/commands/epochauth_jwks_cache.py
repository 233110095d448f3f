from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from epochauth import conf, fetching, issuers, jwks, keys, system_jwks
from epochauth.management import base

#: Where the spec's tools put the cache when ``$JWKS_CACHE_DIR`` says nothing else.
DEFAULT_DIRECTORY = "/var/cache/jwks"


class Command(base.EpochauthCommand):
    help = (
        "Write our own and the allowed issuers' keys into a WLCG system JWKS cache, which token "
        "libraries on the machine (scitokens-cpp: HTCondor, XRootD) read when an issuer is down."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "issuers",
            nargs="*",
            metavar="ISSUER",
            help="only these (default: ours and every allowed one)",
        )
        target = parser.add_mutually_exclusive_group()
        target.add_argument(
            "--directory",
            help="a cache directory, one file per issuer "
            f"(default: $JWKS_CACHE_DIR, else {DEFAULT_DIRECTORY})",
        )
        target.add_argument(
            "--file", help="one cache file for every issuer (entries of others in it are kept)"
        )
        parser.add_argument(
            "--lifetime",
            help="how long the entries are good, e.g. 12h, 7d (default: JWKS_MAX_STALENESS)",
        )

    def handle(
        self,
        *args: Any,
        issuers: list[str],
        directory: str | None,
        file: str | None,
        lifetime: str | None,
        **options: Any,
    ) -> None:
        try:
            good_for = (
                base.duration(lifetime) if lifetime else conf.epochauth_settings.JWKS_MAX_STALENESS
            )
        except (ValueError, OverflowError):
            raise CommandError(f"--lifetime is no duration: {lifetime!r}") from None
        if good_for.total_seconds() <= 0:
            raise CommandError("--lifetime must be more than zero")
        expiration = time.time() + good_for.total_seconds()
        entries: dict[str, Any] = {}
        failed = []
        for issuer in self._issuers(issuers):
            try:
                entries[issuer] = system_jwks.entry(self._jwks(issuer), expiration)
            except fetching.FetchError as exc:
                self.stderr.write(
                    f"{issuer}: cannot fetch its keys ({exc}); its entry is left as it was"
                )
                failed.append(issuer)
        try:
            written = self._write(entries, directory, file)
        except system_jwks.Untrusted as exc:
            raise CommandError(
                f"Refusing to write there, other users could change it: {exc}"
            ) from None
        except OSError as exc:
            raise CommandError(f"Cannot write the cache: {exc}") from None
        until = datetime.fromtimestamp(int(expiration), UTC).isoformat()
        for issuer, path in written.items():
            count = len(entries[issuer]["jwks"].get("keys", []))
            self.stdout.write(f"{issuer}: {count} keys in {path}, good until {until}")
        if failed:
            raise CommandError(f"Could not fetch the keys of {len(failed)} issuer(s)")

    def _issuers(self, named: list[str]) -> list[str]:
        """Ours (unless we sign with an HMAC secret, which has nothing public) and the allowed ones."""
        ours = conf.epochauth_settings.ISSUER
        public = not keys.get_keyring().signing.is_symmetric
        for issuer in named:
            if issuer == ours and not public:
                raise CommandError(f"{issuer} signs with an HMAC secret: it has no public keys")
            if issuer != ours and issuers.get_issuer(issuer) is None:
                raise CommandError(f"Neither our issuer nor an allowed one: {issuer}")
        if named:
            return list(dict.fromkeys(named))
        allowed = [config.issuer for config in issuers.all_issuers()]
        return [ours, *allowed] if public else allowed

    @staticmethod
    def _jwks(issuer: str) -> dict[str, Any]:
        if issuer == conf.epochauth_settings.ISSUER:
            return keys.get_keyring().jwks()
        return jwks.download_jwks(issuer, None)[1]

    def _write(
        self, entries: dict[str, Any], directory: str | None, file: str | None
    ) -> dict[str, Path]:
        """Write the entries; returns where each one went."""
        if file is not None:
            path = Path(file)
            system_jwks.write(path, {**self._kept(path), **entries})
            return dict.fromkeys(entries, path)
        folder = Path(directory or os.environ.get("JWKS_CACHE_DIR") or DEFAULT_DIRECTORY)
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        written = {}
        for issuer, entry in entries.items():
            written[issuer] = folder / system_jwks.file_name(issuer)
            system_jwks.write(written[issuer], {issuer: entry})
        return written

    def _kept(self, path: Path) -> dict[str, Any]:
        """The entries already in a cache file, to keep beside ours; none from a file we cannot trust."""
        try:
            return system_jwks.read_file(path)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, system_jwks.Untrusted) as exc:
            self.stderr.write(f"{path}: its entries are not kept ({exc})")
            return {}
